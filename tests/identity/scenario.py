"""A generated multi-source identity scenario with its ground truth (seeded, deterministic).

About 300 people, each seen through some of five sources:

- ``web``: an anonymous browser (a few page views) that logs in (identify with userId, email, names and now
  and then a phone in one of several formats, a birthday, an address), then tracks as the user;
- ``app``: for some, a phone app (``context.device.id``) that logs in as the same user;
- ``crm``: a CRM row (``customers``) for most, with typos in names or emails for some, nicknames (Bill for
  William) for others, the phone in E.164, the address and birth date, sometimes the web user id;
- ``pos``: point-of-sale orders (``orders``) carrying only an email or only a phone;
- ``support``: tickets (``tickets``) sent from a personal address seen nowhere else, signed with the full name.

And the adversarial cases (:data:`CASES`), whose people are listed in :attr:`Scenario.cases`:

- ``family_computer``: a family's browser and tablet, each member logging in as themselves, one after the
  other (the anonymous page views and app events before the first login are the first member's: nobody else
  had used them yet), the CRM holding the user ids of the other members since before;
- ``shared_mailbox``: a couple who both log in with the same email (and share it in CRM);
- ``recycled_phone``: a phone number given up by one customer in 2019 and later given to another;
- ``namesakes``: two people of the same first and last name in one city (other birth dates, emails, streets);
- ``placeholders``: people who type test@test.com, 0000000000 or N/A as their email or phone;
- ``two_emails``: one person who logs in with a private and later a work email.

Messages whose person nobody could tell (an order carrying only a shared mailbox or a recycled number) are not
generated: they would measure luck, not identity resolution.

:attr:`Scenario.truth` maps every key :func:`key_of` gives (a messageId for events, the natural key for
records, as the ``record_profiles`` view names them) to the person it belongs to.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from faker import Faker

CASES = ("family_computer", "shared_mailbox", "recycled_phone", "namesakes", "placeholders", "two_emails")

NICKNAMES = {
    "William": "Bill", "Robert": "Bob", "Elizabeth": "Liz", "Margaret": "Maggie", "James": "Jim",
    "Thomas": "Tom", "Katherine": "Kate", "Michael": "Mike", "Richard": "Dick", "Joseph": "Joe",
    "Daniel": "Dan", "Samuel": "Sam", "Rebecca": "Becky", "Alexander": "Alex", "Christopher": "Chris",
    "Matthew": "Matt", "Anthony": "Tony", "Edward": "Ted", "Susan": "Sue", "Victoria": "Vicky",
}  # fmt: skip

DOMAINS = ("example.com", "example.org", "example.net", "mail.example", "post.example")
PERSONAL_DOMAINS = ("inbox.example", "home.example", "private.example")
CITIES = ("London", "London", "London", "Birmingham", "Manchester", "Leeds", "Glasgow", "Liverpool", "Bristol",
          "Sheffield", "Edinburgh", "Cardiff", "Leicester", "Nottingham", "Belfast", "York")  # fmt: skip


@dataclass
class Person:
    pid: str
    first: str
    last: str
    birth_date: str
    email: str
    phone: str
    """E.164, as a CRM export normalised by the importer holds it."""
    house_number: str
    street: str
    city: str
    postal_code: str
    user_id: str


@dataclass
class Scenario:
    people: dict[str, Person]
    messages: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    """(source name, message), in arrival order."""
    truth: dict[str, str] = field(default_factory=dict)
    """Key (:func:`key_of`) -> the person (pid) it belongs to."""
    origin: dict[str, str] = field(default_factory=dict)
    """Key -> what it is: ``web``, ``app``, ``crm``, ``pos`` or ``support``."""
    cases: dict[str, set[str]] = field(default_factory=lambda: {c: set() for c in CASES})
    """Adversarial case -> the people in it."""
    two_emails: str = ""
    """The person who logs in with two emails."""


def key_of(m: dict[str, Any]) -> str:
    return str(m["key"]) if m["type"] == "record" else str(m["messageId"])


def typo(rng: random.Random, text: str) -> str:
    """Two neighbouring letters swapped (never a no-op), or the last letter doubled when all are alike."""
    places = [i for i in range(1, len(text) - 1) if text[i] != text[i + 1]]
    if not places:
        return text + text[-1]
    i = rng.choice(places)
    return text[:i] + text[i + 1] + text[i] + text[i + 2 :]


def phone_format(rng: random.Random, e164: str) -> str:
    """The phone as a person types it: +44 7700 900123, +447700900123, +44-7700-900-123 (the same number once
    reduced to + and digits), or 07700 900123, +44 (0)7700 900123, 0044 7700 900123 (not: national formats)."""
    national = "0" + e164[3:]
    return rng.choice(
        [
            f"+44 {e164[3:7]} {e164[7:]}",
            e164,
            f"+44-{e164[3:7]}-{e164[7:10]}-{e164[10:]}",
            f"{national[:5]} {national[5:]}",
            f"+44 (0){e164[3:7]} {e164[7:]}",
            f"0044 {e164[3:7]} {e164[7:]}",
        ]
    )


class _Builder:
    def __init__(self, seed: int, n: int) -> None:
        self.rng = random.Random(seed)
        self.fake = Faker("en_GB")
        self.fake.seed_instance(seed)
        self.s = Scenario(people={})
        self.n = n
        self.counter = 0
        self.phones: set[str] = set()
        self.emails: set[str] = set()
        self.devices: dict[str, str] = {}
        self.out: list[tuple[datetime, int, str, dict[str, Any]]] = []

    # people

    def person(self, **over: Any) -> Person:
        i = len(self.s.people)
        fake, rng = self.fake, self.rng
        first = rng.choice(list(NICKNAMES)) if rng.random() < 0.1 else fake.first_name()
        last = fake.last_name()
        values: dict[str, Any] = {
            "pid": f"P{i:04d}", "first": first, "last": last,
            "birth_date": fake.date_of_birth(minimum_age=18, maximum_age=85).isoformat(),
            "house_number": fake.building_number(), "street": fake.street_name(), "city": rng.choice(CITIES),
            "postal_code": fake.postcode(), "user_id": f"u{rng.getrandbits(40):010x}",
        }  # fmt: skip
        values.update(over)
        values.setdefault("email", self.email(values["first"], values["last"]))
        if "phone" not in values:
            while (phone := f"+447{rng.randrange(10**9):09d}") in self.phones:
                pass
            self.phones.add(phone)
            values["phone"] = phone
        p = Person(**values)
        self.s.people[p.pid] = p
        return p

    def email(self, first: str, last: str, domains: tuple[str, ...] = DOMAINS) -> str:
        """A fresh address, as people pick them: ada.lovelace, alovelace, ada_lovelace85, lovelace.ada@..."""
        rng = self.rng
        f, la = (re.sub(r"[^a-z]", "", x.lower()) for x in (first, last))
        while True:
            local = rng.choice([f"{f}.{la}", f"{f[0]}{la}", f"{f}_{la}", f"{la}.{f}", f"{f}{la}", f"{f}.{la[0]}"])
            if rng.random() < 0.5:
                local += str(rng.randint(1, 99) if rng.random() < 0.7 else rng.randint(1950, 2005))
            address = f"{local}@{rng.choice(domains)}"
            if address not in self.emails:
                self.emails.add(address)
                return address

    # messages

    def emit(self, when: datetime, source: str, pid: str, m: dict[str, Any]) -> None:
        self.counter += 1
        m["timestamp"] = when.isoformat().replace("+00:00", "Z")
        self.out.append((when, self.counter, source, m))
        key = key_of(m)
        assert key not in self.s.truth, key
        self.s.truth[key] = pid
        self.s.origin[key] = source

    def event(self, when: datetime, source: str, p: Person, kind: str, **parts: Any) -> dict[str, Any]:
        m: dict[str, Any] = {"type": kind, "messageId": f"{source}-{p.pid}-{self.counter:06d}"}
        if kind == "track":
            m["event"] = self.rng.choice(["Product Viewed", "Added to Cart", "Searched"])
        if kind == "page":
            m["name"] = self.rng.choice(["Home", "Shoes", "Sale", "Checkout"])
        m.update({k: v for k, v in parts.items() if v is not None})
        self.emit(when, source, p.pid, m)
        return m

    def record(self, when: datetime, source: str, pid: str, kind: str, key: str, fields: dict[str, Any]) -> None:
        m = {"type": "record", "messageId": f"m-{key}", "event": kind, "key": key,
             "fields": {k: v for k, v in fields.items() if v is not None}}  # fmt: skip
        self.emit(when, source, pid, m)

    def traits(self, p: Person, *, email: str | None = None, phone: str | None = None) -> dict[str, Any]:
        rng = self.rng
        t: dict[str, Any] = {"email": email or p.email, "firstName": p.first, "lastName": p.last}
        if phone is not None:
            t["phone"] = phone
        elif rng.random() < 0.6:
            t["phone"] = phone_format(rng, p.phone)
        if rng.random() < 0.3:
            t["birthday"] = p.birth_date
        if rng.random() < 0.2:
            t["address"] = {"street": p.street, "city": p.city, "postalCode": p.postal_code}
        return t

    def web(
        self,
        p: Person,
        when: datetime,
        *,
        anon: str | None = None,
        pages: int | None = None,
        traits: dict[str, Any] | None = None,
    ) -> datetime:
        """Anonymous page views, a login (identify), then tracks as the user; returns when it ended."""
        rng = self.rng
        anon = anon or f"a-{rng.getrandbits(64):016x}"
        for _ in range(rng.randint(1, 4) if pages is None else pages):
            when += timedelta(minutes=rng.randint(1, 30))
            self.event(when, "web", p, "page", anonymousId=anon)
        when += timedelta(minutes=rng.randint(1, 30))
        self.event(when, "web", p, "identify", userId=p.user_id, anonymousId=anon, traits=traits or self.traits(p))
        for _ in range(rng.randint(0, 3)):
            when += timedelta(minutes=rng.randint(1, 30))
            self.event(when, "web", p, "track", userId=p.user_id, anonymousId=anon)
        return when

    def app(
        self, p: Person, when: datetime, *, device: str | None = None, anon: str | None = None, anonymous: bool = True
    ) -> datetime:
        """Anonymous app events (unless not ``anonymous``), a login, then tracks as the user; returns when it
        ended."""
        rng = self.rng
        device = device or f"dev-{rng.getrandbits(48):012x}"
        anon = anon or f"app-{rng.getrandbits(64):016x}"
        context = {"device": {"id": device, "type": self.devices.setdefault(device, rng.choice(["ios", "android"]))}}
        if anonymous:
            for _ in range(rng.randint(1, 2)):
                when += timedelta(minutes=rng.randint(1, 30))
                self.event(when, "app", p, "track", anonymousId=anon, context=context)
        when += timedelta(minutes=rng.randint(1, 30))
        self.event(when, "app", p, "identify", userId=p.user_id, anonymousId=anon, context=context,
                   traits={"email": p.email})  # fmt: skip
        for _ in range(rng.randint(1, 3)):
            when += timedelta(minutes=rng.randint(1, 30))
            self.event(when, "app", p, "track", userId=p.user_id, anonymousId=anon, context=context)
        return when

    def crm(
        self,
        p: Person,
        when: datetime,
        *,
        email: str | None = None,
        phone: str | None = None,
        messy: bool = True,
        user_id: bool | None = None,
    ) -> None:
        rng = self.rng
        first, last, mail = p.first, p.last, email or p.email
        if messy:
            if first in NICKNAMES and rng.random() < 0.6:
                first = NICKNAMES[first]
            elif rng.random() < 0.08:
                first = typo(rng, first)
            if rng.random() < 0.05:
                last = typo(rng, last)
            if rng.random() < 0.15:
                local, domain = mail.split("@")
                mail = typo(rng, local) + "@" + domain
        linked = rng.random() < 0.25 if user_id is None else user_id
        key = f"C{self.counter:06d}"
        self.record(when, "crm", p.pid, "customers", key, {
            "customer_id": key, "user_id": p.user_id if linked else None, "email": mail,
            "phone": phone or p.phone, "first_name": first, "last_name": last, "house_number": p.house_number,
            "street": p.street, "city": p.city, "postal_code": p.postal_code, "country": "GB",
            "birth_date": p.birth_date,
        })  # fmt: skip

    def pos(self, p: Person, when: datetime, *, by: str | None = None) -> None:
        rng = self.rng
        for _ in range(rng.randint(1, 3)):
            when += timedelta(days=rng.randint(1, 60))
            key = f"O{self.counter:06d}"
            contact = by or ("email" if rng.random() < 0.6 else "phone")
            self.record(when, "pos", p.pid, "orders", key, {
                "order_id": key, contact: p.email if contact == "email" else p.phone,
                "amount": f"{rng.randint(500, 20000) / 100:.2f}", "currency": "GBP", "store": rng.choice("ABCD"),
            })  # fmt: skip

    def ticket(self, p: Person, when: datetime) -> None:
        rng = self.rng
        key = f"T{self.counter:06d}"
        personal = self.email(p.first, p.last, PERSONAL_DOMAINS)
        self.record(when, "support", p.pid, "tickets", key, {
            "ticket_id": key, "email": personal, "name": f"{p.first} {p.last}",
            "subject": rng.choice(["Where is my order?", "Refund", "Change of address"]), "text": "Hello, ...",
        })  # fmt: skip

    # the population

    def when(self, year: int = 2025) -> datetime:
        start = datetime(year, 1, 1, tzinfo=UTC)
        return start + timedelta(minutes=self.rng.randint(0, 364 * 24 * 60))

    def ordinary(self) -> None:
        rng = self.rng
        for _ in range(self.n):
            p = self.person()
            online = rng.random() < 0.9
            if rng.random() < 0.85 or not online:
                self.crm(p, self.when(2024))
            if online:
                t = self.web(p, self.when())
                if rng.random() < 0.35:
                    self.app(p, t + timedelta(days=rng.randint(1, 30)))
            if rng.random() < 0.55:
                self.pos(p, self.when())
            if rng.random() < 0.25:
                self.ticket(p, self.when())

    def adversarial(self) -> None:
        rng, cases = self.rng, self.s.cases
        for size in (2, 2, 3):  # family computers: one browser and one tablet, each member logs in as themselves
            head = self.person()
            home = {k: getattr(head, k) for k in ("last", "house_number", "street", "city", "postal_code")}
            family = [head] + [self.person(**home) for _ in range(size - 1)]
            browser, tablet = f"a-family-{head.pid}", f"dev-family-{head.pid}"
            t = self.when()
            for i, p in enumerate(family):
                cases["family_computer"].add(p.pid)
                t = self.web(p, t + timedelta(hours=rng.randint(1, 48)), anon=browser, pages=3 if i == 0 else 0)
                t = self.app(p, t + timedelta(hours=1), device=tablet, anon=f"app-{tablet}", anonymous=i == 0)
                self.crm(p, self.when(2024), messy=False, user_id=i > 0)  # CRM knew the others' user ids
                self.pos(p, self.when())
        for _ in range(2):  # shared mailbox: a couple logging in with one address, which CRM holds for both
            a = self.person()
            b = self.person(last=a.last, house_number=a.house_number, street=a.street, city=a.city,
                            postal_code=a.postal_code)  # fmt: skip
            shared = self.email("the", a.last + "s")
            for p in (a, b):
                cases["shared_mailbox"].add(p.pid)
                t = self.web(p, self.when(), traits=self.traits(p, email=shared))
                self.crm(p, self.when(2024), email=shared, messy=False)
                self.pos(p, t, by="phone")
        for _ in range(2):  # a recycled phone: one number, two customers years apart
            old, new = self.person(), self.person()
            new.phone = old.phone
            for p, year in ((old, 2019), (new, 2025)):
                cases["recycled_phone"].add(p.pid)
                t = self.web(p, self.when(year), traits=self.traits(p, phone=phone_format(rng, p.phone)))
                self.crm(p, self.when(year), messy=False)
                self.pos(p, t, by="email")
        for _ in range(2):  # namesakes: same first and last name, same city; other birth dates, emails, streets
            a = self.person()
            b = self.person(first=a.first, last=a.last, city=a.city)
            for p in (a, b):
                cases["namesakes"].add(p.pid)
                self.web(p, self.when())
                self.crm(p, self.when(2024), messy=False, user_id=False)
        for value in ("test@test.com", "0000000000", "N/A", "test@test.com", "N/A", "0000000000"):
            p = self.person()  # placeholders, typed in a form, in CRM and at the till
            cases["placeholders"].add(p.pid)
            email = value if "@" in value or value == "N/A" else p.email
            phone = value if "@" not in value else phone_format(rng, p.phone)
            t = self.web(p, self.when(), traits=self.traits(p, email=email, phone=phone))
            anon = f"a-{rng.getrandbits(64):016x}"  # and once more, anonymous, with only the placeholder
            self.event(t, "web", p, "identify", anonymousId=anon, traits={"email": "test@test.com", "phone": "N/A"})
            crm_email = "test@test.com" if "@" in value else "n/a"
            self.crm(p, self.when(2024), email=crm_email, phone="0000000000", messy=False, user_id=False)
        p = self.person()  # one person, two emails: private first, work later
        cases["two_emails"].add(p.pid)
        self.s.two_emails = p.pid
        work = self.email(p.first, p.last, ("work.example",))
        t = self.web(p, self.when(), traits=self.traits(p))
        t = self.web(p, t + timedelta(days=30), traits=self.traits(p, email=work))
        self.crm(p, self.when(2024), email=work, messy=False, user_id=False)
        self.pos(p, t, by="email")

    def build(self) -> Scenario:
        self.ordinary()
        self.adversarial()
        self.out.sort(key=lambda x: (x[0], x[1]))
        self.s.messages = [(source, m) for _, _, source, m in self.out]
        return self.s


def generate(seed: int = 2026, people: int = 300) -> Scenario:
    """The scenario: ``people`` ordinary people plus those of the adversarial cases, messages in time order."""
    return _Builder(seed, people).build()
