"""Trait definitions on both engines: a workspace trait with filters, a window and most-frequent checked against
plain Python; every kind of bad definition refused at definition time with nothing half-applied."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from opencdp.api.runtime import Runtime
from opencdp.config import Settings
from opencdp.errors import Rejected
from opencdp.profiles.stage import Profiles
from tests.identity.test_stitching import journal as send

NOW = datetime(2026, 6, 30, 12, tzinfo=UTC)
CATEGORIES = ["Tools", "Garden", "Paint"]


@pytest.fixture
def rt(settings: Settings) -> Iterator[Runtime]:
    runtime = Runtime(settings)
    runtime.profiles = Profiles(runtime.engine, runtime.raw_log, clock=lambda: NOW)
    yield runtime
    runtime.close()


def _browse(rt: Runtime, rng: random.Random) -> list[dict[str, Any]]:
    web = rt.registry.create("web", "web", None).source_id
    messages = []
    for i in range(10):
        for k in range(rng.randint(1, 8)):
            at = NOW - timedelta(days=rng.randint(0, 60), hours=k)
            messages.append({"type": "track", "messageId": f"v{i}-{k}", "userId": f"u{i}", "event": "Product Viewed",
                             "properties": {"category": rng.choice(CATEGORIES), "price": rng.randint(1, 90)},
                             "_at": at})  # fmt: skip
    sent = [dict(m) for m in messages]
    send(rt, web, messages)
    return sent


def test_a_workspace_trait_matches_plain_python(rt: Runtime) -> None:
    sent = _browse(rt, random.Random(3))
    rt.put_traits([
        {"name": "tools_viewed_30d", "over": "events", "event": ["Product Viewed"], "aggregate": "count",
         "where": [{"property": "category", "op": "=", "value": "Tools"}], "window_days": 30},
        {"name": "top_viewed_category", "over": "events", "event": ["Product Viewed"], "aggregate": "most_frequent",
         "of": "category"},
        {"name": "pricey_views", "over": "events", "aggregate": "count",
         "where": [{"property": "price", "op": ">=", "value": 50}, {"property": "category", "op": "in",
                                                                      "value": ["Tools", "Paint"]}]},
        {"name": "tools_share", "expression": "round(tools_viewed_30d / order_count, 2)"},
    ])  # fmt: skip
    for i in range(10):
        mine = [m for m in sent if m["userId"] == f"u{i}"]
        recent_tools = [m for m in mine if m["properties"]["category"] == "Tools" and m["_at"] >= NOW - timedelta(30)]
        counts = Counter(m["properties"]["category"] for m in mine)
        top = max(counts.values())
        latest = {c: max(m["_at"] for m in mine if m["properties"]["category"] == c) for c in counts}
        favourite = max((c for c in counts if counts[c] == top), key=lambda c: latest[c])
        pricey = [
            m for m in mine if m["properties"]["price"] >= 50 and m["properties"]["category"] in ("Tools", "Paint")
        ]
        got = rt.profile(f"user_id:u{i}")["computed"]
        assert got["tools_viewed_30d"] == len(recent_tools)
        assert got["top_viewed_category"] == favourite
        assert got["pricey_views"] == len(pricey)
        assert got["tools_share"] is None  # no orders: a division by zero is NULL on both engines
    listed = {t["name"]: t for t in rt.traits()}
    assert listed["top_viewed_category"]["type"] == "text" and not listed["top_viewed_category"]["shipped"]
    assert listed["ltv_net"]["shipped"]
    assert rt.engine.fetch_one("SELECT count(*) FROM profiles WHERE tools_viewed_30d IS NOT NULL") == (10,)
    rt.delete_trait("tools_share")
    assert "tools_share" not in {t["name"] for t in rt.traits()}


BAD: list[tuple[dict[str, Any], str]] = [
    ({"name": "x", "expression": "gross_revenue -"}, "cannot be read"),
    ({"name": "x", "expression": "gross_revenu * 2"}, "not a trait"),
    ({"name": "x", "expression": "last_order_at + 1"}, "type mismatch"),
    ({"name": "x", "expression": "days_since(order_count)"}, "timestamp"),
    ({"name": "x", "expression": "(SELECT count(*) FROM raw_events)"}, "not allowed"),
    ({"name": "x", "expression": "read_csv('/etc/passwd')"}, "not allowed"),
    ({"name": "x", "expression": "ltv_net; DROP TABLE activity"}, "not allowed"),
    ({"name": "x", "expression": "'a' || 'b'"}, "not allowed"),
    ({"name": "x", "over": "orders", "aggregate": "count", "window_days": 0}, "window_days"),
    ({"name": "x", "over": "orders", "aggregate": "sum", "of": "timestamp"}, "not a number"),
    ({"name": "x", "over": "orders", "aggregate": "sum"}, "needs of"),
    ({"name": "x", "over": "purchases", "aggregate": "count"}, "over"),
    ({"name": "x", "over": "orders", "aggregate": "count", "event": ["Order Completed"]}, "only apply over events"),
    ({"name": "x", "over": "events", "aggregate": "count", "where": [{"property": "a'b", "value": 1}]}, "property"),
    (
        {
            "name": "x",
            "over": "events",
            "aggregate": "count",
            "where": [{"property": "price", "op": ">", "value": "a"}],
        },
        "compares numbers",
    ),
    ({"name": "X Y", "over": "orders", "aggregate": "count"}, "not a trait name"),
    ({"name": "email", "over": "orders", "aggregate": "count"}, "golden trait"),
    ({"name": "ltv_net", "over": "orders", "aggregate": "count"}, "shipped trait"),
    ({"name": "x", "over": "events", "aggregate": "count", "event": ["Prodcut Viewed"]}, "was ever received"),
    ({"name": "x", "over": "events", "aggregate": "sum", "of": "prize"}, "ever had a property"),
]


@pytest.mark.parametrize(("doc", "why"), BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_definitions_are_refused_and_nothing_is_half_applied(rt: Runtime, doc: dict[str, Any], why: str) -> None:
    _browse(rt, random.Random(1))
    rt.put_traits({"name": "views", "over": "events", "aggregate": "count"})
    before = rt.traits()
    columns = rt.engine.fetch_arrow("SELECT * FROM profiles LIMIT 0").column_names
    with pytest.raises(Rejected) as err:
        rt.put_traits([{"name": "fine", "over": "events", "aggregate": "count"}, doc])
    assert why in err.value.message, err.value.message
    assert rt.traits() == before
    assert rt.engine.fetch_arrow("SELECT * FROM profiles LIMIT 0").column_names == columns
    assert "views" in columns and "fine" not in columns


def test_traits_that_depend_on_each_other_in_a_circle_are_refused(rt: Runtime) -> None:
    with pytest.raises(Rejected, match="circle"):
        rt.put_traits([{"name": "a", "expression": "b + 1"}, {"name": "b", "expression": "a * 2"}])
    with pytest.raises(Rejected, match="defined twice"):
        rt.put_traits([{"name": "a", "expression": "ltv_net"}, {"name": "a", "expression": "refunds"}])
