"""The identity stage: consumes the governed stream from its offset and keeps the identity graph current.

Per micro-batch, in one transaction with the offset (all set-based SQL; the loop only repeats a statement
until the labels stop changing):

1. the identifiers of the batch's messages and records (:mod:`opencdp.identity.extract`) become nodes
   (``identity_nodes``, one per type and value);
2. each message links its identifiers to its strongest one, its *anchor* (``identity_edges``), and remembers
   the anchor (``message_identities``), through which any message resolves to its profile;
3. the components are recomputed only where the batch touched them: on a small graph whose vertices are the
   profiles of the batch's known nodes and its new nodes, and whose edges are the batch's new edges. A label
   propagation finds the components; each takes the oldest profile among them (the one whose first
   identifier was seen first) or, when it has none, a new profile id derived from its first identifier;
4. profiles absorbed by a merge keep resolving to the survivor (``profile_aliases``), and every creation and
   merge is an event (``identity_events``) for the later stages.

Not in this step yet (docs/identity.md): per-profile limits and the conflicts they record, the shared-value
guard, probabilistic matching, splits and cannot-link constraints.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from opencdp.identity.extract import identifiers
from opencdp.store.engine import Engine
from opencdp.store.raw_log import RawLog

CONSUMER = "identity"
BATCH_ROWS = 100_000
MAX_ROUNDS = 10_000
_GOVERNED = "SELECT gseq, seq, source_id, type, user_id, anonymous_id, message FROM governed"
_TEMP = (
    "CREATE TEMP TABLE IF NOT EXISTS _id_batch (seq BIGINT, id_type VARCHAR, id_value VARCHAR, priority INTEGER)",
    "CREATE TEMP TABLE IF NOT EXISTS _id_nodes (seq BIGINT, node_id BIGINT, priority INTEGER)",
    "CREATE TEMP TABLE IF NOT EXISTS _id_new_edges (a BIGINT, b BIGINT)",
    "CREATE TEMP TABLE IF NOT EXISTS _id_vertex (node_id BIGINT, v VARCHAR, profile_id VARCHAR)",
    "CREATE TEMP TABLE IF NOT EXISTS _id_label (v VARCHAR, label VARCHAR)",
    "CREATE TEMP TABLE IF NOT EXISTS _id_next (v VARCHAR, label VARCHAR)",
    "CREATE TEMP TABLE IF NOT EXISTS _id_arc (x VARCHAR, y VARCHAR)",
    "CREATE TEMP TABLE IF NOT EXISTS _id_owner (v VARCHAR, profile_id VARCHAR)",
)


@dataclass(frozen=True)
class Resolved:
    messages: int
    created: int
    merged: int


class Identity:
    def __init__(self, engine: Engine, raw_log: RawLog) -> None:
        self.engine = engine
        self.raw_log = raw_log

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
            for ddl in _TEMP:
                e.execute(ddl)
            for table in ("_id_batch", "_id_nodes", "_id_new_edges", "_id_vertex", "_id_label", "_id_owner"):
                e.execute(f"DELETE FROM {table}")
            e.execute(
                f"INSERT INTO _id_batch {identifiers(f'{_GOVERNED} WHERE gseq > {int(last)} AND gseq <= {int(upto)}')}"
            )
            self._nodes(now)
            self._edges(now)
            created, merged = self._components(now)
            self.raw_log.commit(CONSUMER, upto)
        return created, merged

    def _nodes(self, now: datetime) -> None:
        e = self.engine
        e.execute(
            """INSERT INTO identity_nodes (node_id, id_type, id_value, first_seq, first_seen, last_seen, messages)
            SELECT base.n + row_number() OVER (ORDER BY first_seq, id_type, id_value), id_type, id_value, first_seq,
                   ?, ?, 0
            FROM (SELECT id_type, id_value, min(seq) AS first_seq FROM _id_batch AS b
                  WHERE NOT EXISTS (SELECT 1 FROM identity_nodes AS n
                                    WHERE n.id_type = b.id_type AND n.id_value = b.id_value)
                  GROUP BY id_type, id_value) AS fresh
            CROSS JOIN (SELECT coalesce(max(node_id), 0) AS n FROM identity_nodes) AS base""",
            (now, now),
        )
        e.execute(
            """INSERT INTO _id_nodes (seq, node_id, priority)
            SELECT b.seq, n.node_id, b.priority FROM _id_batch AS b
            JOIN identity_nodes AS n ON n.id_type = b.id_type AND n.id_value = b.id_value"""
        )
        e.execute(
            """UPDATE identity_nodes SET last_seen = ?, messages = identity_nodes.messages + c.n
            FROM (SELECT node_id, count(DISTINCT seq) AS n FROM _id_nodes GROUP BY node_id) AS c
            WHERE identity_nodes.node_id = c.node_id""",
            (now,),
        )

    def _edges(self, now: datetime) -> None:
        e = self.engine
        e.execute("""CREATE TEMP TABLE IF NOT EXISTS _id_anchor AS SELECT seq, node_id FROM _id_nodes WHERE FALSE""")
        e.execute("DELETE FROM _id_anchor")
        e.execute(
            """INSERT INTO _id_anchor SELECT seq, node_id FROM (
                SELECT seq, node_id, row_number() OVER (PARTITION BY seq ORDER BY priority, node_id) AS rank
                FROM _id_nodes) AS r WHERE rank = 1"""
        )
        e.execute("INSERT INTO message_identities (seq, node_id) SELECT seq, node_id FROM _id_anchor")
        e.execute(
            """INSERT INTO _id_new_edges (a, b)
            SELECT DISTINCT least(x.node_id, y.node_id), greatest(x.node_id, y.node_id)
            FROM _id_anchor AS x JOIN _id_nodes AS y ON y.seq = x.seq AND y.node_id <> x.node_id
            WHERE NOT EXISTS (SELECT 1 FROM identity_edges AS ed
                              WHERE ed.a = least(x.node_id, y.node_id) AND ed.b = greatest(x.node_id, y.node_id))"""
        )
        e.execute(
            """INSERT INTO identity_edges (a, b, kind, seq, created_at)
            SELECT n.a, n.b, 'deterministic', min(x.seq), ?
            FROM _id_new_edges AS n
            JOIN _id_anchor AS x ON x.node_id IN (n.a, n.b)
            JOIN _id_nodes AS y ON y.seq = x.seq AND y.node_id IN (n.a, n.b) AND y.node_id <> x.node_id
            GROUP BY n.a, n.b""",
            (now,),
        )

    def _components(self, now: datetime) -> tuple[int, int]:
        """Components of the touched part of the graph; returns (profiles created, profiles absorbed)."""
        e = self.engine
        # Vertices: a known node stands for its profile; a new node for itself. A vertex's key sorts by the
        # first sequence number of its profile (or node), so a component's smallest key is its oldest vertex.
        e.execute(
            """INSERT INTO _id_vertex (node_id, v, profile_id)
            SELECT n.node_id,
                   CASE WHEN p.profile_id IS NOT NULL THEN lpad(CAST(p.first_seq AS VARCHAR), 20, '0') || 'p'
                                                           || p.profile_id
                        ELSE lpad(CAST(n.first_seq AS VARCHAR), 20, '0') || 'n' || CAST(n.node_id AS VARCHAR) END,
                   p.profile_id
            FROM (SELECT DISTINCT node_id FROM _id_nodes) AS b
            JOIN identity_nodes AS n ON n.node_id = b.node_id
            LEFT JOIN identity_membership AS m ON m.node_id = n.node_id
            LEFT JOIN profiles_index AS p ON p.profile_id = m.profile_id"""
        )
        e.execute("DELETE FROM _id_arc")
        e.execute(
            """INSERT INTO _id_arc (x, y)
            SELECT DISTINCT va.v, vb.v FROM _id_new_edges AS ed
            JOIN _id_vertex AS va ON va.node_id = ed.a JOIN _id_vertex AS vb ON vb.node_id = ed.b
            WHERE va.v <> vb.v"""
        )
        e.execute("INSERT INTO _id_arc (x, y) SELECT y, x FROM _id_arc")
        e.execute("INSERT INTO _id_label (v, label) SELECT DISTINCT v, v FROM _id_vertex")
        for _ in range(MAX_ROUNDS):  # each round lowers a label to its smallest neighbour's: a few rounds
            e.execute("DELETE FROM _id_next")
            e.execute(
                """INSERT INTO _id_next (v, label)
                SELECT a.x, min(l.label) FROM _id_arc AS a JOIN _id_label AS l ON l.v = a.y
                GROUP BY a.x"""
            )
            changed = e.fetch_one(
                "SELECT count(*) FROM _id_next AS n JOIN _id_label AS l ON l.v = n.v WHERE n.label < l.label"
            )
            if not changed or not changed[0]:
                break
            e.execute(
                """UPDATE _id_label SET label = n.label FROM _id_next AS n
                WHERE _id_label.v = n.v AND n.label < _id_label.label"""
            )
        else:  # pragma: no cover - a component has at most as many rounds as vertices
            raise RuntimeError("identity components did not converge")
        # Each component's owner: the profile its oldest vertex stands for, or a new one named after its node.
        e.execute(
            """INSERT INTO _id_owner (v, profile_id)
            SELECT l.v, coalesce(top.profile_id, 'prf_' || substr(md5(n.id_type || ':' || n.id_value), 1, 20))
            FROM _id_label AS l
            JOIN (SELECT v, max(profile_id) AS profile_id, min(node_id) AS node_id FROM _id_vertex GROUP BY v) AS top
              ON top.v = l.label
            LEFT JOIN identity_nodes AS n ON n.node_id = top.node_id"""
        )
        fresh = "(SELECT DISTINCT profile_id FROM _id_owner AS o " + (
            "WHERE NOT EXISTS (SELECT 1 FROM profiles_index AS p WHERE p.profile_id = o.profile_id))"
        )
        created = e.fetch_one(f"SELECT count(*) FROM {fresh} AS f")
        e.execute(
            f"INSERT INTO identity_events (kind, profile_id, other_profile_id, happened_at) "
            f"SELECT 'created', profile_id, NULL, ? FROM {fresh} AS f",
            (now,),
        )
        e.execute(
            """INSERT INTO profiles_index (profile_id, first_seq, created_at)
            SELECT o.profile_id, min(n.first_seq), ? FROM _id_owner AS o
            JOIN _id_vertex AS v ON v.v = o.v JOIN identity_nodes AS n ON n.node_id = v.node_id
            WHERE NOT EXISTS (SELECT 1 FROM profiles_index AS p WHERE p.profile_id = o.profile_id)
            GROUP BY o.profile_id""",
            (now,),
        )
        # Absorbed profiles: vertices standing for a profile whose component belongs to another.
        absorbed = "(SELECT DISTINCT v.profile_id AS old, o.profile_id AS new FROM _id_owner AS o " + (
            "JOIN _id_vertex AS v ON v.v = o.v WHERE v.profile_id IS NOT NULL AND v.profile_id <> o.profile_id)"
        )
        merged = e.fetch_one(f"SELECT count(*) FROM {absorbed} AS a")
        e.execute(
            f"INSERT INTO identity_events (kind, profile_id, other_profile_id, happened_at) "
            f"SELECT 'merged', new, old, ? FROM {absorbed} AS a",
            (now,),
        )
        e.execute(
            f"""UPDATE profile_aliases SET profile_id = a.new FROM {absorbed} AS a
            WHERE profile_aliases.profile_id = a.old"""
        )
        e.execute(f"INSERT INTO profile_aliases (alias, profile_id, merged_at) SELECT old, new, ? FROM {absorbed} AS a",
                  (now,))  # fmt: skip
        e.execute(
            f"""UPDATE identity_membership SET profile_id = a.new FROM {absorbed} AS a
            WHERE identity_membership.profile_id = a.old"""
        )
        e.execute(f"DELETE FROM profiles_index WHERE profile_id IN (SELECT old FROM {absorbed} AS a)")
        e.execute(
            """INSERT INTO identity_membership (node_id, profile_id, since)
            SELECT v.node_id, o.profile_id, ? FROM _id_vertex AS v JOIN _id_owner AS o ON o.v = v.v
            WHERE NOT EXISTS (SELECT 1 FROM identity_membership AS m WHERE m.node_id = v.node_id)""",
            (now,),
        )
        return int(created[0]) if created else 0, int(merged[0]) if merged else 0
