"""The identity stage: consumes the governed stream from its offset and keeps the identity graph current.

Per micro-batch, in one transaction with the offset (all set-based SQL; Python only repeats a statement until
the labels stop changing):

1. the identifiers of the batch's messages and records (:mod:`opencdp.identity.extract`) become nodes
   (``identity_nodes``, one per type and value);
2. each message links its identifiers to its strongest one, its *anchor* (``identity_edges``), and remembers
   the anchor (``message_identities``), through which any message resolves to its profile;
3. clusters (connected components of every edge) are recomputed only where the batch changed them (a new
   node or a new edge), by label propagation over a small graph of those clusters and the new nodes;
4. each touched cluster is cut into parts: shared identifiers (the guard) join nobody, operator splits
   (``identity_cannot_link``) and the limits of one per profile split a part around their seeds, each other
   identifier joining the nearest seed; refused edges are recorded (``identity_conflicts``);
5. each part gets a profile id: a previous profile stays with the part holding its earliest identifier, the
   oldest of several survives and absorbs the others (``profile_aliases``), a part without one gets a new id;
   every creation, merge and split is an event (``identity_events``).

Parts are recomputed from the whole cluster each time, so the result does not depend on how the stream was
cut into batches (tested). docs/identity.md explains the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from opencdp.identity.extract import RAW_COLUMNS, identifiers, per_type, raw_values
from opencdp.identity.matching import TEMP as MATCH_TEMP
from opencdp.identity.matching import Matcher
from opencdp.model.identity import IDENTIFIER_TYPES, NODE_KEY
from opencdp.store.engine import Engine
from opencdp.store.raw_log import RawLog

CONSUMER = "identity"
BATCH_ROWS = 100_000
MAX_ROUNDS = 10_000
PROBABILISTIC_COST = 100
"""When a part is split around seeds, a probabilistic edge counts as this many deterministic ones: an identifier
goes with the seed it shares a message with before one it is only matched to (the weaker evidence yields)."""
_GOVERNED = "SELECT gseq, seq, source_id, type, user_id, anonymous_id, message FROM governed"
_TEMP = {
    "_id_governed": "gseq BIGINT, seq BIGINT, source_id VARCHAR, type VARCHAR, user_id VARCHAR, "
    "anonymous_id VARCHAR, message JSON",
    "_id_raw": RAW_COLUMNS,
    "_id_found": "seq BIGINT, id_type VARCHAR, id_value VARCHAR, priority INTEGER, blocked BOOLEAN",
    "_id_batch": "seq BIGINT, id_type VARCHAR, id_value VARCHAR, priority INTEGER",
    "_id_known": "id_type VARCHAR, id_value VARCHAR, id_key UUID, first_seq BIGINT, messages BIGINT, node_id BIGINT, "
    "fresh BOOLEAN",
    "_id_nodes": "seq BIGINT, node_id BIGINT, priority INTEGER",
    "_id_anchor": "seq BIGINT, node_id BIGINT",
    "_id_new_edges": "a BIGINT, b BIGINT, seq BIGINT",
    "_id_vertex": "node_id BIGINT, v BIGINT",
    "_id_label": "v BIGINT, label BIGINT",
    "_id_arc": "x BIGINT, y BIGINT",
    "_id_touched": "cluster BIGINT",
    "_id_part": "node_id BIGINT, part BIGINT, id_type VARCHAR, first_seq BIGINT, once INTEGER, priority INTEGER",
    "_id_edge": "a BIGINT, b BIGINT, cost INTEGER, seq BIGINT",
    "_id_kept": "a BIGINT, b BIGINT, cost INTEGER, seq BIGINT",
    "_id_split": "part BIGINT, id_type VARCHAR",
    "_id_seed": "node_id BIGINT, part BIGINT, reason VARCHAR",
    "_id_shared": "node_id BIGINT, reason VARCHAR",
    "_id_reach": "node_id BIGINT, seed BOOLEAN, key VARCHAR, relay BOOLEAN, fallback VARCHAR",
    "_id_contested": "node_id BIGINT",
    "_id_claim": "part BIGINT, profile_id VARCHAR",
    "_id_owner": "part BIGINT, profile_id VARCHAR, profile_key BIGINT, fresh BOOLEAN",
    "_id_was": "node_id BIGINT, part BIGINT, profile_id VARCHAR",
    **MATCH_TEMP,
}
"""Per-batch working tables (temporary: per connection, emptied at the start of each batch)."""


@dataclass(frozen=True)
class Resolved:
    messages: int
    created: int
    merged: int


class Identity:
    def __init__(self, engine: Engine, raw_log: RawLog) -> None:
        self.engine = engine
        self.raw_log = raw_log
        self.matcher = Matcher(engine)

    def run(self) -> Resolved:
        """Resolve every governed message after the stage's offset."""
        messages = created = merged = 0
        while True:
            last = self.raw_log.offset(CONSUMER)
            row = self.engine.fetch_one("SELECT coalesce(max(gseq), 0) FROM governance")
            end = int(row[0]) if row else 0
            if end <= last:
                return Resolved(messages, created, merged)
            upto = min(end, last + BATCH_ROWS)
            c, m = self._resolve(last, upto)
            messages, created, merged = messages + upto - last, created + c, merged + m

    def _resolve(self, last: int, upto: int) -> tuple[int, int]:
        now = datetime.now(UTC)
        e = self.engine
        with e.transaction():
            self._prepare()
            # the batch's governed rows, read once for the identifiers and the match records
            e.execute(f"INSERT INTO _id_governed {_GOVERNED} WHERE gseq > {int(last)} AND gseq <= {int(upto)}")
            e.execute(f"INSERT INTO _id_raw {raw_values('_id_governed')}")
            found = e.execute_changed(f"INSERT INTO _id_found {identifiers('_id_raw')}")
            kept = e.execute_changed(
                "INSERT INTO _id_batch (seq, id_type, id_value, priority) "
                "SELECT seq, id_type, id_value, priority FROM _id_found WHERE NOT blocked"
            )
            if kept < found:  # placeholders identify nobody, but how often each is sent is worth knowing
                e.execute(
                    """INSERT INTO identity_blocked (id_type, id_value, hits, last_seen)
                    SELECT id_type, lower(id_value), count(*), ? FROM _id_found WHERE blocked
                    GROUP BY id_type, lower(id_value)
                    ON CONFLICT (id_type, id_value) DO UPDATE
                    SET hits = identity_blocked.hits + excluded.hits, last_seen = excluded.last_seen""",
                    (now,),
                )
            self._nodes(now)
            self._edges(now)
            self.matcher.collect(
                "SELECT g.seq, g.source_id, g.type, g.message, a.node_id FROM _id_governed AS g "
                "JOIN _id_anchor AS a ON a.seq = g.seq"
            )
            self.matcher.score(now)
            created, merged = self._components(now, upto)
            self.raw_log.commit(CONSUMER, upto)
        return created, merged

    def _prepare(self) -> None:
        self.engine.scratch(_TEMP)

    def separate(self, a: int, b: int, *, apart: bool) -> None:
        """Record (``apart``) or remove a cannot-link constraint between two identifiers (node ids), and
        recompute the profiles of their clusters at once; reprocessing and later evidence respect it."""
        now = datetime.now(UTC)
        e = self.engine
        lo, hi = min(a, b), max(a, b)
        with e.transaction():
            self._prepare()
            e.execute("DELETE FROM identity_cannot_link WHERE a = ? AND b = ?", (lo, hi))
            if apart:
                e.execute("INSERT INTO identity_cannot_link (a, b, created_at) VALUES (?, ?, ?)", (lo, hi, now))
            e.execute(
                "INSERT INTO _id_touched (cluster) SELECT DISTINCT cluster FROM identity_nodes WHERE node_id IN (?, ?)",
                (lo, hi),
            )
            # The refusals constraints caused in these clusters are recorded again by what still holds.
            e.execute(
                """DELETE FROM identity_conflicts WHERE reason = 'cannot-link' AND a IN (
                    SELECT n.node_id FROM identity_nodes AS n JOIN _id_touched AS t ON t.cluster = n.cluster)"""
            )
            self._assign(now, self.raw_log.offset(CONSUMER))

    def rescore(self) -> Resolved:
        """Score every match record again (after training, or new thresholds) and recompute what changed."""
        now = datetime.now(UTC)
        with self.engine.transaction():
            self._prepare()
            self.matcher.all_records()
            self.matcher.score(now, every_record=True)
            created, merged = self._components(now, self.raw_log.offset(CONSUMER))
        return Resolved(0, created, merged)

    def decide(self, id_l: int, id_r: int, decision: str | None) -> None:
        """Record an operator's review decision on a scored pair (``accepted``: an edge whatever the score;
        ``rejected``: never an edge, and the two identifiers cannot be linked; None: undecided again) and
        recompute their profiles at once."""
        now = datetime.now(UTC)
        e = self.engine
        with e.transaction():
            self._prepare()
            e.execute("UPDATE identity_matches SET decision = ? WHERE id_l = ? AND id_r = ?", (decision, id_l, id_r))
            row = e.fetch_one("SELECT node_l, node_r FROM identity_matches WHERE id_l = ? AND id_r = ?", (id_l, id_r))
            if row is None:
                return
            lo, hi = min(int(row[0]), int(row[1])), max(int(row[0]), int(row[1]))
            e.execute("INSERT INTO _mt_nodes (node_id) VALUES (?), (?)", (lo, hi))
            self.matcher.edges(now)
            e.execute("DELETE FROM identity_cannot_link WHERE a = ? AND b = ? AND reason = 'review'", (lo, hi))
            if decision == "rejected" and lo != hi:
                e.execute(
                    "INSERT INTO identity_cannot_link (a, b, created_at, reason) VALUES (?, ?, ?, 'review')",
                    (lo, hi, now),
                )
            e.execute("INSERT INTO _mt_gone (a, b) VALUES (?, ?)", (lo, hi))  # their clusters are recomputed
            self._components(now, self.raw_log.offset(CONSUMER))

    def _nodes(self, now: datetime) -> None:
        """The batch's identifiers as nodes (``_id_known``, one row each): their lookup keys find the known
        ones (a join on one fixed-width column: reading every stored identifier's strings cost ~20 ms a batch at
        600k identifiers), the new ones take the next node ids in order of first appearance."""
        e = self.engine
        e.execute(  # (seq, id_type, id_value) is unique in _id_batch: count(*) counts messages
            f"""INSERT INTO _id_known (id_type, id_value, id_key, first_seq, messages, fresh)
            SELECT id_type, id_value, {NODE_KEY}, min(seq), count(*), FALSE
            FROM _id_batch GROUP BY id_type, id_value"""
        )
        e.execute("UPDATE _id_known SET node_id = n.node_id FROM identity_nodes AS n WHERE n.id_key = _id_known.id_key")
        e.execute(
            """UPDATE _id_known SET node_id = f.node_id, fresh = TRUE FROM (
                SELECT id_type, id_value, base.n + row_number() OVER (ORDER BY first_seq, id_type, id_value) AS node_id
                FROM _id_known CROSS JOIN (SELECT coalesce(max(node_id), 0) AS n FROM identity_nodes) AS base
                WHERE _id_known.node_id IS NULL) AS f
            WHERE _id_known.id_type = f.id_type AND _id_known.id_value = f.id_value"""
        )
        e.execute(
            """INSERT INTO identity_nodes
                (node_id, id_type, id_value, id_key, first_seq, first_seen, last_seen, messages)
            SELECT node_id, id_type, id_value, id_key, first_seq, ?, ?, messages FROM _id_known WHERE fresh""",
            (now, now),
        )
        e.execute(
            """UPDATE identity_nodes SET last_seen = ?, messages = identity_nodes.messages + k.messages
            FROM _id_known AS k WHERE identity_nodes.node_id = k.node_id AND NOT k.fresh""",
            (now,),
        )
        e.execute(
            """INSERT INTO _id_nodes (seq, node_id, priority)
            SELECT b.seq, k.node_id, b.priority FROM _id_batch AS b
            JOIN _id_known AS k ON k.id_type = b.id_type AND k.id_value = b.id_value"""
        )

    def _edges(self, now: datetime) -> None:
        e = self.engine
        e.execute(
            """INSERT INTO _id_anchor SELECT seq, node_id FROM (
                SELECT seq, node_id, row_number() OVER (PARTITION BY seq ORDER BY priority, node_id) AS rank
                FROM _id_nodes) AS r WHERE rank = 1"""
        )
        e.execute("INSERT INTO message_identities (seq, node_id) SELECT seq, node_id FROM _id_anchor")
        e.execute(
            """INSERT INTO _id_new_edges (a, b, seq)
            SELECT p.a, p.b, p.seq FROM (
                SELECT least(x.node_id, y.node_id) AS a, greatest(x.node_id, y.node_id) AS b, min(x.seq) AS seq
                FROM _id_anchor AS x JOIN _id_nodes AS y ON y.seq = x.seq AND y.node_id <> x.node_id
                GROUP BY least(x.node_id, y.node_id), greatest(x.node_id, y.node_id)) AS p
            WHERE NOT EXISTS (SELECT 1 FROM identity_edges AS ed WHERE ed.a = p.a AND ed.b = p.b)"""
        )
        e.execute(
            "INSERT INTO identity_edges (a, b, kind, seq, created_at) SELECT a, b, 'deterministic', seq, ? "
            "FROM _id_new_edges",
            (now,),
        )

    def _converge(self, relax: str) -> None:
        """Repeat a set-based relaxation until it changes nothing: ``relax`` is an UPDATE that gives each row
        what its neighbours offer where that is better (every row reads the previous round's values)."""
        for _ in range(MAX_ROUNDS):
            if not self.engine.execute_changed(relax):
                return
        raise RuntimeError("identity labels did not converge")  # pragma: no cover - bounded by the graph's size

    def _clusters(self) -> None:
        """Raw components (every edge counts) where the batch changed them: ``identity_nodes.cluster`` is the
        smallest node id of each, and the changed ones are listed in ``_id_touched``. Only a new identifier
        (``_id_known``) or a new edge changes a cluster: one whose identifiers the batch merely saw
        again keeps its parts and profiles as they are (they are a function of its identifiers, its edges and
        the cannot-link constraints, and a removed edge or a changed constraint recomputes its cluster itself)."""
        e = self.engine
        e.execute(
            """INSERT INTO _id_vertex (node_id, v)
            SELECT n.node_id, coalesce(n.cluster, n.node_id)
            FROM (SELECT node_id FROM _id_known WHERE fresh UNION SELECT a FROM _id_new_edges
                  UNION SELECT b FROM _id_new_edges) AS b JOIN identity_nodes AS n ON n.node_id = b.node_id"""
        )
        e.execute(
            """INSERT INTO _id_arc (x, y)
            SELECT DISTINCT va.v, vb.v FROM _id_new_edges AS ed
            JOIN _id_vertex AS va ON va.node_id = ed.a JOIN _id_vertex AS vb ON vb.node_id = ed.b
            WHERE va.v <> vb.v"""
        )
        e.execute("INSERT INTO _id_arc (x, y) SELECT y, x FROM _id_arc")
        e.execute("INSERT INTO _id_label (v, label) SELECT DISTINCT v, v FROM _id_vertex")
        self._converge(
            """UPDATE _id_label SET label = n.label FROM (
                SELECT a.x AS v, min(l.label) AS label FROM _id_arc AS a JOIN _id_label AS l ON l.v = a.y
                GROUP BY a.x) AS n
            WHERE _id_label.v = n.v AND n.label < _id_label.label"""
        )
        e.execute(
            """UPDATE identity_nodes SET cluster = l.label FROM _id_label AS l
            WHERE identity_nodes.cluster = l.v AND l.label <> l.v"""
        )
        e.execute(
            """UPDATE identity_nodes SET cluster = l.label FROM _id_vertex AS vx JOIN _id_label AS l ON l.v = vx.v
            WHERE identity_nodes.node_id = vx.node_id AND identity_nodes.cluster IS NULL"""
        )
        e.execute("INSERT INTO _id_touched (cluster) SELECT DISTINCT label FROM _id_label")

    def _parts(self, now: datetime) -> None:
        """Split each touched cluster into parts that keep the limits. First the guard: an identifier joined
        to more values of a stronger type than a profile may hold is shared and joins nobody. Then, while a
        part holds two values of a type allowed once per profile (the strongest such type first), each of
        those values seeds a part of its own and every other identifier joins the nearest seed (fewest edges, a
        probabilistic one counting as :data:`PROBABILISTIC_COST`; a tie goes to the seed seen first), never
        through another seed. Every edge between parts is refused and recorded (``identity_conflicts``)."""
        e = self.engine
        e.execute(
            f"""INSERT INTO _id_part (node_id, part, id_type, first_seq, once, priority)
            SELECT n.node_id, n.node_id, n.id_type, n.first_seq,
                   {per_type("n.id_type", "priority", only_limit_one=True)}, {per_type("n.id_type", "priority")}
            FROM identity_nodes AS n JOIN _id_touched AS t ON t.cluster = n.cluster"""
        )
        e.execute(
            f"""INSERT INTO _id_edge (a, b, cost, seq)
            SELECT ed.a, ed.b, CASE WHEN ed.kind = 'probabilistic' THEN {PROBABILISTIC_COST} ELSE 1 END, ed.seq
            FROM identity_edges AS ed JOIN _id_part AS pa ON pa.node_id = ed.a
            JOIN _id_part AS pb ON pb.node_id = ed.b"""
        )
        e.execute("INSERT INTO _id_edge (a, b, cost, seq) SELECT b, a, cost, seq FROM _id_edge")
        # The guard: an identifier joined to more values of a stronger type than a profile may hold (a browser
        # or kiosk used with more than 5 emails) is shared, not personal: it joins nobody.
        e.execute(
            f"""INSERT INTO _id_shared (node_id, reason)
            SELECT node_id, min('shared: more than ' || CAST({per_type("t", "limit")} AS VARCHAR)
                                || ' ' || t || ' values') FROM (
                SELECT p.node_id, q.id_type AS t, count(DISTINCT q.node_id) AS n
                FROM _id_edge AS ed JOIN _id_part AS p ON p.node_id = ed.a JOIN _id_part AS q ON q.node_id = ed.b
                WHERE q.priority < p.priority AND q.once IS NULL
                GROUP BY p.node_id, q.id_type) AS c
            WHERE n > {per_type("t", "limit")}
            GROUP BY node_id"""
        )
        e.execute(
            """INSERT INTO identity_conflicts (a, b, reason, found_at)
            SELECT r.a, r.b, r.reason, ? FROM (
                SELECT least(ed.a, ed.b) AS a, greatest(ed.a, ed.b) AS b, min(s.reason) AS reason
                FROM _id_edge AS ed JOIN _id_shared AS s ON s.node_id = ed.a
                GROUP BY least(ed.a, ed.b), greatest(ed.a, ed.b)) AS r
            WHERE NOT EXISTS (SELECT 1 FROM identity_conflicts AS c WHERE c.a = r.a AND c.b = r.b)""",
            (now,),
        )
        e.execute(
            """UPDATE identity_nodes SET shared = s.reason
            FROM _id_part AS p LEFT JOIN _id_shared AS s ON s.node_id = p.node_id
            WHERE identity_nodes.node_id = p.node_id
              AND (s.reason IS NOT NULL OR identity_nodes.shared IS NOT NULL)"""
        )
        e.execute("DELETE FROM _id_edge WHERE a IN (SELECT node_id FROM _id_shared) "
                  "OR b IN (SELECT node_id FROM _id_shared)")  # fmt: skip
        self._converge(  # what is still joined: the components of the remaining edges
            """UPDATE _id_part SET part = l.label FROM (
                SELECT ed.a AS v, min(p.part) AS label FROM _id_edge AS ed JOIN _id_part AS p ON p.node_id = ed.b
                GROUP BY ed.a) AS l
            WHERE _id_part.node_id = l.v AND l.label < _id_part.part"""
        )
        # What an operator said is separate (cannot-link constraints), before the limits.
        seeds = e.execute_changed(
            """INSERT INTO _id_seed (node_id, part, reason)
            SELECT DISTINCT x.node_id, x.part, 'cannot-link' FROM identity_cannot_link AS c
            JOIN _id_part AS pa ON pa.node_id = c.a JOIN _id_part AS pb ON pb.node_id = c.b
            JOIN _id_part AS x ON x.node_id = c.a OR x.node_id = c.b
            WHERE pa.part = pb.part"""
        )
        if seeds:
            self._split_around_seeds(now)
        for _ in range(len(IDENTIFIER_TYPES) + 1):
            e.execute("DELETE FROM _id_split")
            split = e.execute_changed(
                """INSERT INTO _id_split (part, id_type)
                SELECT part, min(id_type) FROM (
                    SELECT part, id_type, once, min(once) OVER (PARTITION BY part) AS strongest
                    FROM (SELECT part, id_type, once FROM _id_part WHERE once IS NOT NULL
                          GROUP BY part, id_type, once HAVING count(*) > 1) AS over
                ) AS v WHERE once = strongest GROUP BY part"""
            )
            if not split:
                return
            e.execute("DELETE FROM _id_seed")
            e.execute(
                """INSERT INTO _id_seed (node_id, part, reason)
                SELECT p.node_id, p.part, s.id_type || ' limit' FROM _id_part AS p
                JOIN _id_split AS s ON s.part = p.part AND s.id_type = p.id_type"""
            )
            self._split_around_seeds(now)
        raise RuntimeError("identity limits did not settle")  # pragma: no cover - one round per limited type

    def _split_around_seeds(self, now: datetime) -> None:
        """Split each part that has seeds (``_id_seed``, not empty) into one part per seed: every other identifier joins
        the nearest seed (fewest edges, never through another seed). Of two seeds equally near, the one reached
        over the older edge wins (the family computer stays with whoever logged in on it first). An identifier
        equally near two seeds (a shared mailbox, a recycled phone number) is *contested*: it goes with the
        winner of that tie, but does not pull what lies behind it along; those go to the nearest seed that is
        not behind a contested identifier (when there is none, with the tie's winner). The edges between the
        new parts are refused with the seeds' reason and stop joining anything."""
        e = self.engine
        e.execute("DELETE FROM _id_reach")
        e.execute(
            """INSERT INTO _id_reach (node_id, seed, key, relay)
            SELECT p.node_id, s.node_id IS NOT NULL,
                   CASE WHEN s.node_id IS NOT NULL THEN '000000' || lpad(CAST(p.first_seq AS VARCHAR), 20, '0')
                                                        || lpad(CAST(p.node_id AS VARCHAR), 20, '0') END, TRUE
            FROM _id_part AS p JOIN (SELECT DISTINCT part FROM _id_seed) AS sp ON sp.part = p.part
            LEFT JOIN _id_seed AS s ON s.node_id = p.node_id"""
        )
        for _ in range(MAX_ROUNDS):
            self._nearest_seeds()
            e.execute("DELETE FROM _id_contested")
            contested = e.execute_changed(  # reached at its distance from two seeds at once (through relays)
                """INSERT INTO _id_contested (node_id)
                SELECT r.node_id FROM _id_reach AS r JOIN _id_edge AS ed ON ed.a = r.node_id
                JOIN _id_reach AS n ON n.node_id = ed.b AND n.relay AND n.key IS NOT NULL
                WHERE NOT r.seed AND r.relay
                  AND CAST(left(n.key, 6) AS INTEGER) + ed.cost = CAST(left(r.key, 6) AS INTEGER)
                GROUP BY r.node_id HAVING count(DISTINCT substr(n.key, 27)) > 1"""
            )
            if not contested:
                break
            e.execute("UPDATE _id_reach SET fallback = coalesce(fallback, key)")
            e.execute("UPDATE _id_reach SET relay = FALSE WHERE node_id IN (SELECT node_id FROM _id_contested)")
            e.execute("UPDATE _id_reach SET key = NULL WHERE NOT seed")
        e.execute("UPDATE _id_reach SET key = fallback WHERE key IS NULL")
        e.execute(
            """INSERT INTO identity_conflicts (a, b, reason, found_at)
            SELECT ed.a, ed.b, min(s.reason), ?
            FROM _id_edge AS ed JOIN _id_reach AS ra ON ra.node_id = ed.a JOIN _id_reach AS rb ON rb.node_id = ed.b
            JOIN _id_part AS p ON p.node_id = ed.a JOIN _id_seed AS s ON s.part = p.part
            WHERE ed.a < ed.b AND substr(ra.key, 27) <> substr(rb.key, 27)
              AND NOT EXISTS (SELECT 1 FROM identity_conflicts AS c WHERE c.a = ed.a AND c.b = ed.b)
            GROUP BY ed.a, ed.b""",
            (now,),
        )
        e.execute(
            """UPDATE _id_part SET part = CAST(substr(r.key, 27) AS BIGINT) FROM _id_reach AS r
            WHERE _id_part.node_id = r.node_id"""
        )
        # An edge between parts no longer joins them.
        e.execute("DELETE FROM _id_kept")
        e.execute(
            """INSERT INTO _id_kept (a, b, cost, seq) SELECT ed.a, ed.b, ed.cost, ed.seq FROM _id_edge AS ed
            JOIN _id_part AS pa ON pa.node_id = ed.a JOIN _id_part AS pb ON pb.node_id = ed.b
            WHERE pa.part = pb.part"""
        )
        e.execute("DELETE FROM _id_edge")
        e.execute("INSERT INTO _id_edge (a, b, cost, seq) SELECT a, b, cost, seq FROM _id_kept")

    def _nearest_seeds(self) -> None:
        """Each identifier's key in ``_id_reach``: its distance to the nearest seed (6 digits), the sequence
        number of the edge it is reached over (20), the seed (20); smallest wins, over relaying neighbours."""
        self._converge(
            """UPDATE _id_reach SET key = x.key FROM (
                SELECT r.node_id, min(lpad(CAST(CAST(left(n.key, 6) AS INTEGER) + ed.cost AS VARCHAR), 6, '0')
                                      || lpad(CAST(ed.seq AS VARCHAR), 20, '0') || substr(n.key, 27)) AS key
                FROM _id_reach AS r JOIN _id_edge AS ed ON ed.a = r.node_id
                JOIN _id_reach AS n ON n.node_id = ed.b AND n.key IS NOT NULL AND n.relay
                WHERE NOT r.seed GROUP BY r.node_id) AS x
            WHERE _id_reach.node_id = x.node_id AND (_id_reach.key IS NULL OR x.key < _id_reach.key)"""
        )

    def _components(self, now: datetime, upto: int) -> tuple[int, int]:
        """Clusters and their parts where the batch touched them, then each part's profile id: the oldest
        profile it holds the first identifier of survives, others it holds are absorbed, a part that holds none
        is new (created, or split from a profile another part kept). Returns (created, absorbed)."""
        self._clusters()
        self.engine.execute(  # where a probabilistic edge was removed, the profiles are recomputed too
            """INSERT INTO _id_touched (cluster) SELECT DISTINCT n.cluster FROM identity_nodes AS n
            WHERE n.node_id IN (SELECT a FROM _mt_gone UNION SELECT b FROM _mt_gone)
              AND n.cluster NOT IN (SELECT cluster FROM _id_touched)"""
        )
        return self._assign(now, upto)

    def _assign(self, now: datetime, upto: int) -> tuple[int, int]:
        """Parts and profile ids for the clusters in ``_id_touched``; returns (created, absorbed)."""
        e = self.engine
        self._parts(now)
        # The profile each identifier of the touched parts had (one scan of the membership, used below).
        e.execute(
            """INSERT INTO _id_was (node_id, part, profile_id) SELECT p.node_id, p.part, m.profile_id
            FROM _id_part AS p JOIN identity_membership AS m ON m.node_id = p.node_id"""
        )
        # Which part keeps each previous profile: the one holding that profile's earliest identifier (of two
        # seen first in the same message, the stronger).
        e.execute(
            """INSERT INTO _id_claim (part, profile_id)
            SELECT part, profile_id FROM (
                SELECT p.part, m.profile_id,
                       row_number() OVER (PARTITION BY m.profile_id ORDER BY min(
                           lpad(CAST(p.first_seq AS VARCHAR), 20, '0') || lpad(CAST(p.priority AS VARCHAR), 4, '0')
                       ), p.part) AS rank
                FROM _id_part AS p JOIN _id_was AS m ON m.node_id = p.node_id
                GROUP BY p.part, m.profile_id) AS c
            WHERE rank = 1"""
        )
        e.execute(
            """INSERT INTO _id_owner (part, profile_id, profile_key, fresh)
            SELECT part, profile_id, profile_key, FALSE FROM (
                SELECT c.part, c.profile_id, x.profile_key,
                       row_number() OVER (PARTITION BY c.part ORDER BY x.first_seq, c.profile_id) AS rank
                FROM _id_claim AS c JOIN profiles_index AS x ON x.profile_id = c.profile_id) AS o
            WHERE rank = 1"""
        )
        # A part without a profile gets a new one (``fresh``), named after its first identifier (made unique if
        # that name is taken), and the next profile key.
        e.execute(
            """INSERT INTO _id_owner (part, profile_id, profile_key, fresh)
            SELECT f.part, CASE WHEN EXISTS (SELECT 1 FROM profiles_index AS x WHERE x.profile_id = f.name)
                                  OR EXISTS (SELECT 1 FROM profile_aliases AS a WHERE a.alias = f.name)
                                THEN 'prf_' || substr(md5(f.source || ':' || ?), 1, 20) ELSE f.name END,
                   nextval('profile_keys'), TRUE
            FROM (SELECT part, 'prf_' || substr(md5(id_type || ':' || id_value), 1, 20) AS name,
                         id_type || ':' || id_value AS source
                  FROM (SELECT p.part, n.id_type, n.id_value,
                               row_number() OVER (PARTITION BY p.part ORDER BY p.first_seq, p.node_id) AS rank
                        FROM _id_part AS p JOIN identity_nodes AS n ON n.node_id = p.node_id
                        WHERE NOT EXISTS (SELECT 1 FROM _id_owner AS o WHERE o.part = p.part)) AS r
                  WHERE rank = 1) AS f""",
            (str(upto),),
        )
        fresh = "(SELECT part, profile_id, profile_key FROM _id_owner WHERE fresh)"  # the parts whose profile is new
        created = e.execute_changed(  # created, or split off a profile another part kept
            f"""INSERT INTO identity_events (kind, profile_id, other_profile_id, happened_at)
            SELECT CASE WHEN m.profile_id IS NULL THEN 'created' ELSE 'split' END, f.profile_id, m.profile_id, ?
            FROM {fresh} AS f
            LEFT JOIN (SELECT part, max(profile_id) AS profile_id FROM _id_was GROUP BY part) AS m
                   ON m.part = f.part""",
            (now,),
        )
        if created:
            e.execute(
                f"""INSERT INTO profiles_index (profile_id, first_seq, created_at, profile_key)
                SELECT f.profile_id, min(p.first_seq), ?, f.profile_key
                FROM {fresh} AS f JOIN _id_part AS p ON p.part = f.part GROUP BY f.profile_id, f.profile_key""",
                (now,),
            )
        absorbed = "(SELECT c.profile_id AS old, o.profile_id AS new FROM _id_claim AS c " + (
            "JOIN _id_owner AS o ON o.part = c.part WHERE c.profile_id <> o.profile_id)"
        )
        merged = e.execute_changed(
            f"INSERT INTO identity_events (kind, profile_id, other_profile_id, happened_at) "
            f"SELECT 'merged', new, old, ? FROM {absorbed} AS a",
            (now,),
        )
        if merged:
            e.execute(f"UPDATE profile_aliases SET profile_id = a.new FROM {absorbed} AS a "
                      "WHERE profile_aliases.profile_id = a.old")  # fmt: skip
            e.execute(
                f"INSERT INTO profile_aliases (alias, profile_id, merged_at) SELECT old, new, ? FROM {absorbed} AS a",
                (now,),
            )
            e.execute(f"DELETE FROM profiles_index WHERE profile_id IN (SELECT old FROM {absorbed} AS a)")
        changed = "FROM _id_was AS w JOIN _id_owner AS o ON o.part = w.part WHERE o.profile_id <> w.profile_id"
        e.execute(  # the profiles stage computes these again
            f"INSERT INTO profiles_dirty (profile_id) SELECT w.profile_id {changed} UNION SELECT o.profile_id {changed}"
        )
        e.execute("DELETE FROM identity_membership WHERE node_id IN (SELECT node_id FROM _id_part)")
        e.execute(
            """INSERT INTO identity_membership (node_id, profile_id, since, profile_key)
            SELECT p.node_id, o.profile_id, ?, o.profile_key
            FROM _id_part AS p JOIN _id_owner AS o ON o.part = p.part""",
            (now,),
        )
        return created, merged
