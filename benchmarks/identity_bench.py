"""Identity benchmark: issue 5's performance targets on generated web traffic and a CRM export with duplicates.

Each target is printed with its conditions, next to a baseline measured in the same run on the same data:

1. full resolution (the identity stage over the events and the CRM rows, then ``train_matching()``: training,
   scoring every pair, recomputing the profiles) < 2 minutes at 1M events from 100k people plus 100k CRM rows,
   with peak memory <= 8 GB; baseline: networkx's connected components plus plain Splink's training and
   prediction;
2. deterministic stitching alone (the identity stage over the events) of 10M identifier rows, i.e. (message,
   identifier) pairs, <= 150 s: the run's own rows and rate, and a linear extrapolation to 10M; baseline:
   networkx's connected components over the same identifier pairs (in memory, no extraction, limits or storage);
3. probabilistic matching >= 1M records/min at 100k records: ``train_matching()``, and scoring alone (
   ``Identity.rescore()`` once the model is trained: every match record scored again, profiles recomputed);
   baseline: plain Splink (5.x, DuckDB) training and ``predict()`` on the same match records with the same
   comparisons and blocking rules; plus the pairwise precision and recall of the CRM duplicates both found;
4. an incremental micro-batch of 1,000 new events < 250 ms, on top of the whole graph with a trained model;
5. one new CRM record (a typo'd duplicate of a customer) scored and placed < 1 s: ``rt.load()`` of that one
   record up to the identity stage's commit (from then on ``record_profiles`` places it; the loader's own step
   timings), the whole load with the later stages (traits, audiences, read model) beside it, and whether it
   landed in its original's profile.

The benchmark runs the identity stage on its own; the stages after it (profiles, segments, the read model) catch
up on all the events and CRM rows before training, not counted: a running system's loader keeps them current, and
``train_matching()`` would otherwise do it in its own ``load()`` first.

Peak memory is the process's maximum resident set size (``ru_maxrss``) after OpenCDP's part, before the
baselines run in the same process.

    .venv/bin/python benchmarks/identity_bench.py [--events 200000] [--people 20000] [--crm 20000]
        [--households 0.05] [--tmpdir /var/tmp] [--threads N] [--profile]

The issue's size (about eight minutes here, baselines included; ``--profile`` adds where the time goes, per SQL
statement and per Splink training step):

    .venv/bin/python benchmarks/identity_bench.py --events 1000000 --people 100000 --crm 100000

``--crm 0`` measures deterministic stitching alone (targets 2 and 4), e.g. at 10M identifier rows:
``--events 5000000 --people 500000 --crm 0``.

Data (benchmarks/identity_data.py, seeded): each person has a user id, an email and one to three browsers; half
the events are anonymous page views, the rest identify calls with the user id and email; every 50th person uses a
family computer shared with another. The CRM export has ~91% of ``--crm`` distinct people once (with their web
email, so the web profile and the customer are one deterministically) and 10% of those a second time with a
typo'd email, no phone and sometimes a typo'd name: only matching can join those. ``--households`` people
(5%) live with the previous person: same last name and address, another first name, birth date and email.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import networkx as nx
import pyarrow as pa
from splink import DuckDBAPI, Linker, SettingsCreator, block_on
from splink.internals.linker_components.training import LinkerTraining

ROOT = Path(__file__).resolve().parent.parent
sys.path.append(str(ROOT))

from benchmarks.identity_data import (  # noqa: E402
    HOUSEHOLDS,
    Crm,
    Person,
    crm_export,
    duplicate,
    identifiers,
    journal_lines,
    population,
    record,
    traffic,
)
from opencdp.api.runtime import Runtime  # noqa: E402
from opencdp.config import Settings  # noqa: E402
from opencdp.identity.train import comparison  # noqa: E402
from opencdp.model.matching import BLOCKING_RULES, FEATURES, PRIOR_BLOCK, TRAINING_BLOCKS  # noqa: E402
from opencdp.store.engine import Engine  # noqa: E402

FEATURE = {f.name: f for f in FEATURES}

SEED = 7
BATCH = 1_000
REPEATS = 3
"""Micro-batches and single CRM records measured (the median is compared with the target)."""
CHUNK = 50_000
"""Messages per journal write."""
MERGE = 0.95
SPLINK_STEPS = ("estimate_probability_two_random_records_match", "estimate_u_using_random_sampling",
                "estimate_parameters_using_expectation_maximisation")  # fmt: skip
TEN_MILLION = 10_000_000
GB = 1024**3

Pair = tuple[str, str]


# -- timing -------------------------------------------------------------------------------------------------------


class Clock:
    """Seconds per named phase; with ``profile``, also seconds per SQL statement and per Splink training step
    within each phase (the engine's entry points and Splink's training methods are wrapped in this process only;
    OpenCDP itself is unchanged)."""

    def __init__(self, profile: bool) -> None:
        self.seconds: dict[str, float] = {}
        self.peaks: dict[str, int] = {}
        """The process's peak memory so far, when each phase ended."""
        self.current = "setup"
        self.statements: dict[str, Counter[str]] = defaultdict(Counter)
        self.calls: dict[str, Counter[str]] = defaultdict(Counter)
        if profile:
            for name in ("execute", "execute_changed", "fetch_all", "fetch_arrow"):
                setattr(Engine, name, self._statement(getattr(Engine, name)))
            commit = Engine._commit
            Engine._commit = lambda engine, conn: self._count("COMMIT", commit, engine, conn)  # type: ignore[method-assign]
            for name in SPLINK_STEPS:  # Splink's training steps, OpenCDP's and the baseline's
                setattr(LinkerTraining, name, self._splink_step(getattr(LinkerTraining, name)))

    @contextmanager
    def __call__(self, phase: str) -> Iterator[None]:
        outer, self.current = self.current, phase
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = time.perf_counter() - started
            self.peaks[phase] = peak_bytes()
            self.current = outer

    def _statement(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def timed(engine: Engine, sql: str, *args: Any, **kwargs: Any) -> Any:
            return self._count(re.sub(r"\d+", "N", " ".join(sql.split())), method, engine, sql, *args, **kwargs)

        return timed

    def _splink_step(self, method: Callable[..., Any]) -> Callable[..., Any]:
        def timed(training: LinkerTraining, *args: Any, **kwargs: Any) -> Any:
            rules = args[0] if args and isinstance(args[0], list) else args[:1]
            on = " AND ".join(
                r.get_blocking_rule("duckdb").blocking_rule_sql for r in rules if hasattr(r, "create_sql")
            )
            return self._count(f"Splink {method.__name__}({on})", method, training, *args, **kwargs)

        return timed

    def _count(self, key: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return method(*args, **kwargs)
        except Exception as exc:
            key = f"{key} -> raised {type(exc).__name__}"
            raise
        finally:
            self.statements[self.current][key] += time.perf_counter() - started
            self.calls[self.current][key] += 1

    def report(self, phase: str, top: int = 8) -> None:
        spent = self.statements.get(phase)
        if not spent:
            return
        total, sql, calls = self.seconds.get(phase, 0.0), sum(spent.values()), sum(self.calls[phase].values())
        print(f"  {phase}: {total:.3f} s, of which {sql:.3f} s in {calls:,} SQL statements and Splink training steps "
              f"(peak memory so far {self.peaks[phase] / GB:.2f} GB):")  # fmt: skip
        for key, seconds in spent.most_common(top):
            print(f"    {seconds:8.3f} s {self.calls[phase][key]:6,}x  {key[:160]}")


def peak_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


# -- accuracy -----------------------------------------------------------------------------------------------------


def pairs_of(clusters: Iterable[tuple[str, str]]) -> set[Pair]:
    """Every pair of keys with the same cluster (``clusters``: (key, cluster) rows), as (smaller, larger)."""
    groups: dict[str, list[str]] = defaultdict(list)
    for key, cluster in clusters:
        if cluster is not None:
            groups[cluster].append(key)
    return {(a, b) for keys in groups.values() for a, b in itertools.combinations(sorted(keys), 2)}


def pairs_in_block(records: pa.Table, block: tuple[str, ...]) -> int:
    """How many pairs of records agree on every column of ``block`` (what one blocked training step compares)."""
    filled = records.select(list(block)).drop_null()
    sizes = filled.group_by(list(block)).aggregate([([], "count_all")]).column("count_all").to_pylist()
    return sum(n * (n - 1) // 2 for n in sizes)


def precision_recall(found: set[Pair], truth: set[Pair]) -> str:
    hit = len(found & truth)
    p, r = hit / len(found) if found else 1.0, hit / len(truth) if truth else 1.0
    return f"precision {p:.4f}, recall {r:.4f} ({hit:,} of {len(truth):,} duplicates; {len(found) - hit:,} wrong)"


# -- baselines ----------------------------------------------------------------------------------------------------


def networkx_components(events: Iterable[dict[str, Any]], records: Iterable[dict[str, Any]]) -> tuple[float, float]:
    """Seconds for networkx to hold the events' identifier pairs and find the components; then seconds for the
    CRM records' pairs added on top and the components found again."""
    g: nx.Graph[str] = nx.Graph()
    seconds = []
    for messages in (events, records):
        started = time.perf_counter()
        for m in messages:
            ids = identifiers(m)
            g.add_nodes_from(ids)
            g.add_edges_from((ids[0], x) for x in ids[1:])
        sum(1 for _ in nx.connected_components(g))
        seconds.append(time.perf_counter() - started)
    return seconds[0], seconds[1]


def plain_splink(records: pa.Table, features: list[str]) -> tuple[float, float, set[tuple[int, int]]]:
    """Plain Splink on the match records: seconds training (prior, u by sampling, EM per training block, as
    OpenCDP trains), seconds predicting (every blocked pair scored, kept at ``MERGE``), and the pairs it kept."""
    started = time.perf_counter()
    settings = SettingsCreator(
        link_type="dedupe_only",
        unique_id_column_name="match_id",
        comparisons=[comparison(FEATURE[c]) for c in features],  # the comparisons OpenCDP's training builds
        blocking_rules_to_generate_predictions=[block_on(*r) for r in BLOCKING_RULES if set(r) <= set(features)],
        retain_intermediate_calculation_columns=False,
    )
    table = DuckDBAPI().register(records.select(["match_id", *features]))
    linker = Linker(table, settings, log_level=logging.ERROR)
    linker.training.estimate_probability_two_random_records_match([block_on(*PRIOR_BLOCK)], recall=0.7)
    linker.training.estimate_u_using_random_sampling(max_pairs=1e6, seed=42)
    for block in TRAINING_BLOCKS:
        before = linker.misc.save_model_to_json()
        try:
            linker.training.estimate_parameters_using_expectation_maximisation(block_on(*block))
        except ValueError:  # a level's m underflowed to 0 in this block: as OpenCDP does, the other blocks decide
            linker = Linker(table, before, log_level=logging.ERROR)
    trained = time.perf_counter()
    predictions = linker.inference.predict(threshold_match_probability=MERGE)
    predicted = time.perf_counter()
    pairs = predictions.as_pandas_dataframe()[["match_id_l", "match_id_r"]].itertuples(index=False)
    return trained - started, predicted - trained, {(min(a, b), max(a, b)) for a, b in pairs}


@dataclass
class Baselines:
    components: float
    """networkx over the events' identifier pairs."""
    crm_components: float
    """networkx adding the CRM records' identifier pairs."""
    splink_train: float = 0.0
    splink_predict: float = 0.0
    splink_pairs: set[Pair] = field(default_factory=set)
    """Pairs of customer ids plain Splink predicted at ``MERGE``."""


def measure_baselines(events: Iterable[dict[str, Any]], crm: Crm, run: Measured, clock: Clock) -> Baselines:
    with clock("baseline: networkx"):
        base = Baselines(*networkx_components(events, (record(f) for f in crm.rows)))
    if run.records is not None:
        with clock("baseline: plain Splink"):
            base.splink_train, base.splink_predict, pairs = plain_splink(run.records, list(run.summary["features"]))
        ids, match_keys = run.records["match_id"].to_pylist(), run.records["match_key"].to_pylist()
        key = {m: str(k).split(":", 1)[1] for m, k in zip(ids, match_keys, strict=True)}  # source:customer id
        base.splink_pairs = {(min(key[a], key[b]), max(key[a], key[b])) for a, b in pairs}
    return base


# -- OpenCDP ------------------------------------------------------------------------------------------------------


def code_version() -> str:
    """The commit measured, and whether OpenCDP's code differed from it (another engineer may be editing)."""
    git = ["git", "-C", str(ROOT)]
    commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    changed = subprocess.run([*git, "status", "--porcelain", "opencdp"], capture_output=True, text=True).stdout
    return f"{commit or 'unknown commit'}{' with uncommitted changes in opencdp/' if changed.strip() else ''}"


@dataclass
class Measured:
    """What the OpenCDP part of the run measured (its phases' seconds are in the :class:`Clock`)."""

    engine_threads: int
    code: str = field(default_factory=code_version)
    """Read when the run starts."""
    identifier_rows: int = 0
    records: pa.Table | None = None
    """The match records, as OpenCDP cleaned them (the plain Splink baseline gets the same)."""
    summary: dict[str, Any] = field(default_factory=dict)
    found: set[Pair] = field(default_factory=set)
    kept_apart: int = 0
    incremental: list[float] = field(default_factory=list)
    single: list[tuple[float, bool, float | None, float]] = field(default_factory=list)
    health: dict[str, Any] = field(default_factory=dict)
    peak: int = 0


def journal(rt: Runtime, source_id: str, messages: Iterable[dict[str, Any]]) -> None:
    it = iter(messages)
    while chunk := list(itertools.islice(it, CHUNK)):
        rt.journal.write_sync(journal_lines(source_id, chunk))


def load_and_govern(rt: Runtime) -> None:
    rt.raw_log.load_all(rt.journal)
    rt.governance.run()


def value(rt: Runtime, sql: str, params: tuple[Any, ...] = ()) -> Any:
    row = rt.engine.fetch_one(sql, params)
    return row[0] if row else None


def profile_of(rt: Runtime, key: str) -> str | None:
    return value(rt, "SELECT profile_id FROM record_profiles WHERE record_key = ? ORDER BY seq DESC LIMIT 1", (key,))


def new_customers(people: list[Person], crm: Crm, n: int) -> list[tuple[str, dict[str, Any]]]:
    """``n`` typo'd duplicates of customers who have one CRM record so far: (the original's key, the new fields)."""
    rng = random.Random(f"{SEED}:new customers")
    once = sorted((p, keys[0]) for p, keys in crm.keys.items() if len(keys) == 1)
    return [(original, duplicate(rng, people[p], f"N{i}")) for i, (p, original) in enumerate(rng.sample(once, n))]


def measure_opencdp(args: argparse.Namespace, people: list[Person], crm: Crm, work: Path, clock: Clock) -> Measured:
    settings = Settings(data_dir=work / "data", **({"engine_threads": args.threads} if args.threads else {}))
    rt = Runtime(settings)
    out = Measured(settings.engine_threads)
    web = rt.registry.create("web", "web", None).source_id
    crm_source = rt.registry.create("crm", "server", None).source_id

    with clock("load + govern the events"):
        journal(rt, web, traffic(SEED, people, args.events))
        load_and_govern(rt)
    with clock("identity: events"):
        rt.identity.run()
    out.identifier_rows = value(rt, "SELECT coalesce(sum(messages), 0) FROM identity_nodes")  # (message, id) pairs
    with clock("load + govern the CRM rows"):
        journal(rt, crm_source, (record(f) for f in crm.rows))
        load_and_govern(rt)
    with clock("identity: CRM rows"):
        rt.identity.run()

    with clock("profiles over the events and CRM rows"):  # what train_matching()'s own load() would catch up
        rt.load()
    if args.crm:
        out.records = rt.engine.fetch_arrow("SELECT * FROM identity_match_records ORDER BY match_id")
        rescore = rt.identity.rescore
        with clock("train_matching"):  # and the rescore that follows training inside it, on its own
            rt.identity.rescore = lambda: timed_call(clock, "train_matching: rescore", rescore)  # type: ignore[method-assign]
            try:
                out.summary = rt.train_matching()
            finally:
                rt.identity.rescore = rescore  # type: ignore[method-assign]
        with clock("rescore"):
            rt.identity.rescore()
        rows = rt.engine.fetch_all("SELECT record_key, profile_id FROM record_profiles WHERE kind = 'customers'")
        out.found = pairs_of(rows)
        out.kept_apart = value(
            rt,
            """SELECT count(*) FROM identity_matches AS m
            JOIN identity_membership AS l ON l.node_id = m.node_l JOIN identity_membership AS r ON r.node_id = m.node_r
            WHERE m.status = 'merge' AND l.profile_id <> r.profile_id""",
        )

    for i in range(REPEATS):
        journal(rt, web, traffic(SEED + 100 + i, people, BATCH, start=args.events + i * BATCH))
        load_and_govern(rt)
        with clock(f"incremental {i + 1}"):
            rt.identity.run()
        out.incremental.append(clock.seconds[f"incremental {i + 1}"])

    for i, (original, fields) in enumerate(new_customers(people, crm, REPEATS) if args.crm else []):
        journal(rt, crm_source, [record(fields)])
        with clock(f"one CRM record {i + 1}"):
            rt.load()
        landed = profile_of(rt, fields["customer_id"])
        probability = value(
            rt,
            """SELECT max(m.match_probability) FROM identity_matches AS m
            JOIN identity_match_records AS r ON r.match_id IN (m.id_l, m.id_r) WHERE r.match_key = ?""",
            (f"{crm_source}:{fields['customer_id']}",),
        )
        same = landed is not None and landed == profile_of(rt, original)
        steps = rt.last_load_seconds
        placed = sum(steps.get(step, 0.0) for step in ("load", "govern", "identity"))
        out.single.append((clock.seconds[f"one CRM record {i + 1}"], same, probability, placed))

    out.health = rt.identity_health()
    rt.close()
    out.peak = peak_bytes()
    return out


def timed_call(clock: Clock, phase: str, fn: Callable[[], Any]) -> Any:
    with clock(phase):
        return fn()


# -- report -------------------------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def line(label: str, figure: str, note: str = "") -> None:
    print(f"  {label:<46}{figure:>16}  {note}".rstrip())


def per_minute(n: int, seconds: float) -> str:
    return f"{n * 60 / seconds:,.0f} records/min"


def report(args: argparse.Namespace, crm: Crm, run: Measured, base: Baselines, clock: Clock) -> None:
    s = clock.seconds
    print(
        f"OpenCDP identity benchmark: {args.events:,} events from {args.people:,} people + {args.crm:,} CRM rows "
        f"({len(crm.truth):,} duplicates, {args.households:.0%} of people living with a relative); DuckDB, "
        f"{run.engine_threads} thread(s), one process; code {run.code}"
    )
    if args.events < 1_000_000 or args.people < 100_000 or args.crm < 100_000:
        print(
            "  (the targets are for 1M events from 100k people + 100k CRM rows: verdicts at this size are indicative)"
        )
    print(
        f"  not counted below: load + govern {s['load + govern the events']:.1f} s for the events, "
        f"{s['load + govern the CRM rows']:.1f} s for the CRM rows; the stages after identity (profiles, "
        f"segments, read model) over all of them {s['profiles over the events and CRM rows']:.1f} s"
    )

    if run.records is not None:
        t_full = s["identity: events"] + s["identity: CRM rows"] + s["train_matching"]
        t_base = base.components + base.crm_components + base.splink_train + base.splink_predict
        inside = s["train_matching: rescore"]
        print("1. full resolution: identity stage over the events and the CRM rows, then train_matching()")
        line("OpenCDP", f"{t_full:,.1f} s", f"target < 120 s: {verdict(t_full < 120)}")
        line("  peak memory (before the baselines)", f"{run.peak / GB:,.2f} GB",
             f"target <= 8 GB: {verdict(run.peak <= 8 * GB)}; {clock.peaks['identity: CRM rows'] / GB:.2f} GB "
             "before training")  # fmt: skip
        line("  identity stage over the events", f"{s['identity: events']:,.1f} s")
        line("  identity stage over the CRM rows", f"{s['identity: CRM rows']:,.1f} s")
        line("  train_matching()", f"{s['train_matching']:,.1f} s",
             f"training {s['train_matching'] - inside:,.1f} s, then scoring and profiles {inside:,.1f} s")  # fmt: skip
        line("baseline: networkx + plain Splink", f"{t_base:,.1f} s",
             f"components {base.components + base.crm_components:,.1f} s, Splink training "
             f"{base.splink_train:,.1f} s, predict {base.splink_predict:,.1f} s")  # fmt: skip
        line("ratio baseline / OpenCDP", f"{t_base / t_full:,.2f}")

    rows, t_det = run.identifier_rows, s["identity: events"]
    if rows:
        t_ten = t_det * TEN_MILLION / rows
        how = (
            "measured"
            if rows >= TEN_MILLION
            else "extrapolated linearly (optimistic: batches cost more as the graph grows)"
        )
        print(f"2. deterministic stitching alone: identity stage over the events ({rows:,} identifier rows, "
              f"{rows / args.events:.2f} per event)")  # fmt: skip
        line("OpenCDP", f"{t_det:,.1f} s", f"{rows / t_det:,.0f} rows/s")
        line("  at 10M rows", f"{t_ten:,.0f} s", f"target <= 150 s: {verdict(t_ten <= 150)}; {how}")
        line("baseline: networkx components", f"{base.components:,.1f} s",
             f"{rows / base.components:,.0f} rows/s (in memory, no extraction, limits or storage)")  # fmt: skip
        line("ratio baseline / OpenCDP", f"{base.components / t_det:,.2f}")

    if run.records is not None:
        n = run.records.num_rows
        t_train, t_score, t_splink = s["train_matching"], s["rescore"], base.splink_train + base.splink_predict
        print(
            f"3. probabilistic matching of {n:,} match records (the CRM rows) on {', '.join(run.summary['features'])}"
        )
        line(
            "OpenCDP train_matching()",
            f"{t_train:,.1f} s",
            f"{per_minute(n, t_train)}; target >= 1,000,000/min: {verdict(n * 60 / t_train >= 1e6)}",
        )
        line("OpenCDP scoring alone: rescore()", f"{t_score:,.1f} s", per_minute(n, t_score))
        line("baseline: plain Splink training + predict", f"{t_splink:,.1f} s", per_minute(n, t_splink))
        line(
            "baseline: plain Splink predict alone", f"{base.splink_predict:,.1f} s", per_minute(n, base.splink_predict)
        )
        line("ratio baseline / OpenCDP (training + scoring)", f"{t_splink / t_train:,.2f}")
        line("ratio baseline / OpenCDP (scoring alone)", f"{base.splink_predict / t_score:,.2f}")
        print(
            f"  pairs kept by status: {run.summary['pairs']}; {run.kept_apart:,} 'merge' pairs kept apart by a limit "
            f"(one user id per profile); prior {run.summary['probability_two_random_records_match']:.2e}"
        )
        blocks = [b for b in (PRIOR_BLOCK, *TRAINING_BLOCKS) if set(b) <= set(run.summary["features"])]
        counts = "; ".join(f"{' + '.join(b)} {pairs_in_block(run.records, b):,}" for b in blocks)
        print(f"  pairs training compares (the prior's block, then expectation maximisation per block): {counts}")
        print(f"  CRM duplicates in one profile (OpenCDP): {precision_recall(run.found, crm.truth)}")
        print(f"  CRM duplicates predicted >= {MERGE} (plain Splink): {precision_recall(base.splink_pairs, crm.truth)}")

    t_inc = statistics.median(run.incremental)
    print(
        f"4. incremental micro-batch of {BATCH:,} new events on top of the whole graph"
        + (" and a trained model" if args.crm else "")
    )
    line(
        "OpenCDP (median)",
        f"{t_inc * 1000:,.0f} ms",
        f"target < 250 ms: {verdict(t_inc < 0.25)}; runs {', '.join(f'{t * 1000:.0f}' for t in run.incremental)}",
    )
    if run.single:
        t_one = statistics.median(t for t, _, _, _ in run.single)
        t_placed = statistics.median(p for _, _, _, p in run.single)
        print("5. one new CRM record (a typo'd duplicate of a customer): rt.load(), i.e. loaded, governed, scored, "
              "placed (identity committed: record_profiles shows it), then its profile's traits, audiences and read "
              "model")  # fmt: skip
        line("OpenCDP placed (median)", f"{t_placed * 1000:,.0f} ms", f"target < 1 s: {verdict(t_placed < 1)}")
        line("  the whole load (median)", f"{t_one * 1000:,.0f} ms", "with the later stages")
        for i, (t, same, probability, placed) in enumerate(run.single, 1):
            best = f"{probability:.4f}" if probability is not None else "none"
            line(
                f"  record {i}",
                f"{placed * 1000:,.0f} ms",
                f"placed; whole load {t * 1000:,.0f} ms; in its original's profile: {'yes' if same else 'NO'} "
                f"(best pair probability {best})",
            )

    h = run.health
    print(
        f"result: {h['profiles']:,} profiles, {h['identifiers']:,} identifiers, {h['refused_edges']:,} merges "
        f"refused, {h['shared_identifiers']:,} shared identifiers; peak memory {run.peak / GB:,.2f} GB "
        f"({peak_bytes() / GB:,.2f} GB with the baselines)"
    )
    if args.profile:
        print("where the time went, per SQL statement (--profile):")
        for phase in s:
            clock.report(phase)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--people", type=int, default=20_000)
    parser.add_argument("--crm", type=int, default=20_000, help="CRM rows (0: deterministic stitching only)")
    parser.add_argument("--households", type=float, default=HOUSEHOLDS, help="share of people living with a relative")
    parser.add_argument("--tmpdir", default="/var/tmp")
    parser.add_argument("--threads", type=int, default=None, help="DuckDB threads (default: OpenCDP's default)")
    parser.add_argument("--profile", action="store_true", help="time every SQL statement, print the heaviest")
    args = parser.parse_args()
    clock = Clock(args.profile)
    people = population(SEED, args.people, args.households)
    crm = crm_export(SEED + 1, people, args.crm)
    work = Path(tempfile.mkdtemp(prefix="opencdp-identity-bench-", dir=args.tmpdir))
    try:
        run = measure_opencdp(args, people, crm, work, clock)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    base = measure_baselines(traffic(SEED, people, args.events), crm, run, clock)
    report(args, crm, run, base, clock)


if __name__ == "__main__":
    main()
