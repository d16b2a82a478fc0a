"""Probabilistic matching: the person attributes compared between records, how each is compared, and the
thresholds that turn a match probability into an edge, a review or nothing (pure definitions, no I/O).

A *match record* is what one imported record, or the latest identify traits of one identifier, says about a
person (names, birth date, address, national id, email, phone). Pairs of match records that share a blocking
key are scored with a Fellegi-Sunter model that Splink trains on the data (identity/train.py); the scoring
itself is SQL compiled from the trained model (identity/score.py). docs/identity.md explains the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Comparison = Literal["name", "date", "exact", "street", "code", "email"]
"""How a feature is compared (the Splink comparison identity/train.py builds for it):

- ``name``: exact (with term frequencies), then Jaro-Winkler at 0.92 / 0.88 / 0.70;
- ``date``: exact, then one edit apart (a typo or two swapped digits), then the same year and month;
- ``exact``: equal or not, with term frequencies (rare values weigh more);
- ``street``: exact (term frequencies), then Levenshtein 1 / 3;
- ``code``: national ids and phone numbers: exact, then one or two edits apart;
- ``email``: exact, then Levenshtein 1 / 2 (a typo'd address).
"""


@dataclass(frozen=True)
class Feature:
    name: str
    paths: tuple[str, ...]
    """JSON paths into a governed message, tried in order; ``first-word:`` / ``last-word:`` take one word of a
    full name."""
    comparison: Comparison


_TRAITS = ("$.traits", "$.context.traits")

FEATURES: tuple[Feature, ...] = (
    Feature(
        "first_name",
        (
            "$.fields.first_name",
            *(f"{t}.firstName" for t in _TRAITS),
            *(f"{t}.first_name" for t in _TRAITS),
            "first-word:$.fields.name",
            *(f"first-word:{t}.name" for t in _TRAITS),
        ),
        "name",
    ),
    Feature(
        "last_name",
        (
            "$.fields.last_name",
            *(f"{t}.lastName" for t in _TRAITS),
            *(f"{t}.last_name" for t in _TRAITS),
            "last-word:$.fields.name",
            *(f"last-word:{t}.name" for t in _TRAITS),
        ),
        "name",
    ),
    Feature(
        "birth_date",
        ("$.fields.birth_date", *(f"{t}.birthday" for t in _TRAITS), *(f"{t}.birth_date" for t in _TRAITS)),
        "date",
    ),
    Feature("house_number", ("$.fields.house_number", "$.traits.address.house_number"), "exact"),
    Feature("street", ("$.fields.street", "$.traits.address.street", "$.context.traits.address.street"), "street"),
    Feature("city", ("$.fields.city", "$.traits.address.city", "$.context.traits.address.city"), "exact"),
    Feature(
        "postal_code",
        ("$.fields.postal_code", "$.traits.address.postalCode", "$.traits.address.postal_code"),
        "exact",
    ),
    Feature("region", ("$.fields.region", "$.traits.address.state", "$.traits.address.region"), "exact"),
    Feature("national_id", ("$.fields.national_id",), "code"),
    Feature("email", ("$.fields.email", *(f"{t}.email" for t in _TRAITS)), "email"),
    Feature("phone", ("$.fields.phone", *(f"{t}.phone" for t in _TRAITS)), "code"),
)

BLOCKING_RULES: tuple[tuple[str, ...], ...] = (
    ("first_name", "last_name"),
    ("last_name", "birth_date"),
    ("first_name", "birth_date"),
    ("first_name", "postal_code"),
    ("last_name", "postal_code"),
    ("birth_date", "postal_code"),
    ("first_name", "city"),
    ("last_name", "city"),
    ("birth_date", "city"),
    ("street", "city"),
    ("house_number", "postal_code"),
    ("last_name", "house_number"),
    ("national_id",),
    ("phone",),
)
"""Candidate pairs agree exactly on every feature of at least one rule (rules whose features the model lacks
are left out). Pairs of features, not single ones: a common first name alone would pair thousands of records
with each other; a typo in one feature is still caught by a rule without it."""


def blocking_rules(features: set[str]) -> list[tuple[str, ...]]:
    """The blocking rules a model over ``features`` can use."""
    return [rule for rule in BLOCKING_RULES if set(rule) <= features]


NEVER_MERGED_WITHOUT = ("first_name", "birth_date")
"""A pair that disagrees outright on all of these (each filled on both sides, not even close) is not merged
automatically, whatever its probability, unless their national ids agree: it goes to review. Household members
share a surname, an address and often a mailbox, which the model's independent weights add up to a
near-certain match."""

UNLESS_AGREEING = ("national_id",)
"""...unless the pair agrees (at any level above the last) on one of these: one person's own id outweighs it."""

IDENTIFYING = ("first_name", "last_name", "national_id")
"""A message becomes a match record only when it carries one of these (an email alone is an identifier, not
something to match on)."""

TRAINING_BLOCKS: tuple[tuple[str, ...], ...] = (("birth_date",), ("postal_code",), ("first_name", "last_name"))
"""Expectation maximisation runs once per rule here, in order (each estimates the features outside it), until
every feature has been estimated once. Selective rules: a common surname alone would pair millions of
records."""

PRIOR_BLOCK: tuple[str, ...] = ("first_name", "last_name", "birth_date")
"""Pairs agreeing on all of these are taken as nearly certain matches to estimate the prior (Splink's
``estimate_probability_two_random_records_match``), with an assumed recall of 0.7."""


@dataclass(frozen=True)
class Thresholds:
    """Match probability at or above ``merge``: a probabilistic edge in the identity graph; at or above
    ``review`` (and below ``merge``): the review queue; below: nothing."""

    merge: float = 0.95
    review: float = 0.50

    def __post_init__(self) -> None:
        if not 0.0 < self.review <= self.merge <= 1.0:
            raise ValueError("thresholds need 0 < review <= merge <= 1")


MIN_TRAINING_RECORDS = 50
"""Fewer match records than this, and there is nothing to learn a model from."""

MIN_FEATURE_SHARE = 0.01
"""A feature present in fewer than this share of the match records is left out of the model."""
