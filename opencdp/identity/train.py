"""Training the match model with Splink (Fellegi-Sunter): the prior from near-certain pairs, u from random
pairs, m by expectation maximisation, term frequencies for names and places.

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
EM_RECORDS = 50_000
"""Expectation maximisation samples this many records (pairs within each training block grow with its square)."""
U_PAIRS = 1e6
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
                cll.LevenshteinLevel(c, 1),
                cll.CustomLevel(f'substr("{c}_l", 1, 7) = substr("{c}_r", 1, 7)', "same year and month"),
                cll.ElseLevel(),
            ],
        )
    if f.comparison == "exact":
        return cl.ExactMatch(c).configure(term_frequency_adjustments=True)
    if f.comparison == "street":
        return cl.LevenshteinAtThresholds(c, [1, 3]).configure(term_frequency_adjustments=True)
    return cl.LevenshteinAtThresholds(c, [1, 2]).configure(term_frequency_adjustments=True)  # code, email


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
    linker = Linker(table, settings, log_level=logging.ERROR)
    linker.training.estimate_probability_two_random_records_match([block_on(*prior_block)], recall=PRIOR_RECALL)
    linker.training.estimate_u_using_random_sampling(max_pairs=U_PAIRS, seed=SEED)
    sample = min(1.0, EM_RECORDS / records.num_rows)
    trained = 0
    for block in TRAINING_BLOCKS:
        if all(c in names for c in block):
            before = linker.misc.save_model_to_json()
            try:
                linker.training.estimate_parameters_using_expectation_maximisation(
                    block_on(*block), record_sample_proportion=sample
                )
                trained += 1
            except ValueError as exc:  # a level's m underflowed to 0 in this block: the other blocks decide
                log.info("expectation maximisation blocked on %s gave up: %s", ", ".join(block), exc)
                linker = Linker(table, before, log_level=logging.ERROR)  # as it was before this block
    if not trained:
        raise Rejected("expectation maximisation found nothing to learn from", code="training_failed")
    return dict(linker.misc.save_model_to_json())
