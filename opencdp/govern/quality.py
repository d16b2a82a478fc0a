"""Data quality per source, beyond schema: rates, volume and freshness against the source's own baseline, a
reliability score, and alerts when a source's volume drops or its violation rate jumps.

Every figure is a set-based aggregate over tables other stages already keep (``raw_events``, ``violations``,
``governance``, ``load_stats``, ``rejected_messages``, ``import_rejects``), grouped by source; Python only
combines the few resulting rows. The window is the last ``days`` days; "recent" is the last 24 hours and the
baseline the days before it, so a source is compared with itself.

Reliability score, 0 to 100: ``100 * (0.30 validity + 0.20 completeness + 0.10 planned + 0.15 (1 - duplicate
rate) + 0.15 (1 - rejected rate) + 0.10 volume health)``, where validity is the share of messages without a
type, value or range violation (and of records without a flagged value), completeness the share without a
missing required property, planned the share of events the plan lists, and volume health the recent volume
over the baseline's daily average, capped at 1 (1 without a baseline).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from opencdp.store.engine import Engine

WEIGHTS = {"validity": 0.30, "completeness": 0.20, "planned": 0.10, "unique": 0.15, "accepted": 0.15, "volume": 0.10}
VOLUME_DROP = 0.5
"""Alert when the last 24 hours bring less than this share of the baseline's daily average."""
VIOLATION_JUMP = 2.0
"""Alert when the last 24 hours' violation rate is this many times the baseline's (and 5 points above it)."""
MIN_MESSAGES = 10
"""Fewer messages than this on either side of a comparison: no alert (too little to tell)."""

_MESSAGES = """
SELECT source_id, count(*), count(*) FILTER (WHERE received_at >= ?), max(received_at)
FROM raw_events WHERE received_at >= ? GROUP BY source_id"""
_VIOLATIONS = """
SELECT r.source_id,
       CASE WHEN v.rule = 'required_missing' THEN 'incomplete' WHEN v.rule = 'unplanned_event' THEN 'unplanned'
            ELSE 'invalid' END AS kind,
       count(DISTINCT v.seq)
FROM violations AS v JOIN raw_events AS r ON r.seq = v.seq
WHERE r.received_at >= ?
GROUP BY r.source_id, CASE WHEN v.rule = 'required_missing' THEN 'incomplete'
                           WHEN v.rule = 'unplanned_event' THEN 'unplanned' ELSE 'invalid' END"""
_VIOLATING = """
SELECT r.source_id, count(DISTINCT v.seq), count(DISTINCT CASE WHEN r.received_at >= ? THEN v.seq END)
FROM violations AS v JOIN raw_events AS r ON r.seq = v.seq
WHERE r.received_at >= ? GROUP BY r.source_id"""
_FLAGGED_RECORDS = """
SELECT source_id, count(*) FROM raw_events
WHERE type = 'record' AND received_at >= ? AND json_extract_string(message, '$.flags') <> '{}'
GROUP BY source_id"""
_BLOCKED = """
SELECT r.source_id, count(*) FROM governance AS g JOIN raw_events AS r ON r.seq = g.seq
WHERE r.received_at >= ? AND (g.status = 'blocked' OR g.released_at IS NOT NULL) GROUP BY r.source_id"""
_DUPLICATES = (
    "SELECT source_id, sum(lines), sum(lines - stored) FROM load_stats WHERE loaded_at >= ? GROUP BY source_id"
)
_REJECTED = """
SELECT source_id, count(*) FROM rejected_messages WHERE received_at >= ? GROUP BY source_id
UNION ALL
SELECT source_id, count(*) FROM import_rejects WHERE rejected_at >= ? GROUP BY source_id"""


@dataclass
class SourceQuality:
    source_id: str
    name: str
    messages: int
    recent_messages: int
    baseline_daily: float | None
    volume_ratio: float | None
    freshness_seconds: float | None
    validity: float
    completeness: float
    planned: float
    violation_rate: float
    recent_violation_rate: float | None
    baseline_violation_rate: float | None
    blocked: int
    duplicate_rate: float
    rejected_rate: float
    score: int
    alerts: list[str]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _share(part: float, whole: float) -> float:
    return part / whole if whole else 0.0


def quality(
    engine: Engine, *, days: float = 7, source_id: str | None = None, now: datetime | None = None
) -> list[SourceQuality]:
    """The quality of each source (or one) over the last ``days``; raises the alerts it finds (recorded once a day)."""
    now = now or datetime.now(UTC)
    since, recent = now - timedelta(days=days), now - timedelta(days=1)
    sources = engine.fetch_all("SELECT source_id, name, created_at FROM sources ORDER BY name")
    messages = {r[0]: r[1:] for r in engine.fetch_all(_MESSAGES, (recent, since))}
    kinds: dict[tuple[str, str], int] = {(r[0], r[1]): int(r[2]) for r in engine.fetch_all(_VIOLATIONS, (since,))}
    violating = {r[0]: (int(r[1]), int(r[2])) for r in engine.fetch_all(_VIOLATING, (recent, since))}
    flagged = {r[0]: int(r[1]) for r in engine.fetch_all(_FLAGGED_RECORDS, (since,))}
    blocked = {r[0]: int(r[1]) for r in engine.fetch_all(_BLOCKED, (since,))}
    duplicates = {r[0]: (int(r[1]), int(r[2])) for r in engine.fetch_all(_DUPLICATES, (since,))}
    rejected: dict[str, int] = {}
    for sid, n in engine.fetch_all(_REJECTED, (since, since)):
        rejected[sid] = rejected.get(sid, 0) + int(n)

    out = []
    for sid, name, created_at in sources:
        if source_id is not None and sid != source_id:
            continue
        total, recent_n, last = messages.get(sid, (0, 0, None))
        total, recent_n = int(total), int(recent_n)
        older = total - recent_n
        age_days = (now - created_at).total_seconds() / 86_400
        baseline_days = min(days, age_days) - 1
        baseline = older / baseline_days if baseline_days >= 1 else None
        any_v, recent_v = violating.get(sid, (0, 0))
        lines, dups = duplicates.get(sid, (0, 0))
        q = SourceQuality(
            source_id=sid,
            name=name,
            messages=total,
            recent_messages=recent_n,
            baseline_daily=baseline,
            volume_ratio=recent_n / baseline if baseline else None,
            freshness_seconds=(now - last).total_seconds() if last is not None else None,
            validity=1 - _share(kinds.get((sid, "invalid"), 0) + flagged.get(sid, 0), total),
            completeness=1 - _share(kinds.get((sid, "incomplete"), 0), total),
            planned=1 - _share(kinds.get((sid, "unplanned"), 0), total),
            violation_rate=_share(any_v, total),
            recent_violation_rate=_share(recent_v, recent_n) if recent_n else None,
            baseline_violation_rate=_share(any_v - recent_v, older) if older else None,
            blocked=blocked.get(sid, 0),
            duplicate_rate=_share(dups, lines),
            rejected_rate=_share(rejected.get(sid, 0), total + rejected.get(sid, 0)),
            score=0,
            alerts=[],
        )
        q.score = round(
            100
            * (
                WEIGHTS["validity"] * q.validity
                + WEIGHTS["completeness"] * q.completeness
                + WEIGHTS["planned"] * q.planned
                + WEIGHTS["unique"] * (1 - q.duplicate_rate)
                + WEIGHTS["accepted"] * (1 - q.rejected_rate)
                + WEIGHTS["volume"] * (min(1.0, q.volume_ratio) if q.volume_ratio is not None else 1.0)
            )
        )
        q.alerts = _alerts(engine, q, older, now)
        out.append(q)
    return out


def _alerts(engine: Engine, q: SourceQuality, older: int, now: datetime) -> list[str]:
    found: list[tuple[str, float, float, str]] = []
    baseline = q.baseline_daily
    if baseline is not None and baseline >= MIN_MESSAGES and q.recent_messages < VOLUME_DROP * baseline:
        detail = f"{q.recent_messages} messages in the last 24 h against {baseline:.0f} a day before"
        found.append(("volume_drop", q.recent_messages, baseline, detail))
    recent, base = q.recent_violation_rate, q.baseline_violation_rate
    if (
        recent is not None
        and base is not None
        and q.recent_messages >= MIN_MESSAGES
        and older >= MIN_MESSAGES
        and recent > max(VIOLATION_JUMP * base, base + 0.05)
    ):
        detail = f"{recent:.0%} of messages broke the plan in the last 24 h against {base:.0%} before"
        found.append(("violation_jump", recent, base, detail))
    day = now.date()
    for rule, value, baseline, detail in found:
        seen = engine.fetch_one(
            "SELECT count(*) FROM quality_alerts WHERE source_id = ? AND rule = ? AND day = ?", (q.source_id, rule, day)
        )
        if seen and seen[0]:
            continue
        engine.execute(
            "INSERT INTO quality_alerts (source_id, rule, day, value, baseline, detail, raised_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (q.source_id, rule, day, float(value), float(baseline), detail, now),
        )
    return [rule for rule, *_ in found]
