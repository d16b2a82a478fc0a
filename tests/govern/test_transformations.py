"""Transformations on both engines: each rule, idempotence, refused rule sets, and a quarantine fix by rename."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from opencdp.api.runtime import Runtime
from opencdp.config import Settings
from opencdp.errors import Rejected
from opencdp.govern.transforms import transformed
from opencdp.model.plans import TrackingPlan
from opencdp.model.transforms import Transformations, parse_transformations
from tests.govern.test_tracking_plans import send, track

RULES = Transformations.model_validate(
    {
        "rules": [
            {"op": "rename_event", "from": "Order Compleeted", "to": "Order Completed"},
            {"op": "rename_property", "event": "Order Completed", "from": "Revenue", "to": "revenue"},
            {"op": "cast_property", "event": "Order Completed", "property": "revenue", "to": "number"},
            {"op": "map_values", "property": "currency", "values": {"euro": "EUR", "€": "EUR"}},
            {"op": "drop_property", "property": "card_number"},
            {"op": "cast_property", "property": "gift", "to": "boolean"},
            {"op": "cast_property", "property": "sku", "to": "string"},
            {"op": "route", "event": "Signed Up", "to_type": "identify"},
        ]
    }
)
RAW = "SELECT seq, source_id, type, event, message FROM raw_events"


@pytest.fixture
def rt(settings: Settings) -> Iterator[Runtime]:
    runtime = Runtime(settings)
    yield runtime
    runtime.close()


def rows(rt: Runtime, sql: str) -> dict[int, tuple[str, str, dict[str, Any]]]:
    return {r[0]: (r[2], r[3], json.loads(r[4])) for r in rt.engine.fetch_all(sql)}


def test_each_rule_and_applying_twice_changes_nothing_more(rt: Runtime) -> None:
    src = rt.registry.create("web", "web", None).source_id
    send(
        rt, src,
        track("a", "Order Compleeted", Revenue="12.50", currency="euro", card_number="4111111111111111", gift="TRUE"),
        track("b", "Order Completed", revenue=3, currency="USD", sku=1234, nested={"x": 1}),
        track("c", "Signed Up", plan="pro"),
        track("d", "Order Completed", revenue="n/a", Revenue=None),
    )  # fmt: skip
    once = rows(rt, transformed(RULES, RAW))
    by_id = {m["messageId"]: (t, e, m) for t, e, m in once.values()}
    t, e, m = by_id["a"]
    assert (t, e, m["event"]) == ("track", "Order Completed", "Order Completed")
    assert m["properties"] == {"revenue": 12.5, "currency": "EUR", "gift": True}
    assert by_id["b"][2]["properties"] == {"revenue": 3, "currency": "USD", "sku": "1234", "nested": {"x": 1}}
    assert by_id["c"][0] == "identify" and by_id["c"][2]["type"] == "identify"
    # "n/a" cannot be a number: left as sent (the plan may flag it); a null-valued property is not renamed
    assert by_id["d"][2]["properties"] == {"revenue": "n/a", "Revenue": None}
    twice = rows(rt, transformed(RULES, transformed(RULES, RAW)))
    assert twice == once
    assert rows(rt, transformed(Transformations(), RAW)) == rows(rt, RAW)  # no rules: the raw rows


@pytest.mark.parametrize(
    ("rules", "reason"),
    [
        ([{"op": "rename_event", "from": "a", "to": "b"}, {"op": "rename_event", "from": "b", "to": "a"}], "loop"),
        ([{"op": "rename_event", "from": "a", "to": "b"}, {"op": "rename_event", "from": "b", "to": "c"}], "chain"),
        ([{"op": "rename_event", "from": "a", "to": "b"}, {"op": "rename_event", "from": "a", "to": "c"}], "twice"),
        ([{"op": "rename_property", "from": "p", "to": "p"}], "loop"),
        ([{"op": "map_values", "property": "p", "values": {"x": "y", "y": "z"}}], "mapped again"),
        ([{"op": "eval", "code": "1+1"}], "op"),
    ],
)
def test_rule_sets_that_would_not_apply_once_are_refused(rules: list[dict[str, Any]], reason: str) -> None:
    with pytest.raises(Rejected) as info:
        parse_transformations({"rules": rules})
    assert info.value.code == "invalid_transformations" and reason in info.value.message


def test_a_rename_fixes_what_the_quarantine_holds(rt: Runtime) -> None:
    src = rt.registry.create("web", "web", None).source_id
    plan = {
        "Order Completed": {"type": "object", "required": ["revenue"], "properties": {"revenue": {"type": "number"}}}
    }
    rt.governance.plans.put(src, TrackingPlan(events=plan, unplanned="block", violations="block"))
    send(rt, src, track("typo", "Order Compleeted", revenue=5), track("text", "Order Completed", revenue="7"))
    assert rt.governance.release().still_held == 2
    rt.governance.transforms.put(RULES)
    released = rt.governance.release()
    assert (released.released, released.still_held) == (2, 0)
    stream = rt.engine.fetch_all("SELECT message_id, event, status, message FROM governed ORDER BY gseq")
    assert [(s[0], s[1], s[2]) for s in stream] == [
        ("typo", "Order Completed", "released"),
        ("text", "Order Completed", "released"),
    ]
    assert json.loads(stream[1][3])["properties"]["revenue"] == 7
    raw = rt.engine.fetch_all("SELECT event FROM raw_events ORDER BY seq")
    assert raw[0][0] == "Order Compleeted"  # the raw log keeps what was sent
    send(rt, src, track("new", "Order Compleeted", revenue=1))  # new traffic is transformed on its way in
    assert rt.engine.fetch_all("SELECT event, status FROM governed WHERE message_id = 'new'") == [
        ("Order Completed", "passed")
    ]


def test_transformation_routes_of_the_admin_api(server: Any) -> None:
    import httpx

    from tests.helpers import ADMIN_TOKEN

    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    url = f"{server.url}/admin/v1/transformations"
    assert httpx.get(url, headers=auth).json() == {"version": 0, "rules": []}
    loop = {"rules": [{"op": "rename_event", "from": "a", "to": "b"}, {"op": "rename_event", "from": "b", "to": "a"}]}
    refused = httpx.put(url, headers=auth, json=loop)
    assert refused.status_code == 400 and refused.json()["code"] == "invalid_transformations"
    assert httpx.put(url, json={"rules": []}).status_code == 401
    ok = httpx.put(url, headers=auth, json={"rules": [{"op": "rename_event", "from": "a", "to": "b"}]})
    assert ok.json() == {"version": 1}
    assert httpx.get(url, headers=auth).json()["rules"] == [{"op": "rename_event", "from": "a", "to": "b"}]
