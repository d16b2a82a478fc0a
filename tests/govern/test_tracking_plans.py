"""Tracking plans on both engines: violations by rule, the three modes, the quarantine and exactly-once release."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from pydantic import ValidationError

from opencdp.api.runtime import Runtime
from opencdp.config import Settings
from opencdp.govern.stage import Released
from opencdp.model.plans import TrackingPlan
from opencdp.store.journal import accepted_line

ORDER = {
    "type": "object",
    "required": ["revenue"],
    "properties": {
        "revenue": {"type": "number", "minimum": 0},
        "currency": {"type": "string", "enum": ["EUR", "USD"]},
        "coupon": {"type": ["string", "null"], "maxLength": 8, "pattern": "^[A-Z0-9]+$"},
        "items": {"type": "integer", "maximum": 100},
    },
    "additionalProperties": False,
}


@pytest.fixture
def rt(settings: Settings) -> Iterator[Runtime]:
    runtime = Runtime(settings)
    yield runtime
    runtime.close()


def send(rt: Runtime, source_id: str, *messages: dict[str, Any]) -> None:
    lines = b""
    for m in messages:
        doc = json.dumps(m).encode()
        client = (m["messageId"], m["type"], m.get("event"), m.get("userId"), None)
        lines += accepted_line(source_id, client, (None, None, None, "2026-01-01T00:00:00.000Z"), doc)
    rt.journal.write_sync(lines)
    rt.load()


def track(mid: str, event: str, **properties: Any) -> dict[str, Any]:
    return {"type": "track", "event": event, "userId": "u", "messageId": mid, "properties": properties}


def violations(rt: Runtime) -> set[tuple[str, str | None, str, str | None]]:
    rows = rt.engine.fetch_all(
        "SELECT r.message_id, v.property, v.rule, v.detail FROM violations AS v JOIN raw_events AS r ON r.seq = v.seq"
    )
    return {tuple(r) for r in rows}  # type: ignore[misc]


def statuses(rt: Runtime) -> dict[str, str]:
    rows = rt.engine.fetch_all("SELECT r.message_id, g.status FROM governance AS g JOIN raw_events AS r USING (seq)")
    return dict(rows)  # type: ignore[arg-type]


def test_each_rule_is_recorded_with_event_property_and_detail(rt: Runtime) -> None:
    src = rt.registry.create("web", "web", None).source_id
    rt.governance.plans.put(src, TrackingPlan(events={"Order Completed": ORDER}, identify=IDENTIFY))
    send(
        rt, src,
        track("ok", "Order Completed", revenue=10.5, currency="EUR", coupon=None, items=3),
        track("bad", "Order Completed", revenue=-1, currency="GBP", coupon="toolongcoupon", items=2.5, extra=1),
        track("missing", "Order Completed", currency="USD"),
        track("typed", "Order Completed", revenue="10", coupon="ab-c"),
        track("unplanned", "Cart Viewed"),
        {"type": "identify", "userId": "u", "messageId": "who", "traits": {"email": 42}},
        {"type": "page", "userId": "u", "messageId": "page"},
    )  # fmt: skip
    assert violations(rt) == {
        ("bad", "revenue", "minimum", "-1"),
        ("bad", "currency", "enum_mismatch", "GBP"),
        ("bad", "coupon", "maxLength", "toolongcoupon"),
        ("bad", "coupon", "pattern_mismatch", "toolongcoupon"),
        ("bad", "items", "type_mismatch", "number"),
        ("bad", None, "additional_property", "extra"),
        ("missing", "revenue", "required_missing", None),
        ("typed", "revenue", "type_mismatch", "string"),
        ("typed", "coupon", "pattern_mismatch", "ab-c"),
        ("unplanned", None, "unplanned_event", None),
        ("who", "email", "type_mismatch", "integer"),
    }
    got = statuses(rt)
    assert got["ok"] == got["page"] == "passed"
    assert {got[m] for m in ("bad", "missing", "typed", "who")} == {"flagged"}  # violations: flag (the default)
    assert got["unplanned"] == "passed"  # unplanned: allow (the default), still recorded


IDENTIFY = {"type": "object", "properties": {"email": {"type": "string"}}}


def test_block_holds_in_the_quarantine_and_release_lets_each_through_once(rt: Runtime) -> None:
    src = rt.registry.create("web", "web", None).source_id
    other = rt.registry.create("app", "mobile", None).source_id
    plan = TrackingPlan(events={"Order Completed": ORDER}, unplanned="block", violations="block")
    rt.governance.plans.put(src, plan)
    send(
        rt, src,
        track("a", "Order Completed", revenue=1),
        track("b", "Order Compleeted", revenue=2),
        track("c", "Order Completed", revenue="3"),
    )  # fmt: skip
    send(rt, other, track("d", "Anything"))  # no plan: passes
    assert statuses(rt) == {"a": "passed", "b": "blocked", "c": "blocked", "d": "passed"}
    held = rt.engine.fetch_all("SELECT message_id, reasons FROM quarantine ORDER BY seq")
    assert held == [("b", "unplanned_event"), ("c", "type_mismatch revenue")]
    governed = rt.engine.fetch_all("SELECT message_id FROM governed ORDER BY gseq")
    assert [g[0] for g in governed] == ["a", "d"]

    assert rt.governance.release() == Released(0, 2)  # nothing fixed yet: still held
    fixed = dict(plan.events)
    fixed["Order Compleeted"] = {"type": "object"}  # the operator plans the misspelt event
    rt.governance.plans.put(src, TrackingPlan(events=fixed, unplanned="block", violations="block"))
    first = rt.governance.release()
    assert (first.released, first.still_held) == (1, 1)
    assert rt.governance.release().released == 0  # released once, never again
    assert [g[0] for g in rt.engine.fetch_all("SELECT message_id FROM governed ORDER BY gseq")] == ["a", "d", "b"]
    assert rt.engine.fetch_all("SELECT message_id, reasons FROM quarantine") == [("c", "type_mismatch revenue")]
    kept = {(m, rule) for m, _, rule, _ in violations(rt)}
    assert ("b", "unplanned_event") in kept  # a released message keeps the history of why it was held


def test_flag_mode_and_new_messages_after_a_release_keep_the_stream_in_order(rt: Runtime) -> None:
    src = rt.registry.create("web", "web", None).source_id
    rt.governance.plans.put(src, TrackingPlan(events={}, unplanned="block"))
    send(rt, src, track("x", "E"))
    rt.governance.plans.put(src, TrackingPlan(events={"E": {"type": "object"}}, unplanned="flag"))
    send(rt, src, track("y", "E"), track("z", "F"))
    assert rt.governance.release().released == 1
    rows = rt.engine.fetch_all("SELECT message_id, status FROM governed ORDER BY gseq")
    assert rows == [("y", "passed"), ("z", "flagged"), ("x", "released")]


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        ({"events": {"E": {"type": "object", "properties": {"p": {"type": "strin"}}}}}, "not a valid JSON Schema"),
        ({"events": {"E": {"type": "object", "properties": {"p": {"oneOf": [{}]}}}}}, "not supported"),
        ({"events": {"E": {"type": "array"}}}, "must describe an object"),
        ({"events": {"E": {"type": "object"}}, "unplanned": "drop"}, "unplanned"),
        ({"identify": {"additionalProperties": {"type": "string"}}}, "true or false"),
    ],
)
def test_invalid_plans_are_refused_with_the_reason(plan: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError) as info:
        TrackingPlan.model_validate(plan)
    assert message in str(info.value)


def test_a_release_while_the_processor_runs_numbers_the_stream_once_and_loses_nothing(rt: Runtime) -> None:
    """The loader governs new messages while an operator releases held ones (the admin API runs on its own
    threads): both number the governed stream, and no number may be given twice (identity, reading past a
    number, would never see the second message that had it)."""
    src = rt.registry.create("web", "web", None).source_id
    held = 8
    rt.governance.plans.put(src, TrackingPlan(events={"ok": {"type": "object"}}, unplanned="block"))
    send(rt, src, *(track(f"h{i}", f"held{i}") for i in range(held)))
    failures: list[BaseException] = []

    def traffic() -> None:
        try:
            for k in range(30):
                send(rt, src, *(track(f"m{k}.{j}", "ok") for j in range(10)))
        except BaseException as exc:
            failures.append(exc)

    loader = threading.Thread(target=traffic)
    loader.start()
    try:
        for i in range(held):
            planned = {"ok": {"type": "object"}, **{f"held{j}": {"type": "object"} for j in range(i + 1)}}
            rt.governance.plans.put(src, TrackingPlan(events=planned, unplanned="block"))
            assert rt.governance.release().released == 1
    finally:
        loader.join()
    assert not failures, failures
    rt.load()
    twice = "SELECT gseq FROM governance WHERE gseq IS NOT NULL GROUP BY gseq HAVING count(*) > 1"
    assert rt.engine.fetch_all(twice) == []
    assert dict(rt.engine.fetch_all("SELECT status, count(*) FROM governance GROUP BY status")) == {
        "passed": 300, "released": held}  # fmt: skip
    resolved = rt.engine.fetch_one("SELECT count(DISTINCT seq) FROM message_identities")
    assert resolved == (300 + held,)  # every governed message reached identity
