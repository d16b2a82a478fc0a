"""The outbox's state changes, as SQL: claim what is due, settle an attempt, replay, confirm, report.

Every write here runs on the deliverer's one thread (opencdp/activation/delivery.py), so two writers never
race on the same rows; routing (the processor's thread) only inserts new rows and moves offsets.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from opencdp.activation.plugins.base import Outcome
from opencdp.errors import Rejected
from opencdp.model.destinations import DestinationBase
from opencdp.store.engine import Engine

ERROR_CHARS = 500


def claim_sql(destinations: int) -> str:
    """Due pending rows of the given destinations, oldest first, at most ``limit`` per destination, skipping a
    row while an earlier one of the same profile is pending or held (a profile's changes arrive in order).
    Params: now, the destination names, the limit."""
    names = ", ".join("?" * destinations)
    return f"""SELECT delivery_id, destination, idempotency_key, kind, audience, change, cause, profile_id, gseq,
           payload, happened_at, attempts, replays
    FROM (SELECT o.*, row_number() OVER (PARTITION BY o.destination ORDER BY o.delivery_id) AS rn
          FROM outbox AS o
          WHERE o.state = 'pending' AND o.next_at <= ? AND o.destination IN ({names})
            AND NOT EXISTS (SELECT 1 FROM outbox AS e WHERE e.destination = o.destination
                            AND e.profile_id = o.profile_id AND e.delivery_id < o.delivery_id
                            AND e.state IN ('pending', 'held'))) AS due
    WHERE rn <= ?
    ORDER BY destination, delivery_id"""


def backoff(attempt: int, config: DestinationBase, asked: float | None, rng: random.Random) -> float:
    """Seconds before the next attempt: full jitter (uniform up to base * 2^(attempt-1), capped), and never
    sooner than the peer's Retry-After."""
    ceiling = min(config.backoff_cap_seconds, config.backoff_base_seconds * 2 ** min(attempt - 1, 30))
    wait = rng.uniform(0, ceiling)
    return max(wait, asked) if asked is not None else wait


@dataclass(frozen=True)
class Attempted:
    """One finished attempt of a batch."""

    destination: str
    delivery_ids: tuple[int, ...]
    attempts: tuple[int, ...]
    """Each delivery's attempt count before this attempt."""
    outcome: Outcome
    started_at: datetime
    took_ms: float


def settle(engine: Engine, finished: Sequence[tuple[Attempted, DestinationBase]], rng: random.Random) -> list[str]:
    """Record attempts, in one transaction: delivered rows are done (one statement for all of them); after a
    transient failure a row waits its backoff, or goes to the dead letters after ``max_attempts``; after a
    permanent one it goes there at once. Every attempt is appended to ``delivery_attempts``. Returns the state
    each attempt's rows moved to."""
    now = datetime.now(UTC)
    states: list[str] = []
    delivered: list[int] = []
    log: dict[str, list[Any]] = {k: [] for k in ("delivery_id", "destination", "attempt", "outcome", "error",
                                                 "started_at", "took_ms")}  # fmt: skip
    with engine.transaction():
        for done, config in finished:
            ids = list(done.delivery_ids)
            error = None if done.outcome.error is None else done.outcome.error[:ERROR_CHARS]
            attempt = max(done.attempts) + 1
            if done.outcome.status == "delivered":
                states.append("done")
                delivered.extend(ids)
            elif done.outcome.status == "transient" and attempt < config.max_attempts:
                states.append("pending")
                wait = backoff(attempt, config, done.outcome.retry_after, rng)
                engine.execute(f"""UPDATE outbox SET attempts = attempts + 1, next_at = ?, last_error = ?
                                   WHERE delivery_id IN ({_marks(ids)})""",
                               (now + timedelta(seconds=wait), error, *ids))  # fmt: skip
            else:
                states.append("dead")
                why = (error or "refused") if done.outcome.status == "permanent" else (
                    f"gave up after {attempt} attempts: {error}")  # fmt: skip
                engine.execute(f"""UPDATE outbox SET state = 'dead', attempts = attempts + 1, last_error = ?
                                   WHERE delivery_id IN ({_marks(ids)})""", (why[:ERROR_CHARS], *ids))  # fmt: skip
            for delivery_id, before in zip(ids, done.attempts, strict=True):
                for key, value in (("delivery_id", delivery_id), ("destination", done.destination),
                                   ("attempt", before + 1), ("outcome", done.outcome.status), ("error", error),
                                   ("started_at", done.started_at), ("took_ms", done.took_ms)):  # fmt: skip
                    log[key].append(value)
        if delivered:
            engine.execute(f"""UPDATE outbox SET state = 'done', attempts = attempts + 1, delivered_at = ?,
                               last_error = NULL WHERE delivery_id IN ({_marks(delivered)})""",
                           (now, *delivered))  # fmt: skip
        engine.append("delivery_attempts", pa.table({
            "delivery_id": pa.array(log["delivery_id"], pa.int64()),
            "destination": pa.array(log["destination"], pa.string()),
            "attempt": pa.array(log["attempt"], pa.int32()),
            "outcome": pa.array(log["outcome"], pa.string()),
            "error": pa.array(log["error"], pa.string()),
            "started_at": pa.array(log["started_at"], pa.timestamp("us", tz="UTC")),
            "took_ms": pa.array(log["took_ms"], pa.float64()),
        }))  # fmt: skip
    return states


def _marks(ids: Sequence[int]) -> str:
    return ", ".join("?" * len(ids))


def replay(engine: Engine, destination: str, *, dead: bool, since: datetime | None, until: datetime | None) -> int:
    """Send deliveries again: the dead letters (each once: a replayed letter is pending, no longer dead) or
    everything delivered or dead that was routed in ``[since, until)``. Returns how many."""
    where, params = ["destination = ?"], [destination]
    if dead:
        where.append("state = 'dead'")
    else:
        if since is None or until is None or since >= until:
            raise Rejected("a time-range replay needs since < until", code="bad_range")
        where.append("state IN ('done', 'dead')")
    if since is not None:
        where.append("happened_at >= ?")
        params.append(since)  # type: ignore[arg-type]
    if until is not None:
        where.append("happened_at < ?")
        params.append(until)  # type: ignore[arg-type]
    return engine.execute_changed(
        f"""UPDATE outbox SET state = 'pending', attempts = 0, next_at = ?, replays = replays + 1, last_error = NULL,
            delivered_at = NULL WHERE {" AND ".join(where)}""",
        (datetime.now(UTC), *params),
    )


def confirm(engine: Engine, destination: str, *, discard: bool) -> int:
    """Release a destination's held syncs (or discard them, as dead letters an operator can still replay)."""
    if discard:
        return engine.execute_changed(
            """UPDATE outbox SET state = 'dead', last_error = 'held sync discarded by an operator'
               WHERE destination = ? AND state = 'held'""",
            (destination,),
        )
    return engine.execute_changed(
        "UPDATE outbox SET state = 'pending', next_at = ? WHERE destination = ? AND state = 'held'",
        (datetime.now(UTC), destination),
    )


def forget_delivered(engine: Engine, before: datetime) -> int:
    """Remove delivered rows (and their attempts) delivered before ``before``; returns how many. The newest row
    stays whatever its age: delivery ids are numbered from the largest one and must never be given again (a
    files destination names its files by them)."""
    old = "state = 'done' AND delivered_at < ? AND delivery_id < (SELECT max(delivery_id) FROM outbox)"
    with engine.transaction():
        engine.execute(
            f"DELETE FROM delivery_attempts WHERE delivery_id IN (SELECT delivery_id FROM outbox WHERE {old})",
            (before,),
        )
        return engine.execute_changed(f"DELETE FROM outbox WHERE {old}", (before,))


def status(engine: Engine, names: Sequence[str]) -> list[dict[str, Any]]:
    """Per destination: deliveries by state, the oldest pending one, the last delivery, the last errors."""
    counts = {
        (r[0], r[1]): (int(r[2]), r[3])
        for r in engine.fetch_all(
            "SELECT destination, state, count(*), min(created_at) FROM outbox GROUP BY destination, state"
        )
    }
    last = dict(engine.fetch_all("SELECT destination, max(delivered_at) FROM outbox GROUP BY destination"))
    errors: dict[str, list[dict[str, Any]]] = {}
    for dest, delivery_id, attempt, outcome, error, at in engine.fetch_all(
        """SELECT destination, delivery_id, attempt, outcome, error, started_at FROM (
               SELECT *, row_number() OVER (PARTITION BY destination ORDER BY started_at DESC) AS rn
               FROM delivery_attempts WHERE outcome <> 'delivered') AS a
           WHERE rn <= 5 ORDER BY destination, started_at DESC"""
    ):
        errors.setdefault(dest, []).append(
            {"delivery_id": delivery_id, "attempt": attempt, "outcome": outcome, "error": error, "at": _iso(at)}
        )
    out = []
    for name in names:
        by_state = {s: counts.get((name, s), (0, None))[0] for s in ("pending", "held", "done", "dead")}
        oldest = counts.get((name, "pending"), (0, None))[1]
        out.append({"destination": name, **by_state, "oldest_pending": _iso(oldest),
                    "last_delivered": _iso(last.get(name)), "last_errors": errors.get(name, [])})  # fmt: skip
    return out


def deliveries(engine: Engine, destination: str, state: str | None, limit: int) -> list[dict[str, Any]]:
    """A destination's deliveries, newest first (``state`` filters), with attempts and the last error."""
    where, params = "destination = ?", [destination]
    if state is not None:
        where += " AND state = ?"
        params.append(state)
    rows = engine.fetch_all(
        f"""SELECT delivery_id, idempotency_key, kind, audience, change, profile_id, state, attempts, replays,
                   next_at, created_at, delivered_at, last_error
            FROM outbox WHERE {where} ORDER BY delivery_id DESC LIMIT ?""",
        (*params, limit),
    )
    keys = ("delivery_id", "idempotency_key", "kind", "audience", "change", "profile_id", "state", "attempts",
            "replays", "next_at", "created_at", "delivered_at", "last_error")  # fmt: skip
    return [{k: _iso(v) for k, v in zip(keys, r, strict=True)} for r in rows]


def _iso(value: object) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value
