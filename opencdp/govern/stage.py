"""The governance stage: consumes the raw log from its offset, records violations, holds what plans block.

Every raw-log row gets a ``governance`` row: ``passed``, ``flagged`` or ``blocked``. What is not blocked
enters the governed stream (the ``governed`` view, ordered by ``gseq``) that later stages consume; what is
blocked waits in the ``quarantine`` until :meth:`Governance.release` re-checks it against the current plans
and lets through what now passes, each message once. All of it is set-based SQL built by
:mod:`opencdp.govern.plans`; micro-batches and the offset commit share one transaction, so a crash re-runs a
batch rather than half of one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pyarrow as pa

from opencdp.govern.pii import classified, patches
from opencdp.govern.plans import (
    INFER_IDENTIFY,
    INFER_TRACK,
    lit,
    schema_from_observations,
    status_case,
    violations_query,
)
from opencdp.govern.transforms import transformed
from opencdp.model.plans import TrackingPlan
from opencdp.store.engine import Engine
from opencdp.store.plans import PiiStore, PlanStore, TransformStore
from opencdp.store.raw_log import RawLog

CONSUMER = "govern"
BATCH_ROWS = 100_000
_RAW = "SELECT seq, source_id, type, event, message FROM raw_events"


@dataclass(frozen=True)
class Released:
    released: int
    still_held: int


class Governance:
    def __init__(self, engine: Engine, raw_log: RawLog) -> None:
        self.engine = engine
        self.raw_log = raw_log
        self.plans = PlanStore(engine)
        self.transforms = TransformStore(engine)
        self.pii = PiiStore(engine)
        self._salt: str | None = None

    def run(self) -> int:
        """Govern every raw-log row after the stage's offset; returns how many rows were governed."""
        total = 0
        while True:
            last, end = self.raw_log.offset(CONSUMER), self.raw_log.last_seq()
            if end <= last:
                return total
            upto = min(end, last + BATCH_ROWS)
            self._govern(last, upto)
            total += upto - last

    def _govern(self, last: int, upto: int) -> None:
        stored = self.plans.all()
        plans = {s: plan for s, (plan, _) in stored.items()}
        rules, _ = self.transforms.get()
        batch = transformed(rules, f"{_RAW} WHERE seq > {int(last)} AND seq <= {int(upto)}")
        found = f"(SELECT seq, rule FROM violations WHERE seq > {int(last)} AND seq <= {int(upto)})"
        now = datetime.now(UTC)
        with self.engine.transaction(serial="governed"):
            if rules.rules:  # the transformed rows are read three times: compute them once
                self.engine.execute(f"CREATE TEMP TABLE IF NOT EXISTS _cdp_batch AS {_RAW} WHERE FALSE")
                self.engine.execute("DELETE FROM _cdp_batch")
                self.engine.execute(f"INSERT INTO _cdp_batch {batch}")
                batch = "SELECT seq, source_id, type, event, message FROM _cdp_batch"
            self._classify(batch)
            self.engine.execute(
                "INSERT INTO pii_observations (source_id, container, field, class, detected_by, action, values_seen, "
                "seen_at) SELECT source_id, container, field, class, detected_by, action, count(*), ? "
                "FROM _cdp_pii_values GROUP BY source_id, container, field, class, detected_by, action",
                (now,),
            )
            self._record_violations(stored, batch, now)
            self._withhold_pii_details("violations", f"seq > {int(last)} AND seq <= {int(upto)}")
            self.engine.execute(
                f"""INSERT INTO governance (seq, source_id, status, gseq, governed_at, type, event, message)
                SELECT seq, source_id, status,
                       CASE WHEN status <> 'blocked' THEN base.n + row_number() OVER (
                           PARTITION BY status = 'blocked' ORDER BY seq) END,
                       ?, t_type, t_event, t_message
                FROM ({_statuses(plans, batch, found)}) AS x
                CROSS JOIN (SELECT coalesce(max(gseq), 0) AS n FROM governance) AS base""",
                (now,),
            )
            self.raw_log.commit(CONSUMER, upto)

    def _classify(self, batch: str) -> None:
        """Classify the fields of ``batch`` into the temporary table ``_cdp_pii_values`` (see govern/pii.py)."""
        if self._salt is None:
            self._salt = self.pii.salt()
        policy, _ = self.pii.get()
        self.engine.execute(
            "CREATE TEMP TABLE IF NOT EXISTS _cdp_pii_values (seq BIGINT, source_id VARCHAR, container VARCHAR, "
            "field VARCHAR, class VARCHAR, detected_by VARCHAR, action VARCHAR, new_value VARCHAR)"
        )
        self.engine.execute("DELETE FROM _cdp_pii_values")
        self.engine.execute(f"INSERT INTO _cdp_pii_values {classified(policy, self._salt, batch)}")

    def _withhold_pii_details(self, table: str, where: str) -> None:
        """A violation's detail is the value that broke the rule: not when the policy masks, hashes or drops it."""
        self.engine.execute(
            f"UPDATE {table} SET detail = '[withheld: pii]' WHERE {where} AND EXISTS (SELECT 1 FROM _cdp_pii_values "
            f"AS p WHERE p.seq = {table}.seq AND p.field = {table}.property AND p.action <> 'keep')"
        )

    def _record_violations(
        self, stored: dict[str, tuple[TrackingPlan, int]], batch: str, now: datetime, into: str = "violations"
    ) -> None:
        query = violations_query({s: plan for s, (plan, _) in stored.items()}, batch)
        if query is None:
            return
        versions = " ".join(f"WHEN {lit(s)} THEN {int(v)}" for s, (_, v) in sorted(stored.items()))
        self.engine.execute(
            f"INSERT INTO {into} (seq, source_id, event, property, rule, detail, plan_version, found_at) "
            f"SELECT seq, source_id, event, property, rule, detail, CASE source_id {versions} END, ? "
            f"FROM ({query}) AS v",
            (now,),
        )

    def release(self, source_id: str | None = None, event: str | None = None) -> Released:
        """Re-check held messages against the current plans; those that pass now enter the governed stream.

        A message is released at most once (its status moves from ``blocked`` to ``released`` in the same
        statement that numbers it into the stream). A released message keeps the violations that held it (its
        history); one still held gets the reasons of this check instead of the old ones.
        """
        stored = self.plans.all()
        plans = {s: plan for s, (plan, _) in stored.items()}
        where = ["g.status = 'blocked'"]
        if source_id is not None:
            where.append(f"r.source_id = {lit(source_id)}")
        if event is not None:
            where.append(f"r.event = {lit(event)}")
        rules, _ = self.transforms.get()
        held = transformed(
            rules,
            "SELECT r.seq, r.source_id, r.type, r.event, r.message FROM raw_events AS r "
            f"JOIN governance AS g ON g.seq = r.seq WHERE {' AND '.join(where)}",
        )
        still_held = "(SELECT seq FROM _cdp_held WHERE status = 'blocked')"
        now = datetime.now(UTC)
        with self.engine.transaction(serial="governed"):
            self.engine.execute(
                "CREATE TEMP TABLE IF NOT EXISTS _cdp_held "
                "(seq BIGINT, source_id VARCHAR, status VARCHAR, t_type VARCHAR, t_event VARCHAR, t_message JSON)"
            )
            self.engine.execute(
                "CREATE TEMP TABLE IF NOT EXISTS _cdp_recheck (seq BIGINT, source_id VARCHAR, event VARCHAR, "
                "property VARCHAR, rule VARCHAR, detail VARCHAR, plan_version BIGINT, found_at TIMESTAMPTZ)"
            )
            self.engine.execute("DELETE FROM _cdp_held")
            self.engine.execute("DELETE FROM _cdp_recheck")
            self._classify(held)
            self._record_violations(stored, held, now, into="_cdp_recheck")
            self._withhold_pii_details("_cdp_recheck", "TRUE")
            self.engine.execute(f"INSERT INTO _cdp_held {_statuses(plans, held, '_cdp_recheck')}")
            self.engine.execute(
                """UPDATE governance SET status = 'released', gseq = n.gseq, released_at = ?,
                       type = n.t_type, event = n.t_event, message = n.t_message
                FROM (SELECT seq, t_type, t_event, t_message, base.n + row_number() OVER (ORDER BY seq) AS gseq
                      FROM _cdp_held
                      CROSS JOIN (SELECT coalesce(max(gseq), 0) AS n FROM governance) AS base
                      WHERE status <> 'blocked') AS n
                WHERE governance.seq = n.seq AND governance.status = 'blocked'""",
                (now,),
            )
            self.engine.execute(f"DELETE FROM violations WHERE seq IN {still_held}")
            self.engine.execute(f"INSERT INTO violations SELECT * FROM _cdp_recheck WHERE seq IN {still_held}")
            counts = self.engine.fetch_one(
                "SELECT count(*) FILTER (WHERE status <> 'blocked'), count(*) FILTER (WHERE status = 'blocked') "
                "FROM _cdp_held"
            )
            self.engine.execute("DELETE FROM _cdp_held")
            self.engine.execute("DELETE FROM _cdp_recheck")
        assert counts is not None
        return Released(int(counts[0]), int(counts[1]))

    def violation_counts(self, source_id: str | None = None) -> pa.Table:
        where, params = ("WHERE source_id = ?", (source_id,)) if source_id else ("", ())
        return self.engine.fetch_arrow(
            "SELECT source_id, event, property, rule, count(*) AS count, max(found_at) AS last_seen "
            f"FROM violations {where} GROUP BY source_id, event, property, rule ORDER BY count DESC, event, rule",
            params,
        )

    def held(self, source_id: str | None = None, limit: int = 100) -> pa.Table:
        where, params = ("WHERE source_id = ?", (source_id, limit)) if source_id else ("", (limit,))
        return self.engine.fetch_arrow(
            f"SELECT seq, source_id, type, event, message_id, received_at, reasons FROM quarantine {where} "
            "ORDER BY seq LIMIT ?",
            params,
        )

    def infer(self, source_id: str, *, days: float = 30) -> TrackingPlan:
        """A draft plan from the source's observed traffic (the last ``days``), to edit before saving."""
        since = datetime.now(UTC) - timedelta(days=days)
        rows = self.engine.fetch_all(INFER_TRACK, (source_id, since))
        by_event: dict[str, list[tuple[str | None, str | None, int, int]]] = {}
        for event, key, kind, count, n in rows:
            by_event.setdefault(event, []).append((key, kind, int(count), int(n)))
        events = {event: schema_from_observations(obs) for event, obs in sorted(by_event.items())}
        traits = [
            (k, kind, int(c), int(n)) for _, k, kind, c, n in self.engine.fetch_all(INFER_IDENTIFY, (source_id, since))
        ]
        identify = schema_from_observations(traits) if traits and traits[0][3] else None
        return TrackingPlan(events=events, identify=identify)


def _statuses(plans: dict[str, TrackingPlan], batch: str, found: str) -> str:
    """Each row of ``batch`` (transformed) with its status and what transformations and the PII policy changed
    (else NULL); the PII patches come from ``_cdp_pii_values`` (:meth:`Governance._classify` fills it)."""
    return f"""SELECT b.seq, b.source_id, {status_case(plans, found)} AS status,
               CASE WHEN b.type <> r.type THEN b.type END AS t_type,
               CASE WHEN b.event IS DISTINCT FROM r.event THEN b.event END AS t_event,
               CASE WHEN p.patch IS NOT NULL THEN cdp_json_merge_patch(b.message, CAST(p.patch AS JSON))
                    WHEN CAST(b.message AS VARCHAR) <> CAST(r.message AS VARCHAR) THEN b.message END AS t_message
        FROM ({batch}) AS b JOIN raw_events AS r ON r.seq = b.seq
        LEFT JOIN ({patches("SELECT * FROM _cdp_pii_values")}) AS p ON p.seq = b.seq"""
