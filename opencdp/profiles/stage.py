"""The profiles stage: consumes the governed stream behind identity and keeps golden and computed traits current.

Per micro-batch, in one transaction with the offset (set-based SQL only):

1. the batch's messages and records, with their anchor identifier, become trait observations and activity
   (:mod:`opencdp.profiles.observe`); returns move to the identifier of the order they return;
2. the *touched* profiles are those of the batch's identifiers, those whose identifiers changed (identity
   writes them to ``profiles_dirty`` on every merge, split or move) and those a return moved between;
3. for the touched profiles only, the golden traits are ranked again (:mod:`opencdp.profiles.golden`) and every
   computed trait is computed again in one statement (:mod:`opencdp.profiles.traits`); rows of profiles that
   were absorbed are removed.

Time-relative traits (windows, ``days_since``) are computed as of the computation; the first batch of a new
day (UTC) computes every profile's traits again. :meth:`Profiles.backfill` recomputes everything.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from opencdp.govern.plans import lit
from opencdp.model.profiles import (
    BUILT_IN_VALUES,
    GOLDEN_TRAITS,
    IDENTIFIER_TYPES,
    PROFILE_KEY,
    SHIPPED_TRAITS,
    ProfileSettings,
    TraitDefinition,
)
from opencdp.profiles.golden import golden
from opencdp.profiles.observe import ACTIVITY_COLUMNS, activity, observations
from opencdp.profiles.traits import SQL_TYPES, Checked, affecting, check, compiled, property_text
from opencdp.store.engine import Engine
from opencdp.store.plans import PlanStore, ProfileSettingsStore, TraitStore
from opencdp.store.raw_log import RawLog

CONSUMER = "profiles"
NEW_ACTIVITY = "_pf_new"
"""The temporary table that holds the activity rows of the last :meth:`Profiles.run` (on its connection), for
the read model's timelines."""
AFTER = "identity"
BATCH_ROWS = 500_000
_ACTIVITY = (
    "seq BIGINT, node_id BIGINT, anchor BIGINT, source_id VARCHAR, kind VARCHAR, name VARCHAR, grain VARCHAR, "
    "ts TIMESTAMPTZ, item_key VARCHAR, order_id VARCHAR, amount DOUBLE, currency VARCHAR, props JSON"
)
_TEMP = {
    "_pf_batch": "seq BIGINT, node_id BIGINT, source_id VARCHAR, origin VARCHAR, type VARCHAR, event VARCHAR, "
    "ts TIMESTAMPTZ, message JSON",
    "_pf_keyed": "seq BIGINT, node_id BIGINT, source_id VARCHAR, origin VARCHAR, ts TIMESTAMPTZ, verified BOOLEAN, "
    "pre VARCHAR, k VARCHAR, raw VARCHAR",
    "_pf_typed": "seq BIGINT, node_id BIGINT, source_id VARCHAR, type VARCHAR, event VARCHAR, ts TIMESTAMPTZ, "
    "message JSON, grain VARCHAR, order_id VARCHAR, amount_text VARCHAR, currency_text VARCHAR",
    "_pf_activity": _ACTIVITY,
    "_pf_orders": "order_id VARCHAR, node_id BIGINT",
    "_pf_moved": "node_id BIGINT",
    "_pf_touched": "node_id BIGINT, profile_id VARCHAR",
}
_MEMBERS = {
    "_pf_members": "node_id BIGINT, profile_id VARCHAR, profile_key BIGINT, golden BOOLEAN, computed BOOLEAN",
    "_pf_recompute": "profile_id VARCHAR, golden BOOLEAN, computed BOOLEAN",
    "_pf_history": "node_id BIGINT, seq BIGINT, grain VARCHAR, name VARCHAR, ts TIMESTAMPTZ, item_key VARCHAR, "
    "amount DOUBLE, currency VARCHAR, props JSON",
}
_BATCH = """SELECT g.seq, mi.node_id, g.source_id,
       CASE WHEN g.type = 'record' THEN json_extract_string(g.message, '$.key') ELSE g.message_id END,
       g.type, g.event, g.timestamp, g.message
FROM governed AS g LEFT JOIN message_identities AS mi ON mi.seq = g.seq"""
"""The batch: every governed message and record, with its anchor identifier (NULL when nothing identified it:
a return that names only its order still counts, for the profile of that order)."""
Clock = Callable[[], datetime]
ACTIVITY_TURN = "activity"
"""The turn (``Engine.transaction(serial=...)``) that writing activity rows and computing traits take, and so do
adding a property column to ``activity`` and starting to keep the golden columns of ``profile_computed``: a
batch's rows fill every column kept as of its turn, and a column starts being kept, filled for every earlier
row, in one turn, so no row is written without it."""
MAX_PROPERTY_COLUMNS = 64
"""At most this many property paths are kept as columns of ``activity``; a definition that reads another path
reads it from the JSON properties (the same result, slower)."""
GOLDEN_COLUMNS = tuple(t.name for t in GOLDEN_TRAITS)
"""Golden traits as text columns of ``profile_computed`` too (the surviving value of ``profile_traits``), so that
an audience condition on one reads a column instead of joining the trait rows. They are kept current only once a
definition has read a golden trait (``golden_columns``: a row in ``golden_columns_kept``); until then they are
NULL and cost the profiles stage nothing."""


@dataclass(frozen=True)
class Handed:
    """Working tables a micro-batch leaves on its connection for the segments stage, which runs next on it:
    every touched profile's identifiers and activity as of the batch's end. The profiles stage reads those
    profiles' activity anyway to compute their traits; DuckDB has no index to look rows up by identifier, so
    the segments stage would otherwise scan the whole activity table again."""

    nodes: str = "_pf_members"
    """``node_id, profile_id``: every identifier of every touched profile."""
    activity: str = "_pf_history"
    """All their activity rows that have a grain (``node_id``, ``grain``, ``name``, ``ts``, ``item_key``,
    ``props``, ...)."""


HANDED = Handed()


@dataclass(frozen=True)
class Computed:
    messages: int
    profiles: int
    touched: list[str] | None
    """The profile ids computed again (live or absorbed since), None for every profile."""
    reshaped: list[str]
    """Those of them whose identifiers changed (a merge, a split, a return moving to its order's buyer): their
    activity is not just the old plus the new rows (:data:`NEW_ACTIVITY`)."""
    recomputed: list[str]
    """Those of them whose golden or computed traits were computed again; the others (not reshaped either) only
    gained the rows of :data:`NEW_ACTIVITY`."""
    handed: Handed | None = None
    """Where the touched profiles' identifiers and activity are, when the run was one micro-batch that read
    their activity to compute traits (None: not kept)."""


def _is_time_relative(t: TraitDefinition) -> bool:
    return t.window_days is not None or (t.expression is not None and "days_since" in t.expression.lower())


class Profiles:
    def __init__(self, engine: Engine, raw_log: RawLog, clock: Clock | None = None) -> None:
        self.engine = engine
        self.raw_log = raw_log
        self.clock: Clock = clock or (lambda: datetime.now(UTC))
        self.settings_store = ProfileSettingsStore(engine)
        self.trait_store = TraitStore(engine)
        self._shape: tuple[str, ...] | None = None
        self._checked: tuple[int, Checked] | None = None
        self._golden_kept = False

    # ------------------------------------------------------------------------------------------- definitions

    def definitions(self) -> Checked:
        """The shipped traits, then the workspace's own, checked and in computing order (checked again only
        when a new version of the definitions is saved)."""
        own, version = self.trait_store.get()
        if self._checked is None or self._checked[0] != version:
            self._checked = (version, check([*SHIPPED_TRAITS, *own.traits]))
        return self._checked[1]

    def settings(self) -> ProfileSettings:
        return self.settings_store.get()[0]

    def unknown_references(self, definition: TraitDefinition) -> list[str]:
        """What a new definition names that the data has never shown: an event no message of that name carried
        (and no tracking plan declares), a property no row of its kind had. Nothing is checked against a kind
        the workspace has no data of yet."""
        if definition.over is None:
            return []
        e = self.engine
        if e.fetch_one("SELECT 1 FROM activity WHERE grain = ? LIMIT 1", (definition.over,)) is None:
            return []
        problems = []
        for event in definition.event:
            seen = e.fetch_one("SELECT 1 FROM activity WHERE grain = 'events' AND name = ? LIMIT 1", (event,))
            planned = any(event in plan.events for plan, _ in PlanStore(e).all().values())
            if seen is None and not planned:
                problems.append(f"no event named {event!r} was ever received (nor is it in a tracking plan)")
        paths = [c.property for c in definition.where]
        if definition.of is not None and definition.of not in BUILT_IN_VALUES:
            paths.append(definition.of)
        for path in paths:
            found = e.fetch_one(  # the path is checked by the model (letters, digits, _ and dots)
                f"SELECT 1 FROM activity WHERE grain = ? AND json_extract(props, {lit('$.' + path)}) IS NOT NULL "
                "LIMIT 1",
                (definition.over,),
            )
            if found is None:
                problems.append(f"no {definition.over} ever had a property {path!r}")
        return problems

    def _property_columns(self) -> dict[str, str]:
        """The property paths kept as columns of ``activity``: path -> column."""
        rows = self.engine.fetch_all("SELECT path, col FROM activity_properties ORDER BY path")
        return {str(path): str(col) for path, col in rows}

    def golden_columns(self, *, keep: bool = False) -> bool:
        """Whether the golden columns of ``profile_computed`` are kept current; with ``keep``, they are from now
        on (filled for every profile first, in the activity turn). Keeping them costs each batch that computes
        golden traits the profiles' computed rows too (the row is written whole: cheaper on DuckDB than updating
        columns of it) and a read of their golden values."""
        if self._golden_kept:
            return True
        e = self.engine
        kept = e.fetch_one("SELECT count(*) FROM golden_columns_kept")
        if not (kept and kept[0]) and keep:
            with e.transaction(serial=ACTIVITY_TURN):
                kept = e.fetch_one("SELECT count(*) FROM golden_columns_kept")  # another thread may have started
                if not (kept and kept[0]):
                    self.ensure_shape()
                    e.execute(
                        f"UPDATE profile_computed SET {', '.join(f'{n} = g.{n}' for n in GOLDEN_COLUMNS)} "
                        f"FROM ({_golden_columns()}) AS g "
                        "WHERE profile_computed.profile_id = g.profile_id"
                    )
                    e.execute("INSERT INTO golden_columns_kept (since) VALUES (?)", (self.clock(),))
                    kept = (1,)
        self._golden_kept = bool(kept and kept[0])
        return self._golden_kept

    def property_columns(self, paths: list[str]) -> dict[str, str]:
        """Columns of ``activity`` holding the text of each of ``paths`` (property paths, checked by the model:
        letters, digits, _ and dots): those kept already, and, for a path no definition read before, a column
        added now and filled for every row (then for every row written after). Paths past
        :data:`MAX_PROPERTY_COLUMNS` get none (they are read from the JSON properties)."""
        kept = self._property_columns()
        missing = sorted(set(paths) - set(kept))
        if missing and len(kept) < MAX_PROPERTY_COLUMNS:
            e = self.engine
            with e.transaction(serial=ACTIVITY_TURN):
                kept = self._property_columns()  # another thread may have added some
                taken = {c.lower() for c in kept.values()}
                for path in sorted(set(paths) - set(kept))[: MAX_PROPERTY_COLUMNS - len(kept)]:
                    col = _column_name(path, taken)
                    taken.add(col)
                    e.execute(f"ALTER TABLE activity ADD COLUMN {col} VARCHAR")
                    e.execute(f"UPDATE activity SET {col} = {property_text(path)} "
                              f"WHERE {property_text(path)} IS NOT NULL")  # fmt: skip
                    e.execute("INSERT INTO activity_properties (path, col, added_at) VALUES (?, ?, ?)",
                              (path, col, self.clock()))  # fmt: skip
                    kept[path] = col
        return {path: kept[path] for path in paths if path in kept}

    def _sources(self) -> dict[str, str]:
        return {str(name): str(sid) for name, sid in self.engine.fetch_all("SELECT name, source_id FROM sources")}

    def ensure_shape(self) -> bool:
        """Make ``profile_computed`` and the ``profiles`` view match the definitions; returns True when the table
        was rebuilt (then every profile needs computing)."""
        checked = self.definitions()
        shape = (f"{IDENTIFIER_TYPES} VARCHAR", f"{PROFILE_KEY} BIGINT", *(f"{g} VARCHAR" for g in GOLDEN_COLUMNS),
                 *(f"{t.name} {SQL_TYPES[t.type]}" for t in checked.traits))  # fmt: skip
        if self._shape == shape:
            return False
        e = self.engine
        with e.transaction():
            row = e.fetch_one("SELECT shape FROM _cdp_profile_shape")
            if row is not None and row[0] == "\n".join(shape):
                self._shape = shape
                return False
            e.execute("DROP VIEW IF EXISTS profiles")
            e.execute("DROP TABLE IF EXISTS profile_computed")
            e.execute(
                f"CREATE TABLE profile_computed (profile_id VARCHAR PRIMARY KEY, computed_at TIMESTAMPTZ NOT NULL, "
                f"{', '.join(shape)})"
            )
            e.execute(_profiles_view(checked))
            e.execute("DELETE FROM _cdp_profile_shape")
            e.execute("INSERT INTO _cdp_profile_shape (shape) VALUES (?)", ("\n".join(shape),))
            self._compute("SELECT profile_id, FALSE, TRUE FROM profiles_index")
        self._shape = shape
        return True

    # ----------------------------------------------------------------------------------------------- running

    def run(self) -> Computed:
        """Process every governed message identity has resolved after the stage's offset, and every profile
        identity changed since."""
        everyone = self.ensure_shape() | self._refresh_if_new_day()
        self.engine.scratch({NEW_ACTIVITY: _ACTIVITY})
        messages = 0
        touched: set[str] = set()
        reshaped: set[str] = set()
        recomputed: set[str] = set()
        steps, handed = 0, False
        while True:
            last = self.raw_log.offset(CONSUMER)
            end = self.raw_log.offset(AFTER)
            dirty = self.engine.fetch_one("SELECT count(*) FROM profiles_dirty")
            if end <= last and not (dirty and dirty[0]):
                kept = HANDED if handed and steps == 1 and not everyone else None  # one batch's tables only
                return Computed(messages, len(touched), None if everyone else sorted(touched), sorted(reshaped),
                                sorted(recomputed), kept)  # fmt: skip
            upto = max(last, min(end, last + BATCH_ROWS))
            step_touched, step_reshaped, step_recomputed, handed = self._step(last, upto)
            steps += 1
            touched |= step_touched
            reshaped |= step_reshaped
            recomputed |= step_recomputed
            messages += upto - last

    def backfill(self) -> Computed:
        """Compute every live profile's golden and computed traits again (after a definition changed)."""
        self.run()
        with self.engine.transaction(serial=ACTIVITY_TURN):
            n, _ = self._compute("SELECT profile_id, TRUE, TRUE FROM profiles_index")
        return Computed(0, n, None, [], [])

    def _step(self, last: int, upto: int) -> tuple[set[str], set[str], set[str], bool]:
        """One micro-batch; returns the profiles it touched, those of them whose identifiers changed, those
        whose golden or computed traits were computed again, and whether :data:`HANDED` holds the touched
        profiles' identifiers and activity."""
        e = self.engine
        with e.transaction(serial=ACTIVITY_TURN):
            e.scratch(_TEMP)
            e.execute(f"INSERT INTO _pf_batch {_BATCH} WHERE g.gseq > {int(last)} AND g.gseq <= {int(upto)}")
            for statement in (*observations("_pf_batch"), *activity("_pf_batch")):
                e.execute(statement)
            typed = self._property_columns()
            extra = "".join(f", {col}" for col in typed.values())
            values = "".join(f", {property_text(path)}" for path in typed)
            e.execute(f"INSERT INTO activity ({ACTIVITY_COLUMNS}{extra}) SELECT {ACTIVITY_COLUMNS}{values} "
                      "FROM _pf_activity")  # fmt: skip
            self._returns_follow_orders()
            e.execute(
                """INSERT INTO _pf_touched (node_id, profile_id)
                SELECT m.node_id, m.profile_id FROM identity_membership AS m WHERE m.node_id IN (
                    SELECT node_id FROM _pf_activity UNION SELECT node_id FROM _pf_moved
                    UNION SELECT node_id FROM _pf_keyed
                    UNION SELECT node_id FROM identity_nodes WHERE first_seq IN (SELECT seq FROM _pf_batch))
                UNION ALL SELECT NULL, profile_id FROM profiles_dirty"""
            )
            _, handed = self._compute(self._recompute(), hand=True)
            moved = e.fetch_one("SELECT count(*) FROM _pf_moved")
            reshaped = {str(r[0]) for r in e.fetch_all("SELECT profile_id FROM profiles_dirty")}
            if moved and moved[0]:
                reshaped |= {str(r[0]) for r in e.fetch_all(
                    "SELECT profile_id FROM _pf_members WHERE node_id IN (SELECT node_id FROM _pf_moved)"
                )}  # fmt: skip
            e.execute("DELETE FROM profiles_dirty")
            e.execute(f"INSERT INTO {NEW_ACTIVITY} SELECT * FROM _pf_activity")
            self.raw_log.commit(CONSUMER, upto)
            touched = {str(r[0]) for r in e.fetch_all(
                "SELECT profile_id FROM _pf_touched UNION SELECT profile_id FROM _pf_recompute"
            )}  # fmt: skip
            recomputed = {str(r[0]) for r in e.fetch_all(
                "SELECT profile_id FROM _pf_recompute WHERE golden OR computed")}  # fmt: skip
        return touched, reshaped, recomputed, handed

    def _recompute(self) -> str:
        """The batch's profiles whose golden traits (``golden``) or computed traits (``computed``) may have
        changed: golden for those whose messages reported traits, computed for those with activity that some
        trait counts and those a return moved between, both for those with new identifiers (an email survives
        only as the profile's own identifier; a new profile has no traits yet) and those whose identifiers
        changed (``profiles_dirty``, absorbed ones included: their rows go). The others only gained timeline
        rows (listed with neither, for :data:`HANDED`)."""
        return f"""SELECT profile_id, bool_or(golden), bool_or(computed) FROM (
            SELECT m.profile_id, x.golden, x.computed FROM _pf_touched AS m JOIN (
                SELECT node_id, TRUE AS golden, FALSE AS computed FROM _pf_keyed
                UNION ALL SELECT node_id, TRUE, TRUE FROM identity_nodes WHERE first_seq IN (SELECT seq FROM _pf_batch)
                UNION ALL SELECT node_id, FALSE, TRUE FROM _pf_activity WHERE {affecting(self.definitions())}
                UNION ALL SELECT node_id, FALSE, TRUE FROM _pf_moved) AS x ON x.node_id = m.node_id
            UNION ALL SELECT profile_id, TRUE, TRUE FROM profiles_dirty
            UNION ALL SELECT profile_id, FALSE, FALSE FROM _pf_touched) AS r
        GROUP BY profile_id"""

    def _returns_follow_orders(self) -> None:
        """Each return of an order in this batch (as the order or the return) belongs to the identifier of the
        order's latest version; the profiles it leaves and joins are touched."""
        e = self.engine
        e.execute(
            """INSERT INTO _pf_orders (order_id, node_id)
            SELECT order_id, node_id FROM (
                SELECT order_id, node_id, row_number() OVER (PARTITION BY order_id ORDER BY seq DESC) AS r
                FROM activity WHERE grain = 'orders' AND order_id IN (
                    SELECT order_id FROM _pf_activity WHERE grain IN ('orders', 'returns') AND order_id IS NOT NULL)
            ) AS latest WHERE r = 1"""
        )
        moving = """FROM activity AS a JOIN _pf_orders AS o ON o.order_id = a.order_id
                    WHERE a.grain = 'returns' AND a.node_id IS DISTINCT FROM o.node_id"""
        e.execute(f"INSERT INTO _pf_moved (node_id) SELECT a.node_id {moving} UNION SELECT o.node_id {moving}")
        e.execute(
            """UPDATE activity SET node_id = o.node_id FROM _pf_orders AS o
            WHERE activity.grain = 'returns' AND activity.order_id = o.order_id
              AND activity.node_id IS DISTINCT FROM o.node_id"""
        )

    def _compute(self, profiles: str, *, hand: bool = False) -> tuple[int, bool]:
        """Golden and computed traits again for ``profiles`` (a query of ``profile_id, golden, computed``: which
        of the two each needs, or neither); rows of profiles that are no longer live go. Once the golden columns
        are kept (:meth:`golden_columns`), a profile whose golden traits are computed gets its computed row again
        too (writing the row whole cost less on DuckDB than carrying its other columns over, 213 against 232 ms
        a batch, or updating those, 259 ms). A computed row comes with the profile's identifier types, its key
        and its identifiers' ``profile_nodes`` rows. Nothing runs for a part no profile needs. With ``hand``,
        when computed traits are computed, the activity of every profile of ``profiles`` is read once into
        :data:`HANDED` and the traits are computed from there. Returns how many profiles were computed and
        whether :data:`HANDED` was filled."""
        e = self.engine
        e.scratch(_MEMBERS)
        kept = self.golden_columns()
        also = " OR golden" if kept else ""
        e.execute(
            f"INSERT INTO _pf_recompute (profile_id, golden, computed) SELECT profile_id, golden, computed{also} "
            f"FROM ({profiles}) AS r (profile_id, golden, computed)"
        )
        row = e.fetch_one("SELECT count(*) FILTER (WHERE golden), count(*) FILTER (WHERE computed) FROM _pf_recompute")
        goldens, computeds = (int(row[0]), int(row[1])) if row else (0, 0)
        if not goldens and not computeds:
            return 0, False
        e.execute(
            """INSERT INTO _pf_members (node_id, profile_id, profile_key, golden, computed)
            SELECT m.node_id, m.profile_id, m.profile_key, r.golden, r.computed
            FROM identity_membership AS m JOIN _pf_recompute AS r ON r.profile_id = m.profile_id"""
        )
        settings = self.settings()
        if goldens:
            e.execute(
                "DELETE FROM profile_traits WHERE profile_id IN (SELECT profile_id FROM _pf_recompute WHERE golden)"
            )
            e.execute(
                "INSERT INTO profile_traits (profile_id, trait, value, source_id, origin, from_record, seq, "
                "observed_at, rule) "
                + golden(settings, "(SELECT node_id, profile_id FROM _pf_members WHERE golden)", self._sources())
            )
        if computeds:
            checked = self.definitions()
            names = ", ".join(t.name for t in checked.traits)
            # identity moves an identifier from one profile to another (never drops it) and marks both dirty, so
            # rewriting the rows of the computed profiles' identifiers keeps profile_nodes whole
            e.execute("DELETE FROM profile_nodes WHERE node_id IN (SELECT node_id FROM _pf_members WHERE computed)")
            e.execute(
                "DELETE FROM profile_computed WHERE profile_id IN (SELECT profile_id FROM _pf_recompute WHERE computed)"
            )
            members = "(SELECT node_id, profile_id FROM _pf_members WHERE computed)"
            live = f"(SELECT DISTINCT profile_id FROM {members} AS l)"
            now = self.clock()
            activity = "activity"
            if hand:
                e.execute(
                    f"""INSERT INTO {HANDED.activity}
                    SELECT node_id, seq, grain, name, ts, item_key, amount, currency, props FROM activity
                    WHERE grain IS NOT NULL AND node_id IN (SELECT node_id FROM {HANDED.nodes})"""
                )
                activity = HANDED.activity
            select = compiled(checked, settings, live, members, now, activity)
            types = """SELECT m.profile_id, m.profile_key AS k,
                       ',' || string_agg(DISTINCT n.id_type, ',' ORDER BY n.id_type) || ',' AS v
                FROM _pf_members AS m LEFT JOIN identity_nodes AS n ON n.node_id = m.node_id
                WHERE m.computed GROUP BY m.profile_id, m.profile_key"""
            into, values, joined = "", "", ""  # the golden columns, when kept
            if kept:
                into = "".join(f", {n}" for n in GOLDEN_COLUMNS)
                values = "".join(f", g.{n}" for n in GOLDEN_COLUMNS)
                of = _golden_columns("(SELECT profile_id FROM _pf_recompute WHERE computed)")
                joined = f" LEFT JOIN ({of}) AS g ON g.profile_id = c.profile_id"
            e.execute(
                f"INSERT INTO profile_computed (profile_id, computed_at, {IDENTIFIER_TYPES}, {PROFILE_KEY}{into}, "
                f"{names}) SELECT c.profile_id, ?, t.v, t.k{values}, {names} "
                f"FROM ({select}) AS c LEFT JOIN ({types}) AS t ON t.profile_id = c.profile_id{joined}",
                (now,),
            )
            e.execute(
                f"INSERT INTO profile_nodes (node_id, {PROFILE_KEY}) "
                "SELECT node_id, profile_key FROM _pf_members WHERE computed"
            )
        row = e.fetch_one("SELECT count(DISTINCT profile_id) FROM _pf_members WHERE golden OR computed")
        return (int(row[0]) if row else 0), hand and computeds > 0

    def _refresh_if_new_day(self) -> bool:
        """Compute every profile's traits again when some are time-relative and were computed before today
        (UTC); returns whether it did."""
        if not any(_is_time_relative(t) for t in self.definitions().traits):
            return False
        midnight = self.clock().astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        row = self.engine.fetch_one("SELECT min(computed_at) FROM profile_computed")
        if row is None or row[0] is None or row[0] >= midnight:
            return False
        with self.engine.transaction(serial=ACTIVITY_TURN):
            self._compute("SELECT profile_id, FALSE, TRUE FROM profiles_index")
        return True


def _golden_columns(profiles: str | None = None) -> str:
    """``SELECT profile_id, <each golden trait>`` from ``profile_traits``, one row per profile that has any trait
    (of ``profiles``, a relation of ``profile_id``, when given)."""
    pivot = ", ".join(f"max(value) FILTER (WHERE trait = {lit(n)}) AS {n}" for n in GOLDEN_COLUMNS)
    of = f" WHERE profile_id IN {profiles}" if profiles is not None else ""
    return f"SELECT profile_id, {pivot} FROM profile_traits{of} GROUP BY profile_id"


def _column_name(path: str, taken: set[str]) -> str:
    """A column name for property ``path`` (letters, digits, _ and dots): ``prop_`` and the path in lower case
    with dots as ``_``, numbered when two paths would share it (``Category`` and ``category``)."""
    base = "prop_" + path.lower().replace(".", "_")[:48]
    name, n = base, 1
    while name in taken:
        n += 1
        name = f"{base}_{n}"
    return name


RFM = """CASE WHEN c.order_count > 0 THEN ntile(5) OVER (
               PARTITION BY c.order_count > 0 ORDER BY c.last_order_at, c.profile_id) END AS r_score,
           CASE WHEN c.order_count > 0 THEN ntile(5) OVER (
               PARTITION BY c.order_count > 0 ORDER BY c.order_count, c.profile_id) END AS f_score,
           CASE WHEN c.order_count > 0 THEN ntile(5) OVER (
               PARTITION BY c.order_count > 0 ORDER BY c.ltv_net NULLS FIRST, c.profile_id) END AS m_score"""
"""RFM scores, 1 to 5 by quintile among the profiles with orders (5: most recent, most orders, highest value net
of returns), computed when the view is read: they rank each profile against all others, so they are not
stored per profile."""


def _profiles_view(checked: Checked) -> str:
    computed = ", ".join(f"c.{t.name}" for t in checked.traits)
    return f"""CREATE OR REPLACE VIEW profiles AS
    SELECT p.profile_id, {", ".join(f"g.{n}" for n in GOLDEN_COLUMNS)}, {computed}, {RFM}, c.computed_at
    FROM profiles_index AS p
    LEFT JOIN ({_golden_columns()}) AS g
           ON g.profile_id = p.profile_id
    LEFT JOIN profile_computed AS c ON c.profile_id = p.profile_id"""
