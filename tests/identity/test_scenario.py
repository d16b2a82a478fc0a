"""A realistic multi-source scenario (tests/identity/scenario.py: web, app, CRM, point of sale, support, and the
adversarial cases) resolved by OpenCDP end to end (governance, deterministic stitching, a trained match model)
and scored against the generator's truth: pairwise and B-cubed precision, recall and F1 over every message and
record, and the profiles that wrongly merge two people of each adversarial case (DuckDB and PostgreSQL).

The scenario is resolved once per engine (a module fixture); the tests below read the result. Run with ``-s``
to see the figures."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from opencdp.api.runtime import Runtime
from opencdp.model.sources import SourceKind
from opencdp.store.journal import accepted_line
from tests.conftest import _require_postgres, make_settings
from tests.identity import linkage
from tests.identity.scenario import CASES, Scenario, generate, key_of

SOURCES: dict[str, SourceKind] = {"web": "web", "app": "mobile", "crm": "server", "pos": "server", "support": "server"}
BATCHES = 8


@dataclass
class Resolved:
    engine: str
    scenario: Scenario
    found: dict[str, str]
    """Key -> its profile (``none:KEY`` when nothing identifies it: a profile of its own)."""
    summary: dict[str, Any]
    tickets: Counter[str]
    seconds: tuple[float, float]
    """Loading and resolving everything; training and rescoring."""

    @property
    def pairwise(self) -> linkage.Scores:
        return linkage.pairwise(linkage.pairs_of(self.found), linkage.pairs_of(self.scenario.truth))

    @property
    def bcubed(self) -> linkage.Scores:
        return linkage.bcubed(self.found, self.scenario.truth)

    def wrongly_merged(self, people: set[str]) -> int:
        """Profiles holding messages or records of two (or more) different people of ``people``."""
        held: dict[str, set[str]] = {}
        for key, profile in self.found.items():
            pid = self.scenario.truth[key]
            if pid in people:
                held.setdefault(profile, set()).add(pid)
        return sum(1 for who in held.values() if len(who) > 1)

    def attached(self) -> dict[str, float]:
        """Per source, the share of its messages and records in their person's main profile."""
        main = _main_profiles(self.scenario, self.found)
        hits: Counter[str] = Counter()
        totals: Counter[str] = Counter()
        for key, pid in self.scenario.truth.items():
            origin = self.scenario.origin[key]
            totals[origin] += 1
            hits[origin] += self.found[key] == main[pid]
        return {origin: hits[origin] / totals[origin] for origin in sorted(totals)}


def _main_profiles(scenario: Scenario, found: dict[str, str]) -> dict[str, str]:
    """Each person's main profile: the one holding most of their messages and records (of two, the one holding
    the earlier message, not the smaller id: profile ids derive from source ids, which differ from run to run)."""
    by_person: dict[str, Counter[str]] = {}
    for _, m in scenario.messages:  # a Counter keeps the order its keys were first counted in
        key = key_of(m)
        by_person.setdefault(scenario.truth[key], Counter())[found[key]] += 1
    return {pid: max(c.items(), key=lambda kv: kv[1])[0] for pid, c in by_person.items()}


def _journal(rt: Runtime, scenario: Scenario) -> dict[str, str]:
    """Every message in arrival order, sources interleaved, in a few loads (so identity works incrementally);
    returns the source ids by name."""
    ids = {name: rt.registry.create(name, kind, None).source_id for name, kind in SOURCES.items()}
    size = -(-len(scenario.messages) // BATCHES)
    for start in range(0, len(scenario.messages), size):
        lines = b""
        for source, m in scenario.messages[start : start + size]:
            client = (m["messageId"], m["type"], m.get("event"), m.get("userId"), m.get("anonymousId"))
            times = (m["timestamp"], None, None, m["timestamp"])
            lines += accepted_line(ids[source], client, times, json.dumps(m).encode())
        rt.journal.write_sync(lines)
        rt.load()
        assert rt.last_load_error is None, rt.last_load_error
    return ids


def _tickets(rt: Runtime, support: str, scenario: Scenario, found: dict[str, str]) -> Counter[str]:
    """How the tickets fared: merged into their person's main profile, waiting for review with it (a pair
    between the thresholds), or neither."""
    rows = rt.engine.fetch_all(
        """SELECT t.match_key, mem.profile_id FROM identity_matches AS m
        JOIN identity_match_records AS t ON t.match_id IN (m.id_l, m.id_r)
        JOIN identity_match_records AS o ON o.match_id IN (m.id_l, m.id_r) AND o.match_id <> t.match_id
        JOIN identity_membership AS mem ON mem.node_id = o.node_id
        WHERE t.match_key LIKE ? AND m.status = 'review'""",
        (f"{support}:%",),
    )
    review: dict[str, set[str]] = {}
    for match_key, profile in rows:
        review.setdefault(str(match_key).split(":", 1)[1], set()).add(str(profile))
    main = _main_profiles(scenario, found)
    out: Counter[str] = Counter()
    for key, origin in scenario.origin.items():
        if origin == "support":
            mine = main[scenario.truth[key]]
            out["merged" if found[key] == mine else "in review" if mine in review.get(key, ()) else "apart"] += 1
    return out


@pytest.fixture(scope="module", params=["duckdb", "postgres"])
def resolved(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Resolved]:
    engine = str(request.param)
    if engine == "postgres":
        _require_postgres()
    settings = make_settings(tmp_path_factory.mktemp(engine), engine)
    rt = Runtime(settings)
    try:
        scenario = generate(seed=2026, people=300)
        started = time.perf_counter()
        ids = _journal(rt, scenario)
        loaded = time.perf_counter()
        summary = rt.train_matching()
        trained = time.perf_counter()
        rows = rt.engine.fetch_all("SELECT record_key, profile_id FROM record_profiles")
        assert len(rows) == len(scenario.truth) == len({k for k, _ in rows})  # every key, once
        found = {str(k): str(p) if p is not None else f"none:{k}" for k, p in rows}
        tickets = _tickets(rt, ids["support"], scenario, found)
        yield Resolved(engine, scenario, found, summary, tickets, (loaded - started, trained - loaded))
    finally:
        rt.close()
        if engine == "postgres":
            from opencdp.store.postgres_engine import PostgresEngine

            PostgresEngine(settings.postgres_dsn, schema=settings.postgres_schema).drop_schema()


def test_scores_against_the_generators_truth(resolved: Resolved) -> None:
    r, s = resolved, resolved.scenario
    pairwise, bcubed = r.pairwise, r.bcubed
    wrong = {case: r.wrongly_merged(s.cases[case]) for case in CASES}
    print(
        f"\n{r.engine}: {len(s.people)} people, {len(s.truth)} messages and records, "
        f"{len(set(r.found.values()))} profiles; load and resolve {r.seconds[0]:.1f} s, train {r.seconds[1]:.1f} s"
        f"\n  model: trained on {r.summary['trained_on']} match records, features {r.summary['features']}, "
        f"pairs {r.summary['pairs']}"
        f"\n  pairwise {pairwise}\n  B-cubed  {bcubed}"
        f"\n  wrongly merged profiles per case: {wrong}; "
        f"profiles holding two people or more: {r.wrongly_merged(set(s.people))}"
        f"\n  share in their person's main profile, per source: "
        + ", ".join(f"{origin} {share:.3f}" for origin, share in r.attached().items())
        + f"\n  tickets (a personal address and a name only): {dict(r.tickets)}"
    )
    # floors a little under what both engines gave (pairwise 1.0000 / 0.9472 / 0.9729, B-cubed 1.0000 / 0.9485 /
    # 0.9736); the recall lost is mostly support tickets, which carry too little to merge (they wait in review)
    assert pairwise.precision >= 0.995, pairwise
    assert pairwise.recall >= 0.93, pairwise
    assert pairwise.f1 >= 0.96, pairwise
    assert bcubed.precision >= 0.995, bcubed
    assert bcubed.recall >= 0.93, bcubed
    assert bcubed.f1 >= 0.96, bcubed


@pytest.mark.parametrize("case", ["placeholders", "family_computer", "shared_mailbox", "recycled_phone", "namesakes"])
def test_no_profile_merges_two_people_of_a_case(resolved: Resolved, case: str) -> None:
    assert resolved.wrongly_merged(resolved.scenario.cases[case]) == 0


def test_one_person_with_two_emails_is_one_profile(resolved: Resolved) -> None:
    s = resolved.scenario
    keys = [k for k, pid in s.truth.items() if pid == s.two_emails]
    assert len(keys) > 5
    assert len({resolved.found[k] for k in keys}) == 1
