"""Probabilistic matching inside the identity stage: keeps the match records current, scores the pairs a
micro-batch can change, and turns the scores into probabilistic edges of the one identity graph.

Per batch (set-based SQL, in the stage's transaction):

1. the batch's records and identify calls become match records (identity/features.py); a record whose values
   changed (a new version of a CRM row, newer traits) counts as new evidence;
2. with a trained model, every pair of a new or changed match record and any match record that agree on a
   blocking feature is scored (identity/score.py), so a confidence rises or falls as evidence arrives;
3. pairs at or above the review threshold are kept in ``identity_matches`` with their status (``merge``,
   ``review`` or ``below``, once they were above); a pair whose first names and birth dates both disagree
   outright (and whose national ids do not agree) is never merged automatically, whatever its score: at
   most it waits for review (a couple sharing an address and a mailbox); an operator's decision
   (``accepted``, ``rejected``) sticks;
4. the probabilistic edges between the identifiers the match records hang on follow the pairs: added where a
   pair reaches the merge threshold (or was accepted), removed where none does any more. The stage then
   recomputes the profiles those edges touch, so a falling confidence splits a profile, with events.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from opencdp.identity.features import candidates as candidate_rows
from opencdp.identity.features import match_records
from opencdp.identity.score import candidates, scored
from opencdp.model.matching import FEATURES, NEVER_MERGED_WITHOUT, UNLESS_AGREEING, Thresholds, blocking_rules
from opencdp.store.engine import Engine
from opencdp.store.plans import MatchModelStore

_FEATURES = [f.name for f in FEATURES]
_GAMMAS = [f"g_{n}" for n in _FEATURES]
TEMP = {
    "_mt_rows": "seq BIGINT, source_id VARCHAR, type VARCHAR, message JSON, node_id BIGINT",
    "_mt_found": "match_key VARCHAR, node_id BIGINT, seq BIGINT, " + ", ".join(f"{n} VARCHAR" for n in _FEATURES),
    "_mt_batch": "match_id BIGINT",
    "_mt_scored": "id_l BIGINT, id_r BIGINT, "
    + ", ".join(f"{g} SMALLINT" for g in _GAMMAS)
    + ", match_weight DOUBLE, match_probability DOUBLE",
    "_mt_nodes": "node_id BIGINT",
    "_mt_want": "a BIGINT, b BIGINT, kind VARCHAR, seq BIGINT, probability DOUBLE",
    "_mt_gone": "a BIGINT, b BIGINT",
}
"""Per-batch working tables (temporary: per connection, emptied by the stage at the start of each batch)."""


@dataclass(frozen=True)
class Model:
    splink: dict[str, Any]
    thresholds: Thresholds
    version: int

    @property
    def blocking(self) -> list[tuple[str, ...]]:
        return blocking_rules({c["output_column_name"] for c in self.splink["comparisons"]})


def load_model(engine: Engine) -> Model | None:
    found = MatchModelStore(engine).get()
    if found is None:
        return None
    doc, version = found
    return Model(doc["splink"], Thresholds(**doc["thresholds"]), version)


class Matcher:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self, rows: str) -> None:
        """Upsert the match records of ``rows`` (governed rows with their anchor ``node_id``); the new and
        changed ones are listed in ``_mt_batch``."""
        e = self.engine
        if not e.execute_changed(f"INSERT INTO _mt_rows {candidate_rows(rows)}"):
            return
        e.execute(f"INSERT INTO _mt_found {match_records('SELECT * FROM _mt_rows')}")
        changed = " OR ".join(f"m.{c} IS DISTINCT FROM f.{c}" for c in ["node_id", *_FEATURES])
        e.execute(
            f"""INSERT INTO _mt_batch (match_id) SELECT m.match_id FROM _mt_found AS f
            JOIN identity_match_records AS m ON m.match_key = f.match_key WHERE f.seq > m.seq AND ({changed})"""
        )
        e.execute(  # the old identifiers of changed records lose the edges those records made
            """INSERT INTO _mt_nodes (node_id) SELECT m.node_id FROM identity_match_records AS m
            JOIN _mt_batch AS b ON b.match_id = m.match_id"""
        )
        assign = ", ".join(f"{c} = f.{c}" for c in ["node_id", "seq", *_FEATURES])
        e.execute(
            f"""UPDATE identity_match_records SET {assign} FROM _mt_found AS f
            WHERE identity_match_records.match_key = f.match_key
              AND identity_match_records.match_id IN (SELECT match_id FROM _mt_batch)"""
        )
        row = e.fetch_one("SELECT coalesce(max(match_id), 0) FROM identity_match_records")
        top = int(row[0]) if row else 0
        names = ["match_key", "node_id", "seq", *_FEATURES]
        columns = ", ".join(names)
        e.execute(
            f"""INSERT INTO identity_match_records (match_id, {columns})
            SELECT {top} + row_number() OVER (ORDER BY f.seq, f.match_key), {", ".join("f." + c for c in names)}
            FROM _mt_found AS f
            WHERE NOT EXISTS (SELECT 1 FROM identity_match_records AS m WHERE m.match_key = f.match_key)"""
        )
        e.execute(
            f"INSERT INTO _mt_batch (match_id) SELECT match_id FROM identity_match_records WHERE match_id > {top}"
        )

    def all_records(self) -> None:
        """Every match record counts as new evidence (after training, or a change of thresholds)."""
        self.engine.execute("INSERT INTO _mt_batch (match_id) SELECT match_id FROM identity_match_records")

    def score(self, now: datetime, *, every_record: bool = False) -> None:
        """Score the pairs of ``_mt_batch`` (``every_record``: all the match records are in it) with the
        trained model (if any) and bring the probabilistic edges in line: new edges are added to
        ``identity_edges`` and ``_id_new_edges``; removed ones are listed in ``_mt_gone``."""
        e = self.engine
        found = e.fetch_one("SELECT count(*) FROM _mt_batch")
        if not found or not found[0]:
            return
        model = load_model(e)
        if model is None:
            return
        pairs = candidates(model.blocking, None if every_record else "_mt_batch")
        e.execute(f"INSERT INTO _mt_scored {scored(model.splink, pairs, every_value=every_record)}")
        t = model.thresholds
        disagree = " AND ".join(
            [f"coalesce(s.g_{f} = 0, FALSE)" for f in NEVER_MERGED_WITHOUT]
            + [f"NOT coalesce(s.g_{f} > 0, FALSE)" for f in UNLESS_AGREEING]
        )
        status = (
            f"CASE WHEN s.match_probability >= {t.merge!r} AND NOT ({disagree}) THEN 'merge' "
            f"WHEN s.match_probability >= {t.review!r} THEN 'review' ELSE 'below' END"
        )
        gammas = ", ".join(_GAMMAS)
        e.execute(  # pairs that fell out of blocking altogether no longer support anything
            """UPDATE identity_matches SET status = 'below', scored_at = ?
            WHERE (id_l IN (SELECT match_id FROM _mt_batch) OR id_r IN (SELECT match_id FROM _mt_batch))
              AND NOT EXISTS (SELECT 1 FROM _mt_scored AS s WHERE s.id_l = identity_matches.id_l
                                                              AND s.id_r = identity_matches.id_r)""",
            (now,),
        )
        assign = ", ".join(f"{g} = s.{g}" for g in _GAMMAS)
        e.execute(
            f"""UPDATE identity_matches SET {assign}, match_weight = s.match_weight,
                   match_probability = s.match_probability, status = {status}, node_l = l.node_id,
                   node_r = r.node_id, model_version = ?, scored_at = ?
            FROM _mt_scored AS s JOIN identity_match_records AS l ON l.match_id = s.id_l
            JOIN identity_match_records AS r ON r.match_id = s.id_r
            WHERE identity_matches.id_l = s.id_l AND identity_matches.id_r = s.id_r""",
            (model.version, now),
        )
        e.execute(
            f"""INSERT INTO identity_matches (id_l, id_r, node_l, node_r, {gammas}, match_weight,
                                              match_probability, status, model_version, scored_at)
            SELECT s.id_l, s.id_r, l.node_id, r.node_id, {", ".join("s." + g for g in _GAMMAS)}, s.match_weight,
                   s.match_probability, {status}, ?, ?
            FROM _mt_scored AS s JOIN identity_match_records AS l ON l.match_id = s.id_l
            JOIN identity_match_records AS r ON r.match_id = s.id_r
            WHERE s.match_probability >= {t.review!r}
              AND NOT EXISTS (SELECT 1 FROM identity_matches AS m WHERE m.id_l = s.id_l AND m.id_r = s.id_r)""",
            (model.version, now),
        )
        e.execute(
            """INSERT INTO _mt_nodes (node_id) SELECT m.node_id FROM identity_match_records AS m
            JOIN _mt_batch AS b ON b.match_id = m.match_id"""
        )
        self.edges(now)

    def edges(self, now: datetime) -> None:
        """Make the probabilistic edges at the identifiers in ``_mt_nodes`` what the pairs say now."""
        e = self.engine
        touched = "(SELECT DISTINCT node_id FROM _mt_nodes)"
        e.execute(
            f"""INSERT INTO _mt_want (a, b, kind, seq, probability)
            SELECT least(m.node_l, m.node_r), greatest(m.node_l, m.node_r),
                   CASE WHEN max(CASE WHEN m.decision = 'accepted' THEN 1 ELSE 0 END) = 1
                        THEN 'reviewed' ELSE 'probabilistic' END,
                   max(greatest(l.seq, r.seq)), max(m.match_probability)
            FROM identity_matches AS m
            JOIN identity_match_records AS l ON l.match_id = m.id_l
            JOIN identity_match_records AS r ON r.match_id = m.id_r
            WHERE m.node_l <> m.node_r
              AND ((m.status = 'merge' AND m.decision IS NULL) OR m.decision = 'accepted')
              AND (m.node_l IN {touched} OR m.node_r IN {touched})
            GROUP BY least(m.node_l, m.node_r), greatest(m.node_l, m.node_r)"""
        )

        def mine(t: str) -> str:
            return f"{t}.kind IN ('probabilistic', 'reviewed') AND ({t}.a IN {touched} OR {t}.b IN {touched})"

        e.execute(
            f"""INSERT INTO _mt_gone (a, b) SELECT ed.a, ed.b FROM identity_edges AS ed
            WHERE {mine("ed")} AND NOT EXISTS (SELECT 1 FROM _mt_want AS w WHERE w.a = ed.a AND w.b = ed.b
                                               AND w.kind = ed.kind)"""
        )
        e.execute(
            f"""DELETE FROM identity_edges WHERE {mine("identity_edges")}
            AND EXISTS (SELECT 1 FROM _mt_gone AS g WHERE g.a = identity_edges.a AND g.b = identity_edges.b)"""
        )
        e.execute(
            """UPDATE identity_edges SET probability = w.probability FROM _mt_want AS w
            WHERE identity_edges.a = w.a AND identity_edges.b = w.b AND identity_edges.kind = w.kind"""
        )
        e.execute(
            """INSERT INTO _id_new_edges (a, b, seq) SELECT w.a, w.b, w.seq FROM _mt_want AS w
            WHERE NOT EXISTS (SELECT 1 FROM identity_edges AS ed WHERE ed.a = w.a AND ed.b = w.b
                                                                  AND ed.kind = w.kind)"""
        )
        e.execute(
            """INSERT INTO identity_edges (a, b, kind, seq, created_at, probability)
            SELECT w.a, w.b, w.kind, w.seq, ?, w.probability FROM _mt_want AS w
            WHERE NOT EXISTS (SELECT 1 FROM identity_edges AS ed WHERE ed.a = w.a AND ed.b = w.b
                                                                  AND ed.kind = w.kind)""",
            (now,),
        )


def model_document(splink: dict[str, Any], thresholds: Thresholds, records: int) -> dict[str, Any]:
    return {
        "splink": splink,
        "thresholds": {"merge": thresholds.merge, "review": thresholds.review},
        "trained_on": records,
    }
