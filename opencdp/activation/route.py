"""Routing: audience changes and governed events into each destination's outbox, set-based, once per cycle.

The processor calls :func:`route` after profiles and segments. Each destination reads its streams by offset
(``destination_offsets``): an audience's first sync is its current members (``audience_members``), then its
entries and exits from ``audience_changes`` (diffs, never full lists); an event name's rows come from the
``governed`` view. Every routed change becomes one outbox row with an idempotency key derived from what it
is (``<destination>:change:<change_seq>``, ``<destination>:event:<gseq>``,
``<destination>:sync:<audience>:<profile>:<change_seq at the sync>``), inserted in the same transaction that
moves the offset: a crash routes a change again or not at all, never twice.

A sync that would add or remove more than a destination's ``confirm_above`` profiles (or more than its
``confirm_above_share`` of all profiles) is held (``state = 'held'``) until an operator confirms it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

from opencdp.model.destinations import Destination
from opencdp.store.engine import Engine
from opencdp.store.raw_log import RawLog

COLUMNS = (
    "delivery_id, destination, idempotency_key, kind, audience, change, cause, profile_id, gseq, payload, "
    "happened_at, state, attempts, next_at, created_at, delivered_at, last_error, replays"
)
JOURNEYS = "activation:journeys"
"""The consumer offset of journeys' messages (``journey_sends.send_seq``)."""
SHARE_FROM_PROFILES = 100
"""The share threshold applies once the workspace has this many profiles (a tiny one would hold every sync)."""


def first_sync_sql() -> str:
    """Current members of newly subscribed audiences (offset NULL), as entries. Params: base id, upto, now."""
    return f"""INSERT INTO outbox ({COLUMNS})
    SELECT ? + row_number() OVER (ORDER BY o.destination, m.audience, m.profile_id), o.destination,
           o.destination || ':sync:' || m.audience || ':' || m.profile_id || ':' || CAST(? AS VARCHAR),
           'audience', m.audience, 'entered', 'first_sync', m.profile_id, NULL, NULL, m.since,
           'pending', 0, ?, ?, NULL, NULL, 0
    FROM destination_offsets AS o
    JOIN audience_members AS m ON o.stream = 'audience:' || m.audience
    WHERE o.upto IS NULL"""


def changes_sql() -> str:
    """Entries and exits after each audience stream's offset, up to a high-water mark. Params: base id, now,
    now, upto."""
    return f"""INSERT INTO outbox ({COLUMNS})
    SELECT ? + row_number() OVER (ORDER BY c.change_seq, o.destination), o.destination,
           o.destination || ':change:' || CAST(c.change_seq AS VARCHAR),
           'audience', c.audience, c.change, c.cause, c.profile_id, NULL, NULL, c.happened_at,
           'pending', 0, ?, ?, NULL, NULL, 0
    FROM destination_offsets AS o
    JOIN audience_changes AS c ON o.stream = 'audience:' || c.audience
    WHERE o.upto IS NOT NULL AND c.change_seq > o.upto AND c.change_seq <= ?"""


def events_sql() -> str:
    """Governed ``track`` events after each event stream's offset, with the profile they belong to. Params:
    base id, now, now, upto."""
    return f"""INSERT INTO outbox ({COLUMNS})
    SELECT ? + row_number() OVER (ORDER BY g.gseq, o.destination), o.destination,
           o.destination || ':event:' || CAST(g.gseq AS VARCHAR),
           'event', NULL, NULL, NULL, m.profile_id, g.gseq, NULL, coalesce(g.timestamp, g.received_at),
           'pending', 0, ?, ?, NULL, NULL, 0
    FROM destination_offsets AS o
    JOIN governed AS g ON o.stream = 'event:' || g.event
    LEFT JOIN message_identities AS mi ON mi.seq = g.seq
    LEFT JOIN identity_membership AS m ON m.node_id = mi.node_id
    WHERE g.type = 'track' AND o.upto IS NOT NULL AND g.gseq > o.upto AND g.gseq <= ?"""


def journey_messages_sql() -> str:
    """Messages journeys sent after the offset, each to the destination it names (one that does not exist is
    dead-lettered with the reason: replayed once the destination is added). Params: base id, now, now, from,
    upto."""
    return f"""INSERT INTO outbox ({COLUMNS})
    SELECT ? + row_number() OVER (ORDER BY s.send_seq), s.destination,
           s.destination || ':journey:' || CAST(s.send_seq AS VARCHAR),
           'message', NULL, NULL, NULL, s.profile_id, NULL, s.payload, s.created_at,
           CASE WHEN d.name IS NULL THEN 'dead' ELSE 'pending' END, 0, ?, ?, NULL,
           CASE WHEN d.name IS NULL THEN 'no destination is named ' || s.destination END, 0
    FROM journey_sends AS s LEFT JOIN destinations AS d ON d.name = s.destination
    WHERE s.send_seq > ? AND s.send_seq <= ?"""


def routed_sizes_sql() -> str:
    """What this cycle routed per destination and audience (rows above a base id), and whether that destination
    and audience already has a held sync (later changes wait behind it)."""
    return """SELECT r.destination, r.audience, count(*) AS n,
           (SELECT count(*) FROM outbox AS h WHERE h.destination = r.destination AND h.audience = r.audience
            AND h.state = 'held' AND h.delivery_id <= ?) AS behind_held
    FROM outbox AS r
    WHERE r.delivery_id > ? AND r.kind = 'audience'
    GROUP BY r.destination, r.audience"""


@dataclass
class Routed:
    first_sync: int = 0
    changes: int = 0
    events: int = 0
    messages: int = 0
    """Journeys' messages."""
    held: dict[str, int] = field(default_factory=dict)
    """Held syncs by ``destination/audience``, with their sizes."""

    @property
    def total(self) -> int:
        return self.first_sync + self.changes + self.events + self.messages


def _next_id(engine: Engine) -> int:
    row = engine.fetch_one("SELECT coalesce(max(delivery_id), 0) FROM outbox")
    return int(row[0]) if row else 0


def route(engine: Engine, destinations: Callable[[], dict[str, Destination]]) -> Routed:
    """Route everything new to the outboxes of every destination (a disabled one's deliveries wait in its outbox
    until it is enabled); ``destinations`` gives their hold thresholds (asked only when something is routed).
    Returns what was routed."""
    done = Routed()
    e = engine
    marks = e.fetch_one(
        """SELECT (SELECT coalesce(max(change_seq), 0) FROM audience_changes),
                  (SELECT coalesce(max(gseq), 0) FROM governance),
                  (SELECT coalesce(min(coalesce(upto, -1)), 0) FROM destination_offsets
                   WHERE starts_with(stream, 'audience:')),
                  (SELECT coalesce(min(upto), 0) FROM destination_offsets WHERE starts_with(stream, 'event:')),
                  (SELECT count(*) FROM destination_offsets),
                  (SELECT coalesce(max(send_seq), 0) FROM journey_sends),
                  (SELECT coalesce(max(seq), 0) FROM consumer_offsets WHERE consumer = ?)""",
        (JOURNEYS,),
    )
    assert marks is not None
    changes_upto, gseq_upto, audience_from, events_from, streams, sends_upto, sends_from = (int(v) for v in marks)
    streams_due = streams and (audience_from < changes_upto or events_from < gseq_upto)
    if not streams_due and sends_from >= sends_upto:
        return done
    now = datetime.now(UTC)
    with e.transaction():
        start = _next_id(e)
        if sends_from < sends_upto:
            done.messages = e.execute_changed(journey_messages_sql(), (start, now, now, sends_from, sends_upto))
            RawLog(e).commit(JOURNEYS, sends_upto)
            start = _next_id(e)
        if not streams_due:
            return done
        if audience_from < 0:
            done.first_sync = e.execute_changed(first_sync_sql(), (start, changes_upto, now, now))
            e.execute("UPDATE destination_offsets SET upto = ? WHERE upto IS NULL AND starts_with(stream, 'audience:')",
                      (changes_upto,))  # fmt: skip
        if audience_from < changes_upto:
            done.changes = e.execute_changed(changes_sql(), (_next_id(e), now, now, changes_upto))
            e.execute("UPDATE destination_offsets SET upto = ? WHERE starts_with(stream, 'audience:') AND upto < ?",
                      (changes_upto, changes_upto))  # fmt: skip
        if events_from < gseq_upto:
            done.events = e.execute_changed(events_sql(), (_next_id(e), now, now, gseq_upto))
            e.execute("UPDATE destination_offsets SET upto = ? WHERE starts_with(stream, 'event:') AND upto < ?",
                      (gseq_upto, gseq_upto))  # fmt: skip
        _hold_broad_syncs(e, destinations(), start, done)
    return done


def _hold_broad_syncs(engine: Engine, destinations: dict[str, Destination], start: int, done: Routed) -> None:
    sizes = engine.fetch_all(routed_sizes_sql(), (start, start))
    if not sizes:
        return
    row = engine.fetch_one("SELECT count(*) FROM profiles_index")
    profiles = int(row[0]) if row else 0
    for name, audience, n, behind_held in sizes:
        dest = destinations.get(name)
        if dest is None:
            continue
        too_many = dest.confirm_above is not None and n > dest.confirm_above
        too_broad = (dest.confirm_above_share is not None and profiles >= SHARE_FROM_PROFILES
                     and n > dest.confirm_above_share * profiles)  # fmt: skip
        if too_many or too_broad or behind_held:
            engine.execute(
                "UPDATE outbox SET state = 'held' WHERE delivery_id > ? AND destination = ? AND audience = ?",
                (start, name, audience),
            )
            done.held[f"{name}/{audience}"] = int(n)
