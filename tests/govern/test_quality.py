"""Data quality per source on both engines: rates against counts made here, the score, and the two alerts."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from opencdp.api.runtime import Runtime
from opencdp.config import Settings
from opencdp.govern.quality import WEIGHTS, quality
from opencdp.model.plans import TrackingPlan
from opencdp.store.journal import accepted_line, rejected_line

NOW = datetime.now(UTC)
PLAN = TrackingPlan(events={"Order Completed": {"type": "object", "required": ["revenue"]}})


@pytest.fixture
def rt(settings: Settings) -> Iterator[Runtime]:
    runtime = Runtime(settings)
    yield runtime
    runtime.close()


def line(source_id: str, mid: str, at: datetime, **properties: Any) -> bytes:
    doc = {"type": "track", "event": "Order Completed", "userId": "u", "messageId": mid, "properties": properties}
    stamp = at.isoformat()
    return accepted_line(
        source_id, (mid, "track", "Order Completed", "u", None), (None, stamp, None, stamp), json.dumps(doc).encode()
    )


def test_rates_score_and_alerts(rt: Runtime) -> None:
    steady = rt.registry.create("steady", "server", None).source_id
    broken = rt.registry.create("broken", "server", None).source_id
    rt.engine.execute("UPDATE sources SET created_at = ?", (NOW - timedelta(days=30),))
    for source_id in (steady, broken):
        rt.governance.plans.put(source_id, PLAN)
    old = [NOW - timedelta(days=3), NOW - timedelta(days=2)]
    lines = b""
    for i in range(60):  # 10 a day over the six baseline days
        lines += line(steady, f"s{i}", old[i % 2], revenue=1)
        lines += line(broken, f"b{i}", old[i % 2], **({} if i < 3 else {"revenue": 1}))  # 3 of 60 break the plan
    for i in range(2):  # steady: 2 in the last day (a fifth of its usual 10): a volume drop
        lines += line(steady, f"s-new{i}", NOW - timedelta(hours=1), revenue=1)
    for i in range(12):  # broken: 12 in the last day, half of them without revenue: a violation jump
        lines += line(broken, f"b-new{i}", NOW - timedelta(hours=1), **({} if i % 2 else {"revenue": 1}))
    rt.journal.write_sync(lines)
    rt.journal.write_sync(b"".join(line(steady, f"s{i}", old[0], revenue=1) for i in range(5)))  # 5 retried
    rt.journal.write_sync(rejected_line(steady, NOW.isoformat(), b'{"code":"x","reason":"y","payload":"{}"}'))
    rt.load()

    report = {q.name: q for q in quality(rt.engine, days=7, now=NOW)}
    s, b = report["steady"], report["broken"]
    assert (s.messages, s.recent_messages, b.messages, b.recent_messages) == (62, 2, 72, 12)
    assert s.baseline_daily == pytest.approx(10.0) and s.volume_ratio == pytest.approx(0.2)
    assert s.duplicate_rate == pytest.approx(5 / 67) and b.duplicate_rate == 0
    assert s.rejected_rate == pytest.approx(1 / 63) and b.rejected_rate == 0
    assert b.completeness == pytest.approx(1 - 9 / 72) and b.violation_rate == pytest.approx(9 / 72)
    assert b.recent_violation_rate == pytest.approx(6 / 12) and b.baseline_violation_rate == pytest.approx(3 / 60)
    assert s.validity == b.validity == 1.0 and s.planned == b.planned == 1.0
    assert s.alerts == ["volume_drop"] and b.alerts == ["violation_jump"]
    expected = 100 * (
        WEIGHTS["validity"] + WEIGHTS["completeness"] + WEIGHTS["planned"] + WEIGHTS["unique"] * (1 - 5 / 67)
        + WEIGHTS["accepted"] * (1 - 1 / 63) + WEIGHTS["volume"] * 0.2
    )  # fmt: skip
    assert s.score == round(expected)

    quality(rt.engine, days=7, now=NOW)  # the same day again: the alerts are recorded once
    alerts = rt.engine.fetch_all("SELECT source_id, rule FROM quality_alerts")
    assert sorted(alerts) == sorted([(broken, "violation_jump"), (steady, "volume_drop")])
