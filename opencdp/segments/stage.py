"""The segments stage: keeps every saved audience's members current and records each entry and exit.

After the profiles stage, per micro-batch (in one transaction, set-based):

1. the *candidates* are the profiles the batch touched (their traits or activity changed, they merged or split;
   absorbed ones included, so they leave their audiences);
2. their activity is read once into a working table; every audience is evaluated for the candidates only, each
   after the audiences it is defined by (which read the members just evaluated);
3. the difference with ``audience_members`` becomes ``entered`` / ``exited`` rows in ``audience_changes`` (each
   with the next ``change_seq``: activation reads it like a log) and is applied to ``audience_members``.

Audiences whose membership can change with time alone (windows, relative dates) are evaluated in full again on
a schedule; a new or changed audience, and every audience when every profile was computed again, are evaluated
in full at once. :meth:`Segments.evaluate` does the same on demand.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from opencdp.errors import Rejected
from opencdp.govern.plans import lit
from opencdp.model.audiences import ActivityCondition, AudienceDefinition, leaves
from opencdp.model.identity import IDENTIFIER_TYPES
from opencdp.model.profiles import GOLDEN_TRAITS
from opencdp.profiles.traits import Checked
from opencdp.segments.compile import Sources, Workspace, check, compiled, ordered
from opencdp.store.engine import Engine
from opencdp.store.plans import AudienceStore, PlanStore

Clock = Callable[[], datetime]
_TEMP = {
    "_sg_candidates": "profile_id VARCHAR",
    "_sg_activity": "profile_id VARCHAR, seq BIGINT, grain VARCHAR, name VARCHAR, ts TIMESTAMPTZ, "
    "item_key VARCHAR, props JSON",
    "_sg_eval": "audience VARCHAR, profile_id VARCHAR",
    "_sg_changes": "audience VARCHAR, profile_id VARCHAR, change VARCHAR",
}
PREVIEW_TRAITS = ("email", "first_name", "last_name", "city", "country")


@dataclass(frozen=True)
class Changes:
    audiences: int
    """How many audiences were evaluated."""
    entered: int
    exited: int


def _evaluated(audiences: set[str]) -> Callable[[str], str]:
    """Members of an audience within one pass: those just evaluated when it was, else the saved ones."""

    def members(name: str) -> str:
        table = "_sg_eval" if name in audiences else "audience_members"
        return f"(SELECT profile_id FROM {table} WHERE audience = {lit(name)})"

    return members


class Segments:
    def __init__(
        self,
        engine: Engine,
        definitions: Callable[[], Checked],
        clock: Clock | None = None,
        refresh: timedelta = timedelta(minutes=15),
    ) -> None:
        self.engine = engine
        self.store = AudienceStore(engine)
        self.traits = definitions
        self.clock: Clock = clock or (lambda: datetime.now(UTC))
        self.refresh = refresh
        """How often audiences that can change with time alone are evaluated in full again."""
        self._cache: tuple[tuple[int, object], list[AudienceDefinition]] | None = None

    # ------------------------------------------------------------------------------------------- definitions

    def audiences(self) -> list[AudienceDefinition]:
        """Saved audiences, each after those it is defined by (read again only when one was saved)."""
        stamp = self.store.stamp()
        if self._cache is None or self._cache[0] != stamp:
            self._cache = (stamp, ordered({name: a for name, (a, _) in self.store.all().items()}))
        return self._cache[1]

    def workspace(self, *, data: bool = True) -> Workspace:
        """What definitions may refer to (with ``data``: also the event names and kinds of activity seen)."""
        e = self.engine
        stored = {str(r[0]) for r in e.fetch_all("SELECT DISTINCT trait FROM profile_traits")}
        events: frozenset[str] | None = None
        kinds: frozenset[str] = frozenset()
        if data:
            kinds = frozenset(str(r[0]) for r in e.fetch_all("SELECT DISTINCT grain FROM activity WHERE grain IS "
                                                             "NOT NULL"))  # fmt: skip
            if kinds:
                seen = {str(r[0]) for r in e.fetch_all("SELECT DISTINCT name FROM activity WHERE name IS NOT NULL")}
                planned = {ev for plan, _ in PlanStore(e).all().values() for ev in plan.events}
                events = frozenset(seen | planned)
        return Workspace(
            computed=self.traits().types(),
            stored=frozenset(stored | {t.name for t in GOLDEN_TRAITS}),
            identifier_types=frozenset(t.name for t in IDENTIFIER_TYPES),
            audiences={a.name: a for a in self.audiences()},
            events=events,
            kinds=kinds,
        )

    def checked(self, doc: object) -> AudienceDefinition:
        """A definition from a document (a dict, or YAML/JSON already parsed), checked against the workspace."""
        from pydantic import ValidationError

        try:
            definition = AudienceDefinition.model_validate(doc)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"] if not str(p).startswith(("function-", "tagged-union")))
            raise Rejected(f"{where or 'audience'}: {err['msg']}", code="bad_audience") from None
        check(definition, self.workspace())
        return definition

    # ----------------------------------------------------------------------------------------------- running

    def run(self, touched: list[str] | None) -> Changes:
        """Evaluate the audiences for the profiles a micro-batch touched (None: every profile), after the full
        evaluation of any audience that is new, changed or due on the schedule."""
        audiences = self.audiences()
        if not audiences:
            return Changes(0, 0, 0)
        if touched is None:
            return self.evaluate(None, cause="batch")
        now = self.clock()
        cutoff = now - self.refresh
        state = {str(r[0]): (r[1], r[2]) for r in self.engine.fetch_all(
            "SELECT name, evaluated_at, updated_at FROM audiences")}  # fmt: skip
        stale = [a.name for a in audiences if _due(a, *state.get(a.name, (None, None)), cutoff)]
        done = self.evaluate(stale, cause="schedule") if stale else Changes(0, 0, 0)
        if not touched:
            return done
        e = self.engine
        with e.transaction():
            e.scratch(_TEMP)
            e.append("_sg_candidates", pa.table({"profile_id": pa.array(touched, pa.string())}))
            if any(isinstance(leaf, ActivityCondition) for a in audiences for leaf in leaves(a.where)):
                e.execute(
                    """INSERT INTO _sg_activity
                    SELECT m.profile_id, a.seq, a.grain, a.name, a.ts, a.item_key, a.props
                    FROM activity AS a JOIN identity_membership AS m ON m.node_id = a.node_id
                    WHERE m.profile_id IN (SELECT profile_id FROM _sg_candidates)"""
                )
            base = "(SELECT * FROM profile_computed WHERE profile_id IN (SELECT profile_id FROM _sg_candidates))"
            changes = self._pass(audiences, base, "_sg_activity", now, "realtime",
                                 scope="profile_id IN (SELECT profile_id FROM _sg_candidates)")  # fmt: skip
        return Changes(done.audiences + changes.audiences, done.entered + changes.entered,
                       done.exited + changes.exited)  # fmt: skip

    def evaluate(self, names: list[str] | None, *, cause: str = "batch") -> Changes:
        """Evaluate audiences (None: all) over every profile, recording who entered and left."""
        every = self.audiences()
        chosen = every if names is None else [a for a in every if a.name in set(names)]
        unknown = sorted(set(names or ()) - {a.name for a in every})
        if unknown:
            raise Rejected(f"there is no audience {unknown[0]!r}", code="unknown_audience", status=404)
        if not chosen:
            return Changes(0, 0, 0)
        e = self.engine
        with e.transaction():
            e.scratch(_TEMP)
            return self._pass(chosen, "profile_computed", Sources.activity, self.clock(), cause, scope=None)

    def _pass(
        self, audiences: list[AudienceDefinition], base: str, activity: str, now: datetime, cause: str, *,
        scope: str | None,
    ) -> Changes:  # fmt: skip
        """Evaluate ``audiences`` (in order) for the profiles in ``base`` into ``_sg_eval``, then record and apply
        the difference with the members in ``scope`` (a condition on ``profile_id``; None: every member)."""
        e = self.engine
        ws = self.workspace(data=False)
        names = {a.name for a in audiences}
        done: set[str] = set()
        for a in audiences:
            src = Sources(base=base, activity=activity, members=_evaluated(done))
            e.execute(f"INSERT INTO _sg_eval (audience, profile_id) SELECT {lit(a.name)}, profile_id "
                      f"FROM ({compiled(a, ws, src, now).members()}) AS m")  # fmt: skip
            done.add(a.name)
        listed = ", ".join(lit(n) for n in sorted(names))
        in_scope = f" AND m.{scope}" if scope else ""
        e.execute(
            f"""INSERT INTO _sg_changes (audience, profile_id, change)
            SELECT audience, profile_id, 'entered' FROM _sg_eval AS v WHERE NOT EXISTS (
                SELECT 1 FROM audience_members AS m WHERE m.audience = v.audience AND m.profile_id = v.profile_id)
            UNION ALL
            SELECT audience, profile_id, 'exited' FROM audience_members AS m
            WHERE m.audience IN ({listed}){in_scope} AND NOT EXISTS (
                SELECT 1 FROM _sg_eval AS v WHERE v.audience = m.audience AND v.profile_id = m.profile_id)"""
        )
        counted = e.fetch_one("SELECT count(*) FILTER (WHERE change = 'entered'), count(*) FILTER "
                              "(WHERE change = 'exited') FROM _sg_changes")  # fmt: skip
        entered, exited = (int(counted[0]), int(counted[1])) if counted else (0, 0)
        if entered or exited:
            e.execute(
                """INSERT INTO audience_changes (change_seq, audience, profile_id, change, cause, happened_at)
                SELECT (SELECT coalesce(max(change_seq), 0) FROM audience_changes)
                           + row_number() OVER (ORDER BY audience, change DESC, profile_id),
                       audience, profile_id, change, ?, ?
                FROM _sg_changes""",
                (cause, now),
            )
            e.execute(
                """DELETE FROM audience_members USING _sg_changes AS x
                WHERE x.change = 'exited' AND x.audience = audience_members.audience
                  AND x.profile_id = audience_members.profile_id"""
            )
            e.execute(
                "INSERT INTO audience_members (audience, profile_id, since) "
                "SELECT audience, profile_id, ? FROM _sg_changes WHERE change = 'entered'",
                (now,),
            )
        if scope is None:
            e.execute(f"UPDATE audiences SET evaluated_at = ? WHERE name IN ({listed})", (now,))
        return Changes(len(audiences), entered, exited)

    # ------------------------------------------------------------------------------------ counts and previews

    def count(self, definition: AudienceDefinition) -> dict[str, Any]:
        """How many live profiles a (checked, possibly unsaved) definition holds, and each of its branches."""
        c = compiled(definition, self.workspace(data=False), Sources(), self.clock())
        row = self.engine.fetch_one(c.counts())
        assert row is not None
        branches = [{"path": path, "count": int(n)} for (path, _), n in zip(c.nodes, row, strict=True)]
        return {"count": int(row[0]), "branches": branches[1:]}

    def preview(self, definition: AudienceDefinition, limit: int = 10) -> list[dict[str, Any]]:
        """A sample of members (the first by profile id) with a few golden traits."""
        c = compiled(definition, self.workspace(data=False), Sources(), self.clock())
        ids = [str(r[0]) for r in self.engine.fetch_all(f"{c.members()} ORDER BY profile_id LIMIT {int(limit)}")]
        return self._describe(ids)

    def members(self, name: str, limit: int = 100, after: str | None = None) -> list[dict[str, Any]]:
        """Saved members of an audience, by profile id (``after``: the page after that id)."""
        if name not in {a.name for a in self.audiences()}:
            raise Rejected(f"there is no audience {name!r}", code="unknown_audience", status=404)
        rows = self.engine.fetch_all(
            "SELECT profile_id FROM audience_members WHERE audience = ? AND profile_id > ? "
            f"ORDER BY profile_id LIMIT {int(limit)}",
            (name, after or ""),
        )
        return self._describe([str(r[0]) for r in rows])

    def _describe(self, ids: list[str]) -> list[dict[str, Any]]:
        if not ids:
            return []
        marks = ", ".join("?" for _ in ids)
        traits = ", ".join(lit(t) for t in PREVIEW_TRAITS)
        found: dict[str, dict[str, Any]] = {i: {"profile_id": i} for i in ids}
        for pid, trait, value in self.engine.fetch_all(
            f"SELECT profile_id, trait, value FROM profile_traits WHERE profile_id IN ({marks}) "
            f"AND trait IN ({traits})",
            ids,
        ):
            found[str(pid)][str(trait)] = value
        return [found[i] for i in ids]

    def summary(self) -> list[dict[str, Any]]:
        """Every saved audience with its size and last evaluation."""
        rows = self.engine.fetch_all(
            """SELECT a.name, a.version, a.updated_at, a.evaluated_at, count(m.profile_id)
            FROM audiences AS a LEFT JOIN audience_members AS m ON m.audience = a.name
            GROUP BY a.name, a.version, a.updated_at, a.evaluated_at ORDER BY a.name"""
        )
        defs = {a.name: a for a in self.audiences()}
        return [
            {"name": r[0], "description": defs[r[0]].description if r[0] in defs else "", "version": int(r[1]),
             "updated_at": r[2], "evaluated_at": r[3], "members": int(r[4]),
             "time_relative": defs[r[0]].time_relative() if r[0] in defs else False}
            for r in rows
        ]  # fmt: skip

    def save(self, definition: AudienceDefinition) -> dict[str, Any]:
        """Save an audience (checked already) and evaluate it, and those defined by it, over every profile."""
        version = self.store.put(definition)
        dependants = [a.name for a in self.audiences() if a.name == definition.name or
                      definition.name in _closure(a, {x.name: x for x in self.audiences()})]  # fmt: skip
        changes = self.evaluate(dependants, cause="batch")
        return {"name": definition.name, "version": version, "entered": changes.entered, "exited": changes.exited}

    def delete(self, name: str) -> dict[str, Any]:
        """Remove an audience no other audience is defined by; its members exit (cause ``deleted``)."""
        users = sorted(a.name for a in self.audiences() if name in a.audiences())
        if users:
            raise Rejected(f"audience {name!r} is used by {', '.join(users)}", code="audience_in_use")
        e = self.engine
        now = self.clock()
        with e.transaction():
            if not self.store.delete(name):
                raise Rejected(f"there is no audience {name!r}", code="unknown_audience", status=404)
            e.execute(
                """INSERT INTO audience_changes (change_seq, audience, profile_id, change, cause, happened_at)
                SELECT (SELECT coalesce(max(change_seq), 0) FROM audience_changes)
                           + row_number() OVER (ORDER BY profile_id), audience, profile_id, 'exited', 'deleted', ?
                FROM audience_members WHERE audience = ?""",
                (now, name),
            )
            row = e.fetch_one("SELECT count(*) FROM audience_members WHERE audience = ?", (name,))
            e.execute("DELETE FROM audience_members WHERE audience = ?", (name,))
        return {"deleted": name, "exited": int(row[0]) if row else 0}


def _closure(a: AudienceDefinition, by_name: dict[str, AudienceDefinition]) -> set[str]:
    """Every audience ``a`` is defined by, directly or through others."""
    seen: set[str] = set()
    todo = list(a.audiences())
    while todo:
        n = todo.pop()
        if n not in seen:
            seen.add(n)
            todo += list(by_name[n].audiences()) if n in by_name else []
    return seen


def _due(a: AudienceDefinition, evaluated: datetime | None, updated: datetime | None, cutoff: datetime) -> bool:
    """Whether an audience needs a full evaluation: never evaluated since it was saved, or it can change with
    time alone and its last one is older than the schedule allows."""
    if evaluated is None or (updated is not None and evaluated < updated):
        return True
    return a.time_relative() and evaluated < cutoff
