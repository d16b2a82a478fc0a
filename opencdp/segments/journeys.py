"""Journeys: per-profile state machines driven by the processor, set-based, one cycle at a time.

Each cycle (after the segments stage, in one transaction with the journeys' offsets):

1. the governed events identity has resolved since the journeys' offset, of the names some journey triggers on
   or exits on, and the audience entries since the change-log offset, are read once into working tables;
2. trigger events enter profiles that are not in the journey already and are under its frequency cap (an entry
   keeps every trigger event that arrives while it is active: an abandoned cart collects its products);
3. a profile in a journey that did one of its ``exit_on`` events after entering leaves it (``exited``), also
   when both came in the same batch;
4. every active entry whose step is due is moved on, step by step, until none is due: a wait pushes its due
   time forward; a branch evaluates its condition (the audience compiler, for those profiles only); a send
   writes a message to ``journey_sends`` (which activation delivers); a trait setting becomes a trait
   observation of the profile (source ``journey``), which the next profiles cycle makes part of its golden
   record. After the last step the entry is ``done``.

State lives in the engine (``journey_states``), so journeys survive restarts: a wait due while the server was
down is done at the first cycle after it starts.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from opencdp.errors import Rejected
from opencdp.govern.plans import lit
from opencdp.model.audiences import AudienceDefinition
from opencdp.model.journeys import Branch, JourneyDefinition, Send, SetTrait, Wait, flatten
from opencdp.model.validation import parse_document
from opencdp.profiles.traits import property_condition
from opencdp.segments.compile import Sources, compiled
from opencdp.segments.stage import Segments
from opencdp.store.engine import Engine
from opencdp.store.plans import JourneyStore
from opencdp.store.raw_log import RawLog

EVENTS_CONSUMER = "journeys"
CHANGES_CONSUMER = "journeys:audiences"
AFTER = "profiles"
_TEMP = {
    "_jr_events": "seq BIGINT, profile_id VARCHAR, name VARCHAR, ts TIMESTAMPTZ, props JSON",
    "_jr_entries": "profile_id VARCHAR, seq BIGINT, ts TIMESTAMPTZ",
    "_jr_due": "journey VARCHAR, entry BIGINT, profile_id VARCHAR, step INTEGER, due_at TIMESTAMPTZ",
    "_jr_yes": "entry BIGINT",
}
Clock = Callable[[], datetime]


@dataclass(frozen=True)
class Progress:
    entered: int
    exited: int
    steps: int
    """Steps taken (a wait, a branch, a send, a trait each count one)."""
    sent: int


class Journeys:
    def __init__(self, engine: Engine, raw_log: RawLog, segments: Segments, clock: Clock | None = None) -> None:
        self.engine = engine
        self.raw_log = raw_log
        self.segments = segments
        self.clock: Clock = clock or (lambda: datetime.now(UTC))
        self.store = JourneyStore(engine)
        self._cache: tuple[tuple[int, object], dict[str, tuple[JourneyDefinition, int]]] | None = None

    # ------------------------------------------------------------------------------------------- definitions

    def definitions(self) -> dict[str, tuple[JourneyDefinition, int]]:
        """Saved journeys and their versions (read again only when one was saved or deleted)."""
        stamp = self.store.stamp()
        if self._cache is None or self._cache[0] != stamp:
            self._cache = (stamp, self.store.all())
        return self._cache[1]

    def checked(self, doc: object) -> JourneyDefinition:
        """A definition from a document, checked: its audiences, traits, events and destinations must exist."""
        journey = parse_document(JourneyDefinition, doc, "journey", "bad_journey")
        ws = self.segments.workspace(fresh=True)  # saved rarely: against the data as it is now
        if journey.trigger.audience is not None and journey.trigger.audience not in ws.audiences:
            raise Rejected(f"trigger: there is no audience {journey.trigger.audience!r}", code="bad_journey")
        for name in [journey.trigger.event, *journey.exit_on]:
            if name is not None and ws.events is not None and name not in ws.events:
                raise Rejected(f"no event named {name!r} was ever received (nor is it in a tracking plan)",
                               code="bad_journey")  # fmt: skip
        known = {str(r[0]) for r in self.engine.fetch_all("SELECT name FROM destinations")}
        for i, (step, _, _) in enumerate(flatten(journey.steps)):
            if isinstance(step, Send) and step.send.destination not in known:
                raise Rejected(f"step {i}: there is no destination named {step.send.destination!r} "
                               "(add it first: opencdp destinations add)", code="bad_journey")  # fmt: skip
            if isinstance(step, Branch):
                try:
                    self.segments.checked({"name": journey.name, "where": step.if_})
                except Rejected as exc:
                    raise Rejected(f"step {i}: {exc.message}", code="bad_journey") from None
        return journey

    def save(self, journey: JourneyDefinition) -> dict[str, Any]:
        """Save (or replace) a journey. Profiles in it stay at their step (a step that no longer exists ends
        their entry). A journey reacts to what arrives after it is first saved."""
        e = self.engine
        with e.transaction():
            if e.fetch_one("SELECT 1 FROM journeys LIMIT 1") is None:  # start from now, not from the history
                self.raw_log.commit(EVENTS_CONSUMER, self.raw_log.offset(AFTER))
                top = e.fetch_one("SELECT coalesce(max(change_seq), 0) FROM audience_changes")
                self.raw_log.commit(CHANGES_CONSUMER, int(top[0]) if top else 0)
            version = self.store.put(journey)
        return {"name": journey.name, "version": version}

    def delete(self, name: str) -> dict[str, Any]:
        """Remove a journey; its active entries end (``exited``)."""
        e = self.engine
        with e.transaction():
            if not self.store.delete(name):
                raise Rejected(f"there is no journey {name!r}", code="unknown_journey", status=404)
            ended = e.execute_changed("UPDATE journey_states SET status = 'exited', updated_at = ? "
                                      "WHERE journey = ? AND status = 'active'", (self.clock(), name))  # fmt: skip
        return {"deleted": name, "ended": ended}

    def summary(self) -> list[dict[str, Any]]:
        """Every journey with how many profiles are in it, done and exited."""
        counts = {(str(j), str(s)): int(n) for j, s, n in self.engine.fetch_all(
            "SELECT journey, status, count(*) FROM journey_states GROUP BY journey, status")}  # fmt: skip
        sent = dict(self.engine.fetch_all("SELECT journey, count(*) FROM journey_sends GROUP BY journey"))
        return [
            {"name": name, "version": version, "description": j.description,
             "trigger": j.trigger.model_dump(exclude_defaults=True), "active": counts.get((name, "active"), 0),
             "done": counts.get((name, "done"), 0), "exited": counts.get((name, "exited"), 0),
             "sent": int(sent.get(name, 0))}
            for name, (j, version) in sorted(self.definitions().items())
        ]  # fmt: skip

    # ----------------------------------------------------------------------------------------------- running

    def run(self) -> Progress:
        """One cycle: read what arrived, exit, enter, and move every due entry on."""
        journeys = {name: j for name, (j, _) in self.definitions().items()}
        if not journeys:
            return Progress(0, 0, 0, 0)
        e = self.engine
        now = self.clock()
        with e.transaction():
            e.scratch(_TEMP)
            self._read(journeys)
            entered = sum(self._enter(name, j, now) for name, j in journeys.items())
            exited = sum(self._exit(name, j) for name, j in journeys.items())  # after entering: same-batch exits
            self._follow_merges()
            steps, sent = self._advance(journeys, now)
        return Progress(entered, exited, steps, sent)

    def _read(self, journeys: dict[str, JourneyDefinition]) -> None:
        """The events since the offset that some journey triggers or exits on, and the audience entries."""
        e = self.engine
        last, upto = self.raw_log.offset(EVENTS_CONSUMER), self.raw_log.offset(AFTER)
        names = sorted({n for j in journeys.values() for n in [j.trigger.event, *j.exit_on] if n is not None})
        if upto > last and names:
            e.execute(
                f"""INSERT INTO _jr_events (seq, profile_id, name, ts, props)
                SELECT g.seq, m.profile_id, g.event, g.timestamp, json_extract(g.message, '$.properties')
                FROM governed AS g JOIN message_identities AS mi ON mi.seq = g.seq
                JOIN identity_membership AS m ON m.node_id = mi.node_id
                WHERE g.gseq > {int(last)} AND g.gseq <= {int(upto)} AND g.type = 'track'
                  AND g.event IN ({", ".join(lit(n) for n in names)})"""
            )
        self.raw_log.commit(EVENTS_CONSUMER, max(last, upto))
        audiences = sorted({j.trigger.audience for j in journeys.values() if j.trigger.audience is not None})
        seen = self.raw_log.offset(CHANGES_CONSUMER)
        top = e.fetch_one("SELECT coalesce(max(change_seq), 0) FROM audience_changes")
        newest = int(top[0]) if top else 0
        if audiences and newest > seen:
            e.execute(
                f"""INSERT INTO _jr_events (seq, profile_id, name, ts, props)
                SELECT change_seq, profile_id, 'audience:' || audience, happened_at, NULL FROM audience_changes
                WHERE change_seq > {seen} AND change_seq <= {newest} AND change = 'entered'
                  AND audience IN ({", ".join(lit(a) for a in audiences)})"""
            )
        self.raw_log.commit(CHANGES_CONSUMER, max(seen, newest))

    def _exit(self, name: str, j: JourneyDefinition) -> int:
        if not j.exit_on:
            return 0
        return self.engine.execute_changed(
            f"""UPDATE journey_states SET status = 'exited', updated_at = ?
            WHERE journey = ? AND status = 'active' AND EXISTS (
                SELECT 1 FROM _jr_events AS x WHERE x.profile_id = journey_states.profile_id
                  AND x.name IN ({", ".join(lit(n) for n in j.exit_on)}) AND x.ts >= journey_states.entered_at)""",
            (self.clock(), name),
        )

    def _enter(self, name: str, j: JourneyDefinition, now: datetime) -> int:
        """Enter the profiles that triggered ``j``, are not in it and are under its cap; every trigger event of
        an active entry is kept with it."""
        e = self.engine
        if j.trigger.audience is not None:
            match = f"name = {lit('audience:' + j.trigger.audience)}"
        else:
            filters = [property_condition(c.property, c.op, c.value) for c in j.trigger.where]
            match = " AND ".join([f"name = {lit(j.trigger.event or '')}", *filters])
        cap = ""
        if j.cap is not None:
            cap = f"""AND profile_id NOT IN (SELECT profile_id FROM journey_states WHERE journey = {lit(name)}
                          AND entered_at >= CAST({lit(now.isoformat())} AS TIMESTAMPTZ) - INTERVAL {j.cap.days} DAY
                      GROUP BY profile_id HAVING count(*) >= {j.cap.entries})"""
        e.execute("DELETE FROM _jr_entries")
        e.execute(
            f"""INSERT INTO _jr_entries (profile_id, seq, ts)
            SELECT profile_id, min(seq), min(ts) FROM _jr_events
            WHERE {match} AND profile_id NOT IN (
                SELECT profile_id FROM journey_states WHERE journey = ? AND status = 'active') {cap}
            GROUP BY profile_id"""
            , (name,))  # fmt: skip
        entered = e.execute_changed(
            """INSERT INTO journey_states (journey, profile_id, entry, step, due_at, status, entered_at, updated_at)
            SELECT ?, profile_id, (SELECT coalesce(max(entry), 0) FROM journey_states)
                                  + row_number() OVER (ORDER BY seq), 0, ts, 'active', ts, ?
            FROM _jr_entries""",
            (name, now),
        )
        e.execute(
            f"""INSERT INTO journey_events (journey, entry, seq, name, properties, happened_at)
            SELECT s.journey, s.entry, x.seq, x.name, x.props, x.ts FROM _jr_events AS x
            JOIN journey_states AS s ON s.profile_id = x.profile_id AND s.journey = ? AND s.status = 'active'
            WHERE {match} AND x.ts >= s.entered_at""",
            (name,),
        )
        return entered

    def _follow_merges(self) -> None:
        """An entry of a profile absorbed by a merge continues for the profile that absorbed it (unless that one
        is in the journey already: then the absorbed one's entry ends, ``merged``)."""
        e = self.engine
        e.execute(
            """UPDATE journey_states SET status = 'merged' FROM profile_aliases AS a
            WHERE journey_states.status = 'active' AND journey_states.profile_id = a.alias AND EXISTS (
                SELECT 1 FROM journey_states AS o WHERE o.journey = journey_states.journey
                  AND o.profile_id = a.profile_id AND o.status = 'active')"""
        )
        e.execute(
            """UPDATE journey_states SET profile_id = a.profile_id FROM profile_aliases AS a
            WHERE journey_states.status = 'active' AND journey_states.profile_id = a.alias"""
        )

    def _advance(self, journeys: dict[str, JourneyDefinition], now: datetime) -> tuple[int, int]:
        """Move every due entry on until none is due (at most one pass per step of the longest journey)."""
        e = self.engine
        at = f"CAST({lit(now.isoformat())} AS TIMESTAMPTZ)"
        steps = sent = 0
        plans = {name: flatten(j.steps) for name, j in journeys.items()}
        for _ in range(max(len(p) for p in plans.values()) + 1):
            due = e.fetch_all(f"SELECT DISTINCT journey, step FROM journey_states WHERE status = 'active' "
                              f"AND due_at <= {at} ORDER BY journey, step")  # fmt: skip
            due = [(str(j), int(k)) for j, k in due if str(j) in plans]
            if not due:
                break
            for name, k in due:
                plan = plans[name]
                e.execute("DELETE FROM _jr_due")
                e.execute(f"INSERT INTO _jr_due SELECT journey, entry, profile_id, step, due_at FROM journey_states "
                          f"WHERE journey = ? AND step = ? AND status = 'active' AND due_at <= {at}",
                          (name, k))  # fmt: skip
                if not 0 <= k < len(plan):  # past a final wait, or the journey changed and this step is gone
                    steps += self._move(None, now)
                    continue
                step, follow, otherwise = plan[k]
                if isinstance(step, Wait):
                    e.execute(
                        f"""UPDATE journey_states SET step = ?, updated_at = ?,
                                   due_at = due_at + INTERVAL {step.wait.total_seconds} SECOND
                        WHERE entry IN (SELECT entry FROM _jr_due)""",
                        (follow if follow is not None else -1, now),
                    )
                    steps += len(e.fetch_all("SELECT entry FROM _jr_due"))
                    continue
                if isinstance(step, Send):
                    sent += self._send(name, k, step)
                elif isinstance(step, SetTrait):
                    self._set_trait(name, step)
                elif isinstance(step, Branch):
                    steps += self._branch(name, step, otherwise, now)
                steps += self._move(follow, now, only_yes=isinstance(step, Branch))
        return steps, sent

    def _move(self, follow: int | None, now: datetime, *, only_yes: bool = False) -> int:
        """Move the due entries at step ``k`` to ``follow`` (None: done); for a branch, only those whose
        condition held (the others were moved already)."""
        chosen = "SELECT entry FROM _jr_yes" if only_yes else "SELECT entry FROM _jr_due"
        if follow is None:
            return self.engine.execute_changed(
                f"UPDATE journey_states SET status = 'done', updated_at = ? WHERE entry IN ({chosen})", (now,)
            )
        return self.engine.execute_changed(
            f"UPDATE journey_states SET step = ?, updated_at = ? WHERE entry IN ({chosen})", (follow, now)
        )

    def _branch(self, name: str, step: Branch, otherwise: int | None, now: datetime) -> int:
        """Evaluate the branch's condition for the due entries' profiles: those for whom it holds are kept in
        ``_jr_yes`` (moved on by the caller); the others go to ``otherwise`` now."""
        e = self.engine
        definition = AudienceDefinition(name=name, where=step.if_)  # checked when the journey was saved
        base = "(SELECT * FROM profile_computed WHERE profile_id IN (SELECT profile_id FROM _jr_due))"
        members = compiled(definition, self.segments.compiling(), Sources(base=base), now).members()
        e.execute("DELETE FROM _jr_yes")
        e.execute(f"INSERT INTO _jr_yes SELECT entry FROM _jr_due "
                  f"WHERE profile_id IN (SELECT profile_id FROM ({members}) AS m)")  # fmt: skip
        rest = "SELECT entry FROM _jr_due WHERE entry NOT IN (SELECT entry FROM _jr_yes)"
        if otherwise is None:
            return e.execute_changed(f"UPDATE journey_states SET status = 'done', updated_at = ? WHERE entry IN "
                                     f"({rest})", (now,))  # fmt: skip
        return e.execute_changed(f"UPDATE journey_states SET step = ?, updated_at = ? WHERE entry IN ({rest})",
                                 (otherwise, now))  # fmt: skip

    def _send(self, name: str, k: int, step: Send) -> int:
        """A message per due entry to ``journey_sends``: the journey, the template, the profile's golden traits
        and the events that triggered the entry (an abandoned cart's products)."""
        e = self.engine
        due = e.fetch_all("SELECT entry, profile_id FROM _jr_due ORDER BY entry")
        if not due:
            return 0
        traits: dict[str, dict[str, Any]] = {}
        for pid, trait, value in e.fetch_all(
            "SELECT profile_id, trait, value FROM profile_traits WHERE profile_id IN (SELECT profile_id FROM _jr_due)"
        ):
            traits.setdefault(str(pid), {})[str(trait)] = value
        events: dict[int, list[dict[str, Any]]] = {}
        for entry, ev, props, at in e.fetch_all(
            "SELECT entry, name, properties, happened_at FROM journey_events WHERE journey = ? "
            "AND entry IN (SELECT entry FROM _jr_due) ORDER BY entry, seq",
            (name,),
        ):
            events.setdefault(int(entry), []).append(
                {"event": ev, "properties": json.loads(props) if props else {}, "timestamp": at.isoformat()}
            )
        top = e.fetch_one("SELECT coalesce(max(send_seq), 0) FROM journey_sends")
        first = (int(top[0]) if top else 0) + 1
        now = self.clock()
        payloads = [
            json.dumps({"journey": name, "step": k, "template": step.send.template, "profile_id": str(pid),
                        "traits": traits.get(str(pid), {}), "events": events.get(int(entry), [])},
                       default=str)
            for entry, pid in due
        ]  # fmt: skip
        e.append("journey_sends", pa.table({
            "send_seq": pa.array(range(first, first + len(due)), pa.int64()),
            "journey": pa.array([name] * len(due), pa.string()),
            "entry": pa.array([int(r[0]) for r in due], pa.int64()),
            "step": pa.array([k] * len(due), pa.int32()),
            "profile_id": pa.array([str(r[1]) for r in due], pa.string()),
            "destination": pa.array([step.send.destination] * len(due), pa.string()),
            "payload": pa.array(payloads, pa.string()),
            "created_at": pa.array([now] * len(due), pa.timestamp("us", tz="UTC")),
        }))  # fmt: skip
        return len(due)

    def _set_trait(self, name: str, step: SetTrait) -> None:
        """The trait, observed now for each due entry's profile (on its strongest identifier), and the profile
        marked for the profiles stage to compute again."""
        e = self.engine
        value = step.set_trait.value
        text = ("true" if value else "false") if isinstance(value, bool) else str(value)
        e.execute(
            """INSERT INTO trait_observations (seq, node_id, source_id, origin, trait, value, verified, observed_at)
            SELECT 0, min(m.node_id), 'journey', ?, ?, ?, FALSE, ?
            FROM identity_membership AS m WHERE m.profile_id IN (SELECT profile_id FROM _jr_due)
            GROUP BY m.profile_id""",
            (name, step.set_trait.name, text, self.clock()),
        )
        e.execute("INSERT INTO profiles_dirty (profile_id) SELECT DISTINCT profile_id FROM _jr_due")
