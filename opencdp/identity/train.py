"""Training the match model with Splink (Fellegi-Sunter): the prior from near-certain pairs, u from the values'
frequencies and random pairs (:func:`u_probabilities`), m by expectation maximisation, term frequencies for names
and places.

Splink runs on its own in-memory DuckDB over the match records the store hands over as Arrow (a sample of at
most :data:`MAX_TRAINING_RECORDS`), whichever engine the store is; the trained model is Splink's settings
document, which identity/score.py compiles to the store's SQL. Training is occasional (``opencdp identity
train``); scoring runs in every micro-batch.
"""

from __future__ import annotations

import logging
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import splink.comparison_level_library as cll
import splink.comparison_library as cl
from splink import DuckDBAPI, Linker, SettingsCreator, block_on

from opencdp.errors import Rejected
from opencdp.identity.score import UNOBSERVED_U
from opencdp.model.matching import (
    FEATURES,
    IDENTIFYING,
    MIN_FEATURE_SHARE,
    MIN_TRAINING_RECORDS,
    PRIOR_BLOCK,
    TRAINING_BLOCKS,
    Feature,
    blocking_rules,
)

MIN_LIKELY_PAIRS = 5
"""A feature must be filled on both sides of at least this many near-certain matches to be learnt."""

MAX_TRAINING_RECORDS = 500_000
"""A larger population is sampled down to this many match records before training."""

log = logging.getLogger("opencdp.identity")

PRIOR_RECALL = 0.7
EM_PAIRS = 50_000
"""Expectation maximisation compares at most about this many pairs per training block (Splink samples the
records of a larger block, the same way in every run)."""
U_PAIRS = 100_000
"""Random pairs of records compared for the u of the levels between exact agreement and none."""
SEED = 42


def comparison(f: Feature) -> Any:
    """The Splink comparison of a feature (docs/identity.md lists the levels)."""
    c = f.name
    if f.comparison == "name":
        return cl.NameComparison(c).configure(term_frequency_adjustments=True)
    if f.comparison == "date":
        return cl.CustomComparison(
            output_column_name=c,
            comparison_levels=[
                cll.NullLevel(c),
                cll.ExactMatchLevel(c).configure(tf_adjustment_column=c),
                within_edits(c, 1),
                cll.CustomLevel(f'substr("{c}_l", 1, 7) = substr("{c}_r", 1, 7)', "same year and month"),
                cll.ElseLevel(),
            ],
        )
    if f.comparison == "exact":
        return cl.ExactMatch(c).configure(term_frequency_adjustments=True)
    return cl.CustomComparison(
        output_column_name=c,
        comparison_levels=[
            cll.NullLevel(c),
            cll.ExactMatchLevel(c).configure(tf_adjustment_column=c),
            *(within_edits(c, k) for k in ((1, 3) if f.comparison == "street" else (1, 2))),  # code, email
            cll.ElseLevel(),
        ],
    )


def within_edits(column: str, k: int) -> Any:
    """Splink's Levenshtein level (at most ``k`` edits apart), with two cheap necessary conditions first, so
    that the distance, the costly part of scoring and training, is computed only for pairs that can be that
    close (DuckDB evaluates a conjunction's later terms only where the earlier ones hold; the level is the same
    either way):

    - the lengths differ by at most ``k``;
    - one of ``k + 1`` consecutive pieces of the left value occurs in the right one (the pigeonhole principle:
      ``k`` edits can touch at most ``k`` of the pieces, and an untouched piece is found as it is).

    An email's distance is the costly one: the pieces make its level about three times cheaper."""
    left, right = f'"{column}_l"', f'"{column}_r"'
    return cll.CustomLevel(
        f"abs(length({left}) - length({right})) <= {k} AND ({_pieces_found(left, right, k + 1)}) "
        f"AND levenshtein({left}, {right}) <= {k}",
        f"Levenshtein distance of {column} <= {k}",
    )


def _pieces_found(left: str, right: str, pieces: int) -> str:
    """Whether one of ``pieces`` consecutive pieces of ``left`` (as equal in length as can be; empty ones when
    it is shorter) occurs in ``right``."""

    def bound(i: int) -> str:
        return f"CAST(floor(length({left}) * {i} / {pieces}) AS INTEGER)"

    return " OR ".join(
        f"strpos({right}, substr({left}, {bound(i)} + 1, {bound(i + 1)} - {bound(i)})) > 0" for i in range(pieces)
    )


def _agreeing(records: pa.Table, key: list[str], columns: list[str]) -> pa.Table:
    """Per group of records agreeing on all of ``key`` (filled): its size, and how many have each column."""
    valid = pc.is_valid(records.column(key[0]))
    for c in key[1:]:
        valid = pc.and_(valid, pc.is_valid(records.column(c)))
    return records.filter(valid).group_by(key).aggregate([(key[0], "count"), *((c, "count") for c in columns)])


def likely_pairs(records: pa.Table, key: list[str]) -> int:
    """How many pairs of records agree on all of ``key``: the near-certain matches."""
    if not key:
        return 0
    sizes = _agreeing(records, key, []).column(f"{key[0]}_count")
    return int(pc.sum(pc.divide(pc.multiply(sizes, pc.subtract(sizes, 1)), 2)).as_py() or 0)


def present_features(records: pa.Table) -> list[Feature]:
    """The features that can be learnt: filled in enough of the records, and (beyond the near-certain
    matches' own key) filled on both sides of at least :data:`MIN_LIKELY_PAIRS` of those matches (a phone
    that only one of two exports has tells nothing about whether two records are one person)."""
    n = max(records.num_rows, 1)
    filled = [f for f in FEATURES if (n - records.column(f.name).null_count) / n >= MIN_FEATURE_SHARE]
    key = [c for c in PRIOR_BLOCK if c in {f.name for f in filled}]
    if not key:
        return filled
    counts = _agreeing(records, key, [f.name for f in filled if f.name not in key])

    def learnable(f: Feature) -> bool:
        if f.name in key:
            return True
        both = pc.sum(pc.greater_equal(counts.column(f"{f.name}_count"), 2)).as_py()
        return (both or 0) >= MIN_LIKELY_PAIRS

    return [f for f in filled if learnable(f)]


def agreement(values: pa.ChunkedArray) -> float | None:
    """The chance that two different records, both with ``values`` filled, hold the same value: the sum over
    the distinct values of c(c - 1), over N(N - 1) (c a value's count, N the filled records); None when fewer
    than two are filled. Exactly what random pairs of records estimate for an exact match level's u."""
    filled = values.drop_null()
    n = len(filled)
    if n < 2:
        return None
    counts = pc.value_counts(filled).field("counts")
    same = pc.sum(pc.multiply(counts, pc.subtract(counts, 1))).as_py()
    return float(same) / (n * (n - 1))


def _exact(level: dict[str, Any], column: str) -> bool:
    return bool(level["sql_condition"] == f'"{column}_l" = "{column}_r"')


def u_probabilities(db: DuckDBAPI, table: str, records: pa.Table, comparisons: list[dict[str, Any]]) -> None:
    """Set the u probability of every level of ``comparisons`` (Splink's settings document, changed in place):
    the chance that a pair of different records, both filled, takes the level (what Splink's
    ``estimate_u_using_random_sampling`` estimates from random pairs).

    A comparison's first level is exact agreement, whose u :func:`agreement` counts over all the records; the
    levels after it split the rest, 1 - u(exact), in the proportions found among :data:`U_PAIRS` random pairs
    of records (independent, drawn by hashing, the same in every run; ``table`` holds ``records`` in ``db``)
    whose values are filled and differ. A level no pair reached takes :data:`UNOBSERVED_U`, as in Splink."""
    n = records.num_rows
    fuzzy: list[tuple[str, list[dict[str, Any]]]] = []
    rest: dict[str, float] = {}
    for c in comparisons:
        column = c["output_column_name"]
        levels = [lv for lv in c["comparison_levels"] if not lv.get("is_null_level")]
        if not _exact(levels[0], column):
            raise ValueError(f"the first level of {column} is not exact agreement")
        same = agreement(records.column(column))
        levels[0]["u_probability"] = same or UNOBSERVED_U
        if len(levels) == 2:  # exact or not
            levels[1]["u_probability"] = 1 - same if same is not None else UNOBSERVED_U
        else:
            fuzzy.append((column, levels))
            rest[column] = 1 - (same or 0.0)
    if not fuzzy:
        return
    gammas = []
    counts = []
    for i, (column, levels) in enumerate(fuzzy):
        left, right = f'"{column}_l"', f'"{column}_r"'
        whens = " ".join(f"WHEN {lv['sql_condition']} THEN {k}" for k, lv in enumerate(levels[1:-1], 1))
        differ = f"{left} IS NULL OR {right} IS NULL OR {left} = {right}"
        gammas.append(f"CASE WHEN {differ} THEN NULL {whens} ELSE 0 END AS g{i}")
        counts += [f"count(g{i}) AS n{i}"] + [f"count_if(g{i} = {k}) AS c{i}_{k}" for k in range(len(levels) - 1)]
    sides = ", ".join(f'l.{c} AS "{c}_l", r.{c} AS "{c}_r"' for c, _ in fuzzy)
    found = db.query_sql(
        f"""WITH _rec AS (SELECT row_number() OVER (ORDER BY match_id) - 1 AS _k, * FROM {table}),
        _pairs AS (SELECT CAST(hash(x, {SEED}) % {n} AS BIGINT) AS a, CAST(hash(x, {SEED + 1}) % {n} AS BIGINT) AS b
                   FROM range({U_PAIRS}) AS t(x)),
        _cmp AS (SELECT {sides} FROM _pairs AS p JOIN _rec AS l ON l._k = p.a JOIN _rec AS r ON r._k = p.b
                 WHERE p.a <> p.b),
        _gamma AS (SELECT {", ".join(gammas)} FROM _cmp)
        SELECT {", ".join(counts)} FROM _gamma"""
    )
    row = found.as_record_list()[0]
    found.drop_table_from_database_and_remove_from_cache()
    for i, (column, levels) in enumerate(fuzzy):
        differing = row[f"n{i}"]
        for k, lv in enumerate(levels[1:], 1):
            hits = row[f"c{i}_{k % (len(levels) - 1)}"]  # the last level (ELSE) counted as 0
            lv["u_probability"] = rest[column] * hits / differing if hits else UNOBSERVED_U


def train(records: pa.Table) -> dict[str, Any]:
    """Train a model on ``records`` (``match_id`` and one column per feature); returns Splink's settings
    document. Refused when there are too few records or no identifying feature."""
    if records.num_rows < MIN_TRAINING_RECORDS:
        raise Rejected(
            f"{records.num_rows} match records; training needs at least {MIN_TRAINING_RECORDS}",
            code="too_few_records",
        )
    features = present_features(records)
    names = {f.name for f in features}
    likely = likely_pairs(records, [c for c in PRIOR_BLOCK if c in names])
    if likely < MIN_LIKELY_PAIRS:
        raise Rejected(
            f"{likely} pairs of records agree on {', '.join(PRIOR_BLOCK)}; training needs at least "
            f"{MIN_LIKELY_PAIRS} such near-certain matches to learn what a match looks like",
            code="too_few_matches",
        )
    if not names & set(IDENTIFYING):
        raise Rejected(f"none of {', '.join(IDENTIFYING)} is filled in enough records", code="no_identifying_feature")
    prior_block = [c for c in PRIOR_BLOCK if c in names] or [next(c for c in IDENTIFYING if c in names)]
    settings = SettingsCreator(
        link_type="dedupe_only",
        unique_id_column_name="match_id",
        comparisons=[comparison(f) for f in features],
        blocking_rules_to_generate_predictions=[block_on(*rule) for rule in blocking_rules(names)],
        retain_intermediate_calculation_columns=False,
    )
    db = DuckDBAPI()
    table = db.register(records.select(["match_id", *(f.name for f in features)]))
    model = settings.create_settings_dict("duckdb")
    u_probabilities(db, table.physical_name, records, model["comparisons"])
    linker = Linker(table, model, log_level=logging.ERROR)
    linker.training.estimate_probability_two_random_records_match([block_on(*prior_block)], recall=PRIOR_RECALL)
    estimated: set[str] = set()
    for block in TRAINING_BLOCKS:
        if not set(block) <= names or names <= estimated:
            continue  # a block needs its features; once every comparison has its m, the rest add nothing needed
        before = linker.misc.save_model_to_json()
        try:
            linker.training.estimate_parameters_using_expectation_maximisation(
                block_on(*block), estimate_without_term_frequencies=True, max_pairs=EM_PAIRS
            )
            estimated |= names - set(block)
        except ValueError as exc:  # a level's m underflowed to 0 in this block: the other blocks decide
            log.info("expectation maximisation blocked on %s gave up: %s", ", ".join(block), exc)
            linker = Linker(table, before, log_level=logging.ERROR)  # as it was before this block
    if not estimated:
        raise Rejected("expectation maximisation found nothing to learn from", code="training_failed")
    return dict(linker.misc.save_model_to_json())
