"""The demo's story around the live traffic: exports imported, a tracking plan, a blocked event and its fix,
and a profile 360.

Runs beside the simulated traffic, through the admin API of the demo's own server, and says on the console
what it does, so a newcomer sees every part: records and rejects from a CRM export, orders and returns, support
tickets; a PII policy (card numbers dropped before the raw log, IP addresses masked downstream); a plan that
blocks the events nobody planned (``Coupon Applied``, and ``Product Add``, an old app's misnamed event); the
quarantine holding them; the plan fixed for one and a transformation renaming the other; the held events
released once; then the 360 view of a customer who returned most of what they bought (golden traits with their
sources, LTV net of returns, ticket sentiment), ranked against a loyal one; last, an audience synced to a webhook
and to files, and an abandoned-cart journey (:mod:`opencdp.cli.demo_activation`).
"""

from __future__ import annotations

import csv
import json
import random
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from opencdp.cli import output
from opencdp.cli.demo_activation import activation_story
from opencdp.cli.demo_traffic import FIRST, LAST, PRODUCTS

CRM_SOURCE = "demo-crm"
CURRENCY = "EUR"
"""The workspace currency the story sets: every export's amounts are in it, so revenue and refunds add up."""
PII_POLICY = {"default": {"ip_address": "mask"}, "sources": {CRM_SOURCE: {"payment_card": "drop"}}}
CARDS = ("4111 1111 1111 1111", "5555 5555 5555 4444", "")
"""Card numbers an export should never have carried (public test numbers); the PII policy drops them."""
PLAN: dict[str, Any] = {
    "events": {
        "Product Viewed": {
            "type": "object",
            "required": ["product_id"],
            "properties": {"product_id": {"type": "string"}, "price": {"type": "number", "minimum": 0}},
        },
        "Product Added": {
            "type": "object",
            "required": ["product_id", "quantity"],
            "properties": {"product_id": {"type": "string"}, "quantity": {"type": "integer", "minimum": 1}},
        },
        "Order Completed": {
            "type": "object",
            "required": ["order_id", "total"],
            "properties": {"order_id": {"type": "string"}, "total": {"type": "number"}, "currency": {"enum": ["EUR"]}},
        },
    },
    "identify": {"type": "object", "properties": {"email": {"type": "string"}}},
    "unplanned": "block",
    "violations": "flag",
}


MORE_FIRST = ["Anna", "Ben", "Clara", "David", "Emma", "Felix", "Greta", "Hans", "Ida", "Jonas", "Karla", "Lukas",
              "Mia", "Noah", "Olga", "Paul", "Rosa", "Sven", "Tina", "Uwe"]  # fmt: skip
MORE_LAST = ["Becker", "Fischer", "Hoffmann", "Koch", "Richter", "Schulz", "Wagner", "Weber", "Meyer", "Wolf",
             "Schröder", "Neumann", "Schwarz", "Zimmermann", "Braun", "Krüger", "Hartmann", "Lange", "Werner",
             "Krause"]  # fmt: skip
CITIES = [("Berlin", "10115"), ("Hamburg", "20095"), ("München", "80331"), ("Köln", "50667"), ("Leipzig", "04109"),
          ("Dresden", "01067"), ("Bremen", "28195"), ("Hannover", "30159")]  # fmt: skip
SHOP_TWIN = 1
"""The CRM customer (Grace Hopper) whose web-shop account is a typo'd copy: matching joins them."""
RETURNER = 9
"""The CRM customer whose 360 view the story shows: bought four times at the point of sale, returned three, and
complained. Past the eight people the live traffic uses, so only the exports make up their figures."""
LOYAL = 10
"""The CRM customer who spent less than :data:`RETURNER` and kept everything: more value net of returns."""
RANDOM_ORDERS = 40
"""Point-of-sale orders drawn at random for the eight people (a quarter of them returned)."""
STORY_ORDERS = (
    (RETURNER, "p-drill", True), (RETURNER, "p-saw", True), (RETURNER, "p-ladder", True),
    (RETURNER, "p-gloves", False), (LOYAL, "p-saw", False), (LOYAL, "p-ladder", False),
)  # fmt: skip
"""The profile story's point-of-sale orders after the random ones: (customer, product, returned)."""


def _customers(rng: random.Random) -> list[dict[str, str]]:
    """The demo's eight people, then more customers, each with a birth date and a city."""
    names = list(zip(FIRST, LAST, strict=True)) + [(rng.choice(MORE_FIRST), rng.choice(MORE_LAST)) for _ in range(112)]
    rows = []
    for i, (first, last) in enumerate(names):
        city, postcode = rng.choice(CITIES)
        rows.append({
            "id": f"C{i:04d}", "first": first, "last": last, "email": f"{first}.{last}{'' if i < 8 else i}@Example.com",
            "phone": f"030 {rng.randrange(1_000_000, 9_999_999)}", "city": city, "postcode": postcode,
            "born": f"19{rng.randrange(50, 99)}-0{rng.randrange(1, 9)}-1{rng.randrange(0, 9)}",
        })  # fmt: skip
    return rows


def _misspelt(word: str) -> str:
    return word[:2] + word[3:] if len(word) > 4 else word + word[-1]


def write_exports(directory: Path, rng: random.Random) -> dict[str, Path]:
    """A CRM export (two rows broken on purpose), the web shop's accounts (copies of some CRM customers, with
    typos), point-of-sale orders, returns and support tickets."""
    directory.mkdir(parents=True, exist_ok=True)
    customers = directory / "crm-customers.csv"
    people = _customers(rng)
    header = ["Customer ID", "First Name", "Last Name", "E-Mail", "Phone", "Country", "City", "Zip", "Birth Date"]
    with customers.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow([*header, "Loyalty", "Card Number"])
        for i, p in enumerate(people):
            tier, card = rng.choice(["gold", "silver"]), CARDS[i % len(CARDS)]
            first = p["first"].upper() if i < 8 else p["first"]
            w.writerow([p["id"], first, p["last"], p["email"], p["phone"], "DE", p["city"], p["postcode"], p["born"],
                        tier, card])  # fmt: skip
        w.writerow(["", "No", "Key", "nokey@example.com", "", "DE", "", "", "", "", ""])  # no customer id: rejected
        w.writerow(["C9999", "Bad", "Email", "not-an-email", "12", "DE", "", "", "31.02.1990", "", ""])  # flagged
    shop = directory / "shop-accounts.csv"
    with shop.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for n, i in enumerate([SHOP_TWIN, *range(8, len(people), 6)]):  # no phone, another email, name typos
            p = people[i]
            email = _misspelt(p["email"].split("@")[0]) + "@example.com"
            first = _misspelt(p["first"]) if n % 2 else p["first"]
            w.writerow([f"W{i:04d}", first, p["last"], email, "", "DE", p["city"], p["postcode"], p["born"]])
    orders = directory / "pos-orders.csv"
    returns = directory / "finance-returns.csv"
    with orders.open("w", newline="") as fo, returns.open("w", newline="") as fr:
        wo, wr = csv.writer(fo), csv.writer(fr)
        wo.writerow(["Order Number", "Customer ID", "Total", "Currency", "Order Date", "Store"])
        wr.writerow(["Return ID", "Order Number", "Amount", "Currency", "Return Date", "Reason"])
        for n in range(RANDOM_ORDERS):
            price, order = rng.choice(PRODUCTS)["price"], f"POS-{n:05d}"
            customer = f"C{rng.randrange(len(FIRST)):04d}"
            wo.writerow([order, customer, price, CURRENCY, f"2026-10-{n % 28 + 1:02d}", "Berlin"])
            if n % 4 == 0:  # a quarter of the orders come back
                wr.writerow([f"R-{n:05d}", order, price, CURRENCY, f"2026-11-{n % 28 + 1:02d}", "damaged"])
        prices = {p["product_id"]: p["price"] for p in PRODUCTS}
        for n, (who, product, returned) in enumerate(STORY_ORDERS, start=RANDOM_ORDERS):
            order, day = f"POS-{n:05d}", n - RANDOM_ORDERS + 1
            wo.writerow([order, f"C{who:04d}", prices[product], CURRENCY, f"2026-09-{day:02d}", "Hamburg"])
            if returned:
                wr.writerow([f"R-{n:05d}", order, prices[product], CURRENCY, f"2026-09-{day + 10:02d}", "faulty"])
    messages = [
        (f"{FIRST[0]}.{LAST[0]}@example.com", "Drill broke",
         "The drill stopped working after a week. Very disappointed."),
        (f"{FIRST[1]}.{LAST[1]}@example.com", "Thanks!", "Great service, the ladder arrived quickly."),
        (f"{FIRST[2]}.{LAST[2]}@example.com", "Where is my order?", "My order has not arrived yet."),
        (people[RETURNER]["email"], "Returning again", "The saw arrived broken, and the drill and the ladder were "
         "faulty too. Terrible quality; I am angry and very disappointed."),
        (people[LOYAL]["email"], "Thank you!", "The ladder and the saw are excellent, and the staff were wonderful. "
         "Great shop, I love it."),
    ]  # fmt: skip
    tickets = directory / "support-tickets.jsonl"
    lines = [
        json.dumps(
            {
                "ticket_id": f"T{i}",
                "email": email,
                "subject": subject,
                "body": body,
                "created_at": f"2026-11-{i + 10}T09:00:00Z",
            }
        )
        for i, (email, subject, body) in enumerate(messages)
    ]
    tickets.write_text("\n".join(lines) + "\n")
    return {"customers": customers, "shop": shop, "orders": orders, "returns": returns, "tickets": tickets}


def run_story(base_url: str, admin_token: str, data_dir: Path, console: Console, stop: threading.Event) -> None:
    """Import the exports, set the plan, wait for a blocked event, fix the plan and release, show a profile 360
    (best effort)."""
    try:
        _story(base_url, admin_token, data_dir, console, stop)
    except (httpx.HTTPError, KeyError, ValueError) as exc:  # the demo goes on without its story
        console.print(f"[yellow]demo story stopped: {exc}[/yellow]")


def _story(base_url: str, admin_token: str, data_dir: Path, console: Console, stop: threading.Event) -> None:
    with httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {admin_token}"}, timeout=120) as admin:
        for _ in range(200):
            if stop.is_set():
                return
            try:
                if admin.get("/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        admin.put("/admin/v1/pii/policy", json=PII_POLICY).raise_for_status()
        console.print(
            f"[green]PII policy[/green]: card numbers from {CRM_SOURCE} dropped before the raw log, IP addresses "
            "masked downstream (opencdp pii fields)"
        )
        admin.put("/admin/v1/profiles-settings", json={"currency": CURRENCY}).raise_for_status()
        console.print(
            f"[green]profiles[/green]: workspace currency {CURRENCY}, so revenue and refunds add up "
            "(opencdp profiles settings)"
        )
        exports = write_exports(data_dir / "demo-exports", random.Random(11))  # noqa: S311 - simulated data
        for export, path in exports.items():
            kind = "customers" if export == "shop" else export
            with path.open("rb") as f:
                r = admin.post(
                    "/admin/v1/imports", params={"source": CRM_SOURCE, "kind": kind}, files={"files": (path.name, f)}
                )
            r.raise_for_status()
            s = r.json()
            flagged = ", ".join(f"{k}: {v}" for k, v in s["flagged"].items()) or "none"
            dropped = f"; PII dropped: {', '.join(s['pii_dropped'])}" if s["pii_dropped"] else ""
            console.print(
                f"[green]imported[/green] {path.name} as {kind}: {s['accepted']} accepted, {s['rejected']} rejected, "
                f"{s['duplicates']} already there; flagged values: {flagged}{dropped}"
            )
        _identity_story(admin, base_url, console, stop)
        _matching_story(admin, console)
        _plan_story(admin, console, stop)
        _profile_story(admin, console, stop)
        activation_story(admin, base_url, data_dir, console, stop)


def _plan_story(admin: httpx.Client, console: Console, stop: threading.Event) -> None:
    """Block unplanned events on the web source, wait for some to be held, fix the plan and release them."""
    admin.put("/admin/v1/sources/demo-web/plan", json=PLAN).raise_for_status()
    console.print("[green]tracking plan[/green] set on demo-web: unplanned events are [bold]blocked[/bold]")
    held: list[dict[str, Any]] = []
    deadline = time.monotonic() + 60
    while not held and time.monotonic() < deadline and not stop.wait(0.5):
        held = admin.get("/admin/v1/quarantine", params={"source": "demo-web"}).json()
    if not held:
        return
    events = sorted({h["event"] for h in held})
    console.print(f"[yellow]quarantine[/yellow]: {len(held)} event(s) held ({', '.join(events)}): unplanned_event")
    if stop.wait(2):
        return
    fixed = {**PLAN, "events": {**PLAN["events"], "Coupon Applied": {"type": "object"}}}
    admin.put("/admin/v1/sources/demo-web/plan", json=fixed).raise_for_status()
    rename = {"rules": [{"op": "rename_event", "from": "Product Add", "to": "Product Added"}]}
    admin.put("/admin/v1/transformations", json=rename).raise_for_status()
    released = admin.post("/admin/v1/quarantine/release", params={"source": "demo-web"}).json()
    console.print(
        f"[green]fixed[/green]: 'Coupon Applied' added to the plan, 'Product Add' renamed to 'Product Added' by "
        f"a transformation; released {released['released']} held event(s), each once "
        "(opencdp quarantine list, opencdp violations)"
    )


FAMILY_PC = [
    {"type": "page", "anonymousId": "family-pc", "name": "Home"},
    {"type": "identify", "anonymousId": "family-pc", "userId": "demo-mum", "traits": {"email": "mum@example.org"}},
    {"type": "identify", "anonymousId": "family-pc", "userId": "demo-dad", "traits": {"email": "dad@example.org"}},
]
"""One browser, a visitor who becomes known, then a second person logging in on it: a merge identity refuses."""


def _identity_story(admin: httpx.Client, base_url: str, console: Console, stop: threading.Event) -> None:
    key = admin.get("/admin/v1/sources/demo-web").json()["write_key"]
    httpx.post(f"{base_url}/v1/batch", json={"batch": FAMILY_PC}, auth=(key, ""), timeout=30).raise_for_status()
    doc: dict[str, Any] = {}
    deadline = time.monotonic() + 30
    while not doc.get("refused") and time.monotonic() < deadline and not stop.wait(0.5):
        r = admin.get("/admin/v1/identity/profiles/user_id:demo-mum/explain")
        doc = r.json() if r.status_code == 200 else {}
    if not doc.get("refused"):
        return
    ids = ", ".join(f"{i['type']}:{i['value']}" for i in doc["identifiers"])
    refused = doc["refused"][0]
    console.print(
        f"[green]identity[/green]: the family computer's anonymous visitor became known as {doc['profile_id']} "
        f"({ids}); joining {refused['kept_apart_from']} too was refused ({refused['reason']}); "
        "opencdp identity explain user_id:demo-mum shows why"
    )


def _matching_story(admin: httpx.Client, console: Console) -> None:
    """Train the match model; show the shop account that matched its CRM row with no identifier in common, with
    its probability; then split it off for good."""
    r = admin.post("/admin/v1/identity/model", json={})
    if r.status_code != 200:
        console.print(f"[yellow]matching: {r.json().get('message')}[/yellow]")
        return
    trained = r.json()
    pairs = ", ".join(f"{n} {status}" for status, n in sorted(trained["pairs"].items()))
    console.print(
        f"[green]matching[/green]: model trained on {trained['trained_on']} records "
        f"({', '.join(trained['features'])}); scored pairs: {pairs} (opencdp identity review)"
    )
    source_id = admin.get(f"/admin/v1/sources/{CRM_SOURCE}").json()["source_id"]
    shop = f"crm_id:{source_id}:W{SHOP_TWIN:04d}"
    doc = admin.get(f"/admin/v1/identity/profiles/{shop}/explain").json()
    matched = [e for e in doc.get("edges", []) if e["kind"] == "probabilistic"]
    if not matched:
        return
    edge = matched[0]
    levels = ", ".join(f"{lv['feature']}: {lv['level']}" for lv in edge["evidence"]["levels"][:4])
    console.print(
        f"[green]matching[/green]: shop account W{SHOP_TWIN:04d} (another email, no phone: no identifier in "
        f"common) joined CRM customer C{SHOP_TWIN:04d} in {doc['profile_id']} with probability "
        f"{edge['probability']:.4f} ({levels}); opencdp identity explain {shop}"
    )
    split = admin.post(f"/admin/v1/identity/profiles/{doc['profile_id']}/split", json={"by": shop})
    if split.status_code == 200:
        console.print(
            f"[green]split[/green]: W{SHOP_TWIN:04d} separated into {split.json()['split_off']} for good "
            f"(a cannot-link later evidence respects; opencdp identity unsplit to undo)"
        )


def _settled_view(admin: httpx.Client, ref: str, orders: int, stop: threading.Event) -> dict[str, Any] | None:
    """The 360 view (with lineage) of ``ref`` once its computed traits count its ``orders`` and its ticket: the
    profile stage follows the imports on the server's loader. None if that takes over a minute or the demo
    stops."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not stop.is_set():
        r = admin.get(f"/admin/v1/profiles/{ref}", params={"lineage": "true", "limit": 1})
        if r.status_code == 200:
            doc: dict[str, Any] = r.json()
            if doc["computed"].get("order_count") == orders and doc["computed"].get("ticket_count") == 1:
                return doc
        stop.wait(0.5)
    return None


def _name(doc: dict[str, Any]) -> str:
    names = [doc["traits"][t]["value"] for t in ("first_name", "last_name") if t in doc["traits"]]
    return " ".join(names) or str(doc["profile_id"])


def _amount(value: float) -> str:
    return f"{value:,.2f} {CURRENCY}"


def _mood(score: float) -> str:
    """VADER's usual reading of a compound score: at most -0.05 negative, at least 0.05 positive."""
    return "negative" if score <= -0.05 else "positive" if score >= 0.05 else "neutral"


def _profile_story(admin: httpx.Client, console: Console, stop: threading.Event) -> None:
    """The 360 view of the customer who returned most of what they bought: golden traits with their sources,
    revenue, refunds and LTV net of returns, ticket sentiment; then ranked against the loyal customer by gross
    revenue and by LTV net."""
    sources = {s["source_id"]: s["name"] for s in admin.get("/admin/v1/sources").json()}
    crm = next(source_id for source_id, name in sources.items() if name == CRM_SOURCE)
    returner, loyal = (
        _settled_view(admin, f"crm_id:{crm}:C{who:04d}", sum(w == who for w, _, _ in STORY_ORDERS), stop)
        for who in (RETURNER, LOYAL)
    )
    if returner is None or loyal is None:
        return
    views = [returner, loyal]
    c = returner["computed"]
    console.print(
        f"[green]profile 360[/green] of {_name(returner)} ({returner['profile_id']}), a CRM customer who also "
        "bought at the point of sale:"
    )
    console.print(output.golden_traits(returner, sources))
    console.print(
        f"  {c['order_count']} orders: gross revenue {_amount(c['gross_revenue'])}, refunds {_amount(c['refunds'])}, "
        f"LTV net of returns {_amount(c['ltv_net'])}; return rate {c['return_rate']:.1%} (of the revenue)"
    )
    sentiment = c["avg_ticket_sentiment"]
    console.print(f"  {c['ticket_count']} support ticket: sentiment {sentiment:.2f} ({_mood(sentiment)})")
    by_gross = sorted(views, key=lambda v: v["computed"]["gross_revenue"], reverse=True)
    by_net = sorted(views, key=lambda v: v["computed"]["ltv_net"], reverse=True)
    console.print(
        f"  ranked by gross revenue {_name(by_gross[0])} comes first "
        f"({' against '.join(_amount(v['computed']['gross_revenue']) for v in by_gross)}); net of returns "
        f"{_name(by_net[0])} does ({' against '.join(_amount(v['computed']['ltv_net']) for v in by_net)})"
    )
    email = returner["traits"]["email"]["value"]
    console.print(f"  see it yourself: [bold]opencdp profiles show email:{email}[/bold]")
