"""Deterministic synthetic data for benchmarks/identity_bench.py: a population, its web traffic, and a CRM export
of it with duplicates that only probabilistic matching can join.

Plain seeded random over small vocabularies with a realistic skew (faker's lists of ~700 first names and the
1,000 most common US last names, Zipf-weighted; 2,000 towns of very unequal size with ~5,000 postcodes between
them; 3,000 street names): 100,000 people take about a second, where faker per record takes minutes. A fifth
of the people live with a relative (same last name and address, another first name and birth date): the
near misses a matcher must not merge.
"""

from __future__ import annotations

import itertools
import json
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from faker.providers.address.en_US import Provider as Address
from faker.providers.person.en_US import Provider as Names

from opencdp.store.journal import accepted_line

TIMES = (None, None, None, "2026-01-01T00:00:00.000Z")
FIRST_NAMES = sorted(set(Names.first_names_male) | set(Names.first_names_female))
LAST_NAMES = list(dict.fromkeys(Names.last_names))  # the most common first
STREET_SUFFIXES = ("Street", "Road", "Lane", "Avenue", "Close", "Drive", "Way", "Court", "Place", "Gardens", "Grove",
                   "Crescent", "Terrace", "Hill", "Row", "Walk")  # fmt: skip
DOMAINS = ("gmail.com", "yahoo.com", "outlook.com", "hotmail.com", "icloud.com", "example.org")
TOWNS, POSTCODES, STREETS = 2_000, 5_000, 3_000
HOUSEHOLDS = 0.05
"""The share of people who live with the previous person: same last name and address."""


@dataclass(frozen=True, slots=True)
class Person:
    first_name: str
    last_name: str
    birth_date: str
    street: str
    city: str
    postal_code: str
    email: str
    phone: str


class Zipf:
    """Values drawn with weight 1 / rank^s: a few common, a long tail of rare ones."""

    def __init__(self, values: Sequence[Any], s: float) -> None:
        self.values = list(values)
        self.weights = [1 / (rank + 1) ** s for rank in range(len(self.values))]
        self.cum = list(itertools.accumulate(self.weights))

    def __call__(self, rng: random.Random) -> Any:
        return rng.choices(self.values, cum_weights=self.cum)[0]


def _postcode(rng: random.Random) -> str:
    letters = "ABCDEFGHJKLMNPRSTUWXYZ"
    return (f"{rng.choice(letters)}{rng.choice(letters)}{rng.randrange(1, 100)} "
            f"{rng.randrange(10)}{rng.choice(letters)}{rng.choice(letters)}")  # fmt: skip


def population(seed: int, n: int, households: float = HOUSEHOLDS) -> list[Person]:
    """``n`` people, a share ``households`` of them living with the previous one; person ``p`` has a unique email
    and phone (E.164)."""
    rng = random.Random(seed)
    first_names = FIRST_NAMES[:]
    rng.shuffle(first_names)  # which names are common is random, their skew is not
    first, last = Zipf(first_names, 0.6), Zipf(LAST_NAMES, 0.6)
    towns = sorted({f"{rng.choice(LAST_NAMES)}{rng.choice(Address.city_suffixes)}" for _ in range(3 * TOWNS)})
    rng.shuffle(towns)
    town = Zipf(towns[:TOWNS], 0.8)
    postcodes = {
        t: [_postcode(rng) for _ in range(max(1, round(POSTCODES * w / town.cum[-1])))]
        for t, w in zip(town.values, town.weights, strict=True)
    }  # a town's postcodes: as many as its people
    street = Zipf(sorted({f"{rng.choice(LAST_NAMES)} {rng.choice(STREET_SUFFIXES)}" for _ in range(STREETS)}), 0.5)
    domain = Zipf(DOMAINS, 1.0)
    born = date(1935, 1, 1).toordinal()
    people: list[Person] = []
    for p in range(n):
        f, birth = first(rng), date.fromordinal(born + rng.randrange(26_000)).isoformat()
        if people and rng.random() < households:
            home = people[-1]
            surname, address = home.last_name, (home.street, home.city, home.postal_code)
        else:
            surname, city = last(rng), town(rng)
            address = (f"{rng.randrange(1, 200)} {street(rng)}", city, rng.choice(postcodes[city]))
        email = f"{f}.{surname}{p}@{domain(rng)}".lower()
        phone = f"+447{(p * 7919 + 12345) % 10**9:09d}"  # 7919 is prime: p -> phone is one to one
        people.append(Person(f, surname, birth, *address, email, phone))
    return people


def traffic(seed: int, people: Sequence[Person], events: int, start: int = 0) -> Iterator[dict[str, Any]]:
    """Web events: each person has a user id, their email and one to three browsers (anonymous ids); half the
    events are anonymous page views, the rest identified; every 50th person uses a family computer shared with
    another. Regenerated identically from ``seed``."""
    rng = random.Random(seed)
    for i in range(start, start + events):
        p = rng.randrange(len(people))
        browser = f"anon-{p}-{rng.randrange(1 + p % 3)}" if p % 50 else f"family-{p // 100}"
        m: dict[str, Any] = {"type": "track", "event": "Page Viewed", "messageId": f"m{i}", "anonymousId": browser}
        if rng.random() < 0.5:
            m = {"type": "identify", "messageId": f"m{i}", "anonymousId": browser, "userId": f"user-{p}",
                 "traits": {"email": people[p].email}}  # fmt: skip
        yield m


def typo(rng: random.Random, text: str) -> str:
    """One realistic typing error: two neighbouring letters swapped, a letter dropped, or a letter doubled."""
    places = [i for i in range(1, len(text) - 1) if text[i] != text[i + 1]]
    kind = rng.randrange(3)
    if kind == 0 and places:
        i = rng.choice(places)
        return text[:i] + text[i + 1] + text[i] + text[i + 2 :]
    i = rng.randrange(1, len(text))
    if kind == 1 and len(text) > 4:
        return text[:i] + text[i + 1 :]
    return text[:i] + text[i] + text[i:]


def crm_fields(person: Person, key: str) -> dict[str, Any]:
    return {"customer_id": key, "first_name": person.first_name, "last_name": person.last_name,
            "birth_date": person.birth_date, "street": person.street, "city": person.city,
            "postal_code": person.postal_code, "email": person.email, "phone": person.phone}  # fmt: skip


def duplicate(rng: random.Random, person: Person, key: str) -> dict[str, Any]:
    """A second CRM row for ``person``: a typo in the email, no phone (so no identifier is shared: only matching
    can join it), and now and then a typo in the first (30%) or last name (20%)."""
    fields = crm_fields(person, key)
    del fields["phone"]
    user, host = person.email.split("@")
    fields["email"] = f"{typo(rng, user)}@{host}"
    if rng.random() < 0.3:
        fields["first_name"] = typo(rng, person.first_name)
    if rng.random() < 0.2:
        fields["last_name"] = typo(rng, person.last_name)
    return fields


@dataclass
class Crm:
    rows: list[dict[str, Any]]
    """The ``fields`` of each customer record, in export order."""
    keys: dict[int, list[str]]
    """Each person's customer ids (one, or two for a duplicate)."""

    @property
    def truth(self) -> set[tuple[str, str]]:
        """The pairs of customer ids that are one person."""
        return {(min(k), max(k)) for k in self.keys.values() if len(k) == 2}


def crm_export(seed: int, people: Sequence[Person], rows: int, duplicates: float = 0.1) -> Crm:
    """``rows`` customer records: distinct people once each, and ``duplicates`` of them a second time."""
    rng = random.Random(seed)
    once = min(len(people), round(rows / (1 + duplicates)))
    chosen = rng.sample(range(len(people)), once)
    twice = chosen[: rows - once]
    order = [(p, False) for p in chosen] + [(p, True) for p in twice]
    rng.shuffle(order)
    crm = Crm([], {})
    for n, (p, again) in enumerate(order):
        key = f"C{100_000 + n}"
        crm.rows.append(duplicate(rng, people[p], key) if again else crm_fields(people[p], key))
        crm.keys.setdefault(p, []).append(key)
    return crm


def record(fields: dict[str, Any]) -> dict[str, Any]:
    key = fields["customer_id"]
    return {"type": "record", "messageId": f"crm-{key}", "event": "customers", "key": key, "fields": fields}


def journal_lines(source_id: str, messages: Iterator[dict[str, Any]] | Sequence[dict[str, Any]]) -> bytes:
    return b"".join(
        accepted_line(
            source_id,
            (m["messageId"], m["type"], m.get("event"), m.get("userId"), m.get("anonymousId")),
            TIMES,
            json.dumps(m).encode(),
        )
        for m in messages
    )


def identifiers(m: dict[str, Any]) -> list[str]:
    """What a message carries that identifies somebody, anchor first (for the networkx baseline)."""
    if m["type"] == "record":
        f = m["fields"]
        return [f"c:{f['customer_id']}", f"e:{f['email']}"] + ([f"p:{f['phone']}"] if "phone" in f else [])
    ids = [f"a:{m['anonymousId']}"]
    return [f"u:{m['userId']}", f"e:{m['traits']['email']}", *ids] if "userId" in m else ids
