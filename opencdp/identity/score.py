"""A trained match model (Splink's settings document) compiled to set-based SQL (pure functions, no I/O).

Scoring follows Splink's Fellegi-Sunter arithmetic exactly (tests compare it with Splink's own ``predict``):
each comparison's first level whose condition holds gives ``log2(m/u)`` (a null level gives 0); a level with
term-frequency adjustment adds ``w * (log2(u_exact) - log2(max(tf_l, tf_r)))``, where ``tf`` is the value's
share of the non-null values among all match records; the match weight is the prior's ``log2(p/(1-p))`` plus
those, and the probability ``2^w / (1 + 2^w)``. The level each comparison took is kept (``g_<feature>``, Splink's
comparison vector value: -1 null, then the levels from the strongest down to 0), so a merge can be explained.

The level conditions are Splink's DuckDB SQL; the engine transpiles them like every statement (PostgreSQL has
``jaro_winkler_similarity`` and ``levenshtein`` from store/schema.py's helpers).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from opencdp.model.matching import FEATURES

RECORDS = "identity_match_records"


@dataclass(frozen=True)
class Level:
    condition: str
    gamma: int
    label: str
    weight: float
    """log2(m/u); 0 for a null level and for a level Splink could not estimate."""
    tf_column: str | None
    tf_weight: float
    u_exact: float | None
    tf_minimum: float


@dataclass(frozen=True)
class Compared:
    feature: str
    levels: tuple[Level, ...]


UNOBSERVED_U = 1e-6
"""The u of a level never seen among the random pairs training sampled (a typo'd email), as Splink takes it."""


def _weight(level: dict[str, Any]) -> float:
    m, u = level.get("m_probability"), level.get("u_probability")
    if level.get("is_null_level") or not m:
        return 0.0
    return math.log2(float(m) / float(u or UNOBSERVED_U))


def compile_model(model: dict[str, Any]) -> tuple[float, tuple[Compared, ...]]:
    """The prior weight and each comparison's levels, from Splink's settings document."""
    p = float(model["probability_two_random_records_match"])
    comparisons = []
    for c in model["comparisons"]:
        raw = c["comparison_levels"]
        non_null = [lv for lv in raw if not lv.get("is_null_level")]
        exact = next(
            (lv for lv in raw if lv.get("tf_adjustment_column") and lv["sql_condition"].count("=") == 1
             and "_l\" = \"" in lv["sql_condition"]),
            None,
        )  # fmt: skip
        levels = []
        for lv in raw:
            gamma = -1 if lv.get("is_null_level") else len(non_null) - 1 - non_null.index(lv)
            levels.append(
                Level(
                    condition=lv["sql_condition"],
                    gamma=gamma,
                    label=lv.get("label_for_charts") or lv["sql_condition"],
                    weight=_weight(lv),
                    tf_column=lv.get("tf_adjustment_column"),
                    tf_weight=float(lv.get("tf_adjustment_weight", 1.0)),
                    u_exact=float(exact["u_probability"]) if exact and exact.get("u_probability") else None,
                    tf_minimum=float(lv.get("tf_minimum_u_value", 0.0)),
                )
            )
        comparisons.append(Compared(c["output_column_name"], tuple(levels)))
    return math.log2(p / (1 - p)), tuple(comparisons)


def tf_columns(compared: tuple[Compared, ...]) -> list[str]:
    return sorted({lv.tf_column for c in compared for lv in c.levels if lv.tf_column})


def candidates(blocking: list[tuple[str, ...]], batch: str | None) -> str:
    """Pairs (``id_l`` < ``id_r``) of a batch match record and any match record that agree exactly on all the
    features of one of the ``blocking`` rules (equi-joins, one per rule); ``batch`` None: every record is in
    the batch, and each pair is joined once (no picking out)."""
    if batch is None:
        return " UNION ".join(
            f"""SELECT l.match_id AS id_l, r.match_id AS id_r
            FROM {RECORDS} AS l JOIN {RECORDS} AS r ON {" AND ".join(f"r.{f} = l.{f}" for f in rule)}
            AND l.match_id < r.match_id"""
            for rule in blocking
        )
    return " UNION ".join(
        f"""SELECT least(b.match_id, m.match_id) AS id_l, greatest(b.match_id, m.match_id) AS id_r
        FROM {RECORDS} AS b JOIN {RECORDS} AS m ON {" AND ".join(f"m.{f} = b.{f}" for f in rule)}
        WHERE b.match_id IN (SELECT match_id FROM {batch}) AND m.match_id <> b.match_id"""
        for rule in blocking
    )


def scored(model: dict[str, Any], pairs: str, *, every_value: bool = False) -> str:
    """``id_l``, ``id_r``, one ``g_<feature>`` per feature (NULL where the model has no comparison for it),
    ``match_weight`` and ``match_probability`` for the pairs of relation ``pairs``. Each record of the pairs
    is read once with the term frequencies of its values (``_rec``), before the pairs are put together: a join
    per record and feature, not two per pair. The frequencies are counted for the pairs' records' values
    only, or with ``every_value`` (every record is in a pair, or nearly) for all of them: the same figures,
    cheaper then (no picking out)."""
    prior, compared = compile_model(model)
    tfs = tf_columns(compared)
    used = sorted({c.feature for c in compared} | set(tfs))

    sides = RECORDS if every_value else "_sides"
    picked = (
        ""
        if every_value
        else f"""_sides AS MATERIALIZED (SELECT * FROM {RECORDS} WHERE match_id IN (
            SELECT id_l FROM _pairs UNION SELECT id_r FROM _pairs)),"""
    )

    def values(c: str) -> str:
        return f"t.{c} IS NOT NULL" if every_value else f"t.{c} IN (SELECT {c} FROM _sides)"

    # a value's term frequency: its share of the column's filled values
    tf_ctes = "".join(
        f"""_tf_{c} AS (SELECT t.{c} AS v, CAST(count(*) AS DOUBLE) / (SELECT count({c}) FROM {RECORDS}) AS tf
        FROM {RECORDS} AS t WHERE {values(c)} GROUP BY t.{c}),"""
        for c in tfs
    )
    record_tfs = "".join(f", x_{c}.tf AS tf_{c}" for c in tfs)
    tf_joins = "".join(f" LEFT JOIN _tf_{c} AS x_{c} ON x_{c}.v = s.{c}" for c in tfs)
    columns = ", ".join(f'l.{c} AS "{c}_l", r.{c} AS "{c}_r"' for c in used)
    tf_values = "".join(f', l.tf_{c} AS "tf_{c}_l", r.tf_{c} AS "tf_{c}_r"' for c in tfs)
    gammas = []
    weights = []
    for c in compared:
        whens = " ".join(
            f"WHEN {lv.condition} THEN {lv.gamma}" for lv in c.levels if lv.condition.strip().upper() != "ELSE"
        )
        gammas.append(f'CASE {whens} ELSE 0 END AS "g_{c.feature}"')
        terms = " ".join(f"WHEN {lv.gamma} THEN {lv.weight!r}" for lv in c.levels)
        weights.append(f'CASE "g_{c.feature}" {terms} ELSE 0 END')
        for lv in c.levels:
            if lv.tf_column and lv.u_exact and lv.gamma >= 0 and lv.tf_weight:
                t = lv.tf_column
                tf_l, tf_r = f'coalesce("tf_{t}_l", "tf_{t}_r")', f'coalesce("tf_{t}_r", "tf_{t}_l")'
                log2_tf = f"ln(greatest({tf_l}, {tf_r}, {lv.tf_minimum!r})) * {1 / math.log(2)!r}"
                weights.append(
                    f'CASE WHEN "g_{c.feature}" = {lv.gamma} AND coalesce("tf_{t}_l", "tf_{t}_r") IS NOT NULL '
                    f"THEN {lv.tf_weight!r} * ({math.log2(lv.u_exact)!r} - {log2_tf}) ELSE 0 END"
                )
    tf_passed = "".join(f', "tf_{c}_l", "tf_{c}_r"' for c in tfs)
    all_g = ", ".join(
        f'"g_{f.name}"' if f.name in {c.feature for c in compared} else f'CAST(NULL AS SMALLINT) AS "g_{f.name}"'
        for f in FEATURES
    )
    weight = " + ".join([repr(prior), *weights])
    read = ", ".join(f"s.{c}" for c in used)
    return f"""WITH _pairs AS MATERIALIZED ({pairs}), {picked} {tf_ctes}
    _rec AS MATERIALIZED (SELECT s.match_id, {read}{record_tfs} FROM {sides} AS s{tf_joins}),
    _cmp AS (SELECT p.id_l, p.id_r, {columns}{tf_values} FROM _pairs AS p
             JOIN _rec AS l ON l.match_id = p.id_l JOIN _rec AS r ON r.match_id = p.id_r),
    _gamma AS (SELECT id_l, id_r, {", ".join(gammas)}{tf_passed} FROM _cmp),
    _weighted AS (SELECT id_l, id_r, {all_g}, {weight} AS match_weight FROM _gamma)
    SELECT *, 1 / (1 + pow(2, -match_weight)) AS match_probability FROM _weighted"""
