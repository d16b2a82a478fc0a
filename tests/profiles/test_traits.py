"""Computed traits on both engines, checked against an independent computation in plain Python over the same
generated data: web orders and refunds, point-of-sale orders (one re-imported with a new amount), returns from a
finance ledger that names only the order (some before their order arrives), a currency without a rate, anonymous
orders that merge into a known customer, and a split that takes its orders with it."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from opencdp.api.runtime import Runtime
from opencdp.config import Settings
from opencdp.profiles.inspect import documents
from opencdp.profiles.serving import CACHED_TIMELINE, Entry, entry
from tests.helpers import write_csv
from tests.identity.test_stitching import journal as send
from tests.segments.test_kept_columns import assert_kept

RATES = {"USD": 1.0, "EUR": 1.25}
T0 = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def rt(settings: Settings) -> Iterator[Runtime]:
    runtime = Runtime(settings)
    runtime.put_profile_settings({"currency": "USD", "rates": {"EUR": RATES["EUR"]}})
    yield runtime
    runtime.close()


@dataclass
class Order:
    key: str  # messageId (web) or order_id (POS record key)
    order_id: str
    amount: float
    currency: str
    at: datetime


@dataclass
class World:
    """What was sent, to compute the expected traits from."""

    orders: dict[str, Order] = field(default_factory=dict)  # order_id -> latest version
    returns: list[tuple[str, str, float, str]] = field(default_factory=list)  # (key, order_id, amount, currency)


def _expected(rt: Runtime, world: World) -> dict[str, dict[str, Any]]:
    """Per profile, from the record_profiles view (which record is whose) and plain Python arithmetic."""
    owner = {k: p for k, p in rt.engine.fetch_all("SELECT record_key, profile_id FROM record_profiles")}
    live = [str(p) for (p,) in rt.engine.fetch_all("SELECT profile_id FROM profiles_index")]
    out: dict[str, dict[str, Any]] = {p: {"orders": [], "refunds": [], "unconvertible": False} for p in live}
    order_owner: dict[str, str] = {}
    for o in world.orders.values():
        p = owner[o.key]
        order_owner[o.order_id] = p
        out[p]["orders"].append(o)
    for key, order_id, amount, currency in world.returns:
        p = order_owner.get(order_id) or owner.get(key)
        if p is not None:
            out[p]["refunds"].append((amount, currency))
    expected = {}
    for p, d in out.items():
        orders = d["orders"]
        gross: float | None = sum(o.amount * RATES[o.currency] for o in orders if o.currency in RATES)
        if any(o.currency not in RATES for o in orders):
            gross = None
        refunds: float | None = sum(a * RATES[c] for a, c in d["refunds"] if c in RATES)
        if any(c not in RATES for _, c in d["refunds"]):
            refunds = None
        net = None if gross is None or refunds is None else gross - refunds
        expected[p] = {
            "order_count": len(orders),
            "gross_revenue": gross,
            "refunds": refunds,
            "ltv_net": net,
            "return_rate": None if gross in (None, 0) or refunds is None else refunds / gross,
            "avg_order_value": None if gross is None or not orders else gross / len(orders),
            "last_order_at": max((o.at for o in orders), default=None),
        }
    return expected


def _actual(rt: Runtime) -> dict[str, dict[str, Any]]:
    names = ["order_count", "gross_revenue", "refunds", "ltv_net", "return_rate", "avg_order_value", "last_order_at"]
    rows = rt.engine.fetch_all(f"SELECT profile_id, {', '.join(names)} FROM profiles")
    return {str(r[0]): dict(zip(names, r[1:], strict=True)) for r in rows}


def _assert_read_model_is_current(rt: Runtime) -> None:
    """The profile API's read model, refreshed batch by batch, equals documents read from scratch."""
    fresh = documents(rt.engine, None, rt.profiles.definitions(), timeline=CACHED_TIMELINE)

    def decoded(entries: dict[str, Entry]) -> dict[str, Any]:  # equal JSON, whatever its spacing
        return {pid: (e.document(lineage=False), e.document(lineage=True)) for pid, e in entries.items()}

    assert decoded(rt.profile_cache.docs) == decoded({pid: entry(doc) for pid, doc in fresh.items()})


def _assert_traits(rt: Runtime, world: World) -> None:
    rt.load()  # an import returns once loaded; governance, identity and profiles follow
    _assert_read_model_is_current(rt)
    expected, actual = _expected(rt, world), _actual(rt)
    assert set(actual) == set(expected)
    for p, want in expected.items():
        got = actual[p]
        for name, value in want.items():
            if isinstance(value, float):
                assert got[name] == pytest.approx(value, rel=1e-9, abs=1e-9), (p, name, got, want)
            elif isinstance(value, datetime):
                assert got[name] is not None and got[name].astimezone(UTC) == value, (p, name)
            else:
                assert got[name] == value, (p, name, got, want)


def test_commerce_traits_match_an_independent_computation(rt: Runtime, tmp_path: Path) -> None:
    keys: dict[str, int] = {}  # profile keys seen so far (assert_kept)
    rng = random.Random(7)
    web = rt.registry.create("web", "web", None).source_id
    rt.registry.create("pos", "server", None)
    rt.registry.create("finance", "server", None)
    world = World()
    people = 12
    messages: list[dict[str, Any]] = []
    for i in range(people):
        at = T0 + timedelta(days=i)
        # half the people shop anonymously first and identify afterwards (their anonymous orders merge in)
        anon_first = i % 2 == 0
        ident = {"type": "identify", "messageId": f"id-{i}", "userId": f"u{i}", "anonymousId": f"a{i}",
                 "traits": {"email": f"p{i}@shopmail.com", "firstName": f"N{i}"}, "_at": at}  # fmt: skip
        if not anon_first:
            messages.append(ident)
        for k in range(rng.randint(0, 3)):
            currency = "JPY" if i == 5 and k == 0 else rng.choice(["USD", "EUR"])
            order = Order(f"wo-{i}-{k}", f"W{i}-{k}", round(rng.uniform(5, 200), 2), currency,
                          at + timedelta(hours=k + 1))  # fmt: skip
            who = {"anonymousId": f"a{i}"} if anon_first else {"userId": f"u{i}"}
            messages.append({"type": "track", "messageId": order.key, "event": "Order Completed", **who,
                             "properties": {"order_id": order.order_id, "total": order.amount,
                                            "currency": order.currency}, "_at": order.at})  # fmt: skip
            world.orders[order.order_id] = order
        if anon_first:
            messages.append({**ident, "_at": at + timedelta(hours=6)})
    send(rt, web, messages)

    # point-of-sale orders, known by the customer's email
    pos_rows = []
    for i in range(people):
        for k in range(rng.randint(0, 2)):
            order = Order(f"P{i}-{k}", f"P{i}-{k}", round(rng.uniform(5, 300), 2), rng.choice(["USD", "EUR"]),
                          T0 + timedelta(days=20 + i, hours=k))  # fmt: skip
            world.orders[order.order_id] = order
            pos_rows.append({"order_id": order.order_id, "email": f"p{i}@shopmail.com", "amount": order.amount,
                             "currency": order.currency, "ordered_at": order.at.isoformat()})  # fmt: skip
    assert pos_rows
    rt.import_files("pos", "orders", [write_csv(tmp_path / "pos1.csv", pos_rows)])

    # returns of some orders, from a ledger that names only the order; one comes before its order
    returned = rng.sample(sorted(world.orders), 6)
    ledger = []
    for n, order_id in enumerate(returned):
        o = world.orders[order_id]
        amount = round(o.amount * rng.choice([0.25, 0.5, 1.0]), 2)
        ledger.append({"return_id": f"R{n}", "order_id": order_id, "amount": amount, "currency": o.currency,
                       "returned_at": (o.at + timedelta(days=3)).isoformat()})  # fmt: skip
        world.returns.append((f"R{n}", order_id, amount, o.currency))
    early = Order("P99-0", "P99-0", 80.0, "USD", T0 + timedelta(days=40))
    ledger.append({"return_id": "R-early", "order_id": early.order_id, "amount": 60.0, "currency": "USD",
                   "returned_at": (early.at + timedelta(days=1)).isoformat()})  # fmt: skip
    world.returns.append(("R-early", early.order_id, 60.0, "USD"))
    rt.import_files("finance", "returns", [write_csv(tmp_path / "returns.csv", ledger)])
    _assert_traits(rt, world)
    assert_kept(rt, keys)

    # the early return's order arrives (for person 3), and one POS order is corrected (a new version)
    world.orders[early.order_id] = early
    fixed = dict(pos_rows[0], amount=round(float(pos_rows[0]["amount"]) + 10, 2))
    world.orders[fixed["order_id"]] = Order(fixed["order_id"], fixed["order_id"], fixed["amount"], fixed["currency"],
                                            datetime.fromisoformat(fixed["ordered_at"]))  # fmt: skip
    late = {"order_id": early.order_id, "email": "p3@shopmail.com", "amount": 80.0, "currency": "USD",
            "ordered_at": early.at.isoformat()}  # fmt: skip
    rt.import_files("pos", "orders", [write_csv(tmp_path / "pos2.csv", [late, fixed])])
    _assert_traits(rt, world)
    assert_kept(rt, keys)
    # an audience counts each order once too, whatever versions of it were imported (order_count is checked
    # against the world above)
    for n in (1, 2, 3):
        row = rt.engine.fetch_one("SELECT count(*) FROM profile_computed WHERE order_count >= ?", (n,))
        assert row is not None and row[0] > 0
        assert rt.count_audience({"where": {"over": "orders", "at_least": n}})["count"] == row[0]

    # a second email joins person 1 and places a POS order; splitting it off takes the order along
    send(rt, web, [{"type": "identify", "messageId": "second", "userId": "u1",
                    "traits": {"email": "other@shopmail.com"}, "_at": T0 + timedelta(days=50)}])  # fmt: skip
    extra = Order("P1-x", "P1-x", 42.0, "USD", T0 + timedelta(days=51))
    world.orders[extra.order_id] = extra
    rt.import_files("pos", "orders", [write_csv(tmp_path / "pos3.csv", [
        {"order_id": "P1-x", "email": "other@shopmail.com", "amount": 42.0, "currency": "USD",
         "ordered_at": extra.at.isoformat()}])])  # fmt: skip
    before = rt.profile("user_id:u1")["computed"]["order_count"]
    _assert_traits(rt, world)
    assert_kept(rt, keys)
    rt.split_profile("user_id:u1", "email:other@shopmail.com")
    rt.load()
    _assert_traits(rt, world)
    assert_kept(rt, keys)
    assert rt.profile("user_id:u1")["computed"]["order_count"] == before - 1
    assert rt.profile("email:other@shopmail.com")["computed"]["order_count"] == 1

    # the person with a yen order has no revenue figure (there is no rate), never a sum of two currencies
    assert any(o.currency == "JPY" for o in world.orders.values())
    assert rt.profile("user_id:u5")["computed"]["gross_revenue"] is None

    # incremental results equal a computation from scratch
    incremental = _actual(rt)
    rt.backfill_traits()
    assert _actual(rt) == incremental


def test_ltv_net_of_a_customer_who_returns_most_of_what_they_buy(rt: Runtime, tmp_path: Path) -> None:
    rt.registry.create("pos", "server", None)
    rt.registry.create("finance", "server", None)
    orders = [{"order_id": f"O{k}", "customer_id": "C1", "email": "big@spendermail.com", "amount": 100.0,
               "currency": "USD", "ordered_at": f"2026-02-0{k + 1}T10:00:00"} for k in range(4)]  # fmt: skip
    orders.append({"order_id": "O9", "customer_id": "C2", "email": "steady@buyermail.com", "amount": 150.0,
                   "currency": "USD", "ordered_at": "2026-02-01T10:00:00"})  # fmt: skip
    rt.import_files("pos", "orders", [write_csv(tmp_path / "o.csv", orders)])
    returns = [{"return_id": f"R{k}", "order_id": f"O{k}", "amount": 100.0, "currency": "USD",
                "returned_at": f"2026-02-1{k}T10:00:00"} for k in range(3)]  # fmt: skip
    rt.import_files("finance", "returns", [write_csv(tmp_path / "r.csv", returns)])
    big = rt.profile("email:big@spendermail.com")["computed"]
    steady = rt.profile("email:steady@buyermail.com")["computed"]
    assert big["gross_revenue"] == 400.0 and big["refunds"] == 300.0
    assert big["ltv_net"] == 100.0 and big["return_rate"] == 0.75
    assert steady["ltv_net"] == 150.0
    ranked = rt.engine.fetch_all("SELECT email FROM profiles ORDER BY ltv_net DESC")
    assert [r[0] for r in ranked] == [
        "steady@buyermail.com",
        "big@spendermail.com",
    ]  # gross revenue alone says otherwise


def _ntile(ordered: list[str], buckets: int = 5) -> dict[str, int]:
    """SQL's ntile: the first len % buckets groups get one row more."""
    size, extra = divmod(len(ordered), buckets)
    out, i = {}, 0
    for b in range(1, buckets + 1):
        for _ in range(size + (1 if b <= extra else 0)):
            out[ordered[i]] = b
            i += 1
    return out


def test_rfm_favourites_and_discount_dependence(rt: Runtime) -> None:
    rng = random.Random(11)
    web = rt.registry.create("web", "web", None).source_id
    messages: list[dict[str, Any]] = []
    expected: dict[str, dict[str, Any]] = {}
    for i in range(13):
        user, at = f"u{i}", T0 + timedelta(days=i)
        views = [(rng.choice(["Tools", "Garden", "Paint"]), rng.choice(["Acme", "Bosch"])) for _ in range(5)]
        for k, (category, brand) in enumerate(views):
            event = ["Product Viewed", "Product Clicked", "Product Added"][k % 3]
            messages.append({"type": "track", "messageId": f"v{i}-{k}", "userId": user, "event": event,
                             "properties": {"category": category, "brand": brand},
                             "_at": at + timedelta(minutes=k)})  # fmt: skip
        orders = [(round(rng.uniform(10, 90), 2), rng.choice([0, 0, 5])) for _ in range(i % 4)]
        for k, (total, discount) in enumerate(orders):
            messages.append({"type": "track", "messageId": f"o{i}-{k}", "userId": user, "event": "Order Completed",
                             "properties": {"order_id": f"O{i}-{k}", "total": total, "discount": discount},
                             "_at": at + timedelta(hours=k + 1)})  # fmt: skip

        def favourite(values: list[str], views: list[tuple[str, str]] = views) -> str:
            counts = Counter(values)
            top = max(counts.values())
            return max((v for v in counts if counts[v] == top), key=lambda v: max(
                n for n, x in enumerate(views) if v in x))  # fmt: skip

        expected[user] = {
            "favourite_category": favourite([c for c, _ in views]),
            "favourite_brand": favourite([b for _, b in views]),
            "orders": len(orders), "net": sum(t for t, _ in orders),
            "last": at + timedelta(hours=len(orders)) if orders else None,
            "discount_dependence": sum(1 for _, d in orders if d > 0) / len(orders) if orders else None,
        }  # fmt: skip
    send(rt, web, messages)
    rows = rt.engine.fetch_all(
        "SELECT i.id_value, favourite_category, favourite_brand, discount_dependence, r_score, f_score, m_score "
        "FROM profiles AS p JOIN identity_membership AS m ON m.profile_id = p.profile_id "
        "JOIN identity_nodes AS i ON i.node_id = m.node_id AND i.id_type = 'user_id'"
    )
    buyers = [u for u in expected if expected[u]["orders"]]
    got = {row[0]: row[1:] for row in rows}
    profile_of = {row[0]: rt.profile(f"user_id:{row[0]}")["profile_id"] for row in rows}
    f = _ntile(sorted(buyers, key=lambda u: (expected[u]["orders"], profile_of[u])))
    m = _ntile(sorted(buyers, key=lambda u: (expected[u]["net"], profile_of[u])))
    r = _ntile(sorted(buyers, key=lambda u: (expected[u]["last"], profile_of[u])))
    for user, want in expected.items():
        category, brand, dependence, r_score, f_score, m_score = got[user]
        assert (category, brand) == (want["favourite_category"], want["favourite_brand"]), user
        assert dependence == pytest.approx(want["discount_dependence"]) if want["orders"] else dependence is None
        if want["orders"]:
            assert (r_score, f_score, m_score) == (r[user], f[user], m[user]), user
        else:
            assert (r_score, f_score, m_score) == (None, None, None)
