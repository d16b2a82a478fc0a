"""Deterministic stitching on both engines: identifiers, placeholders, components checked against networkx,
incremental batches equal one full run, stable profile ids, aliases and events, and the record_profiles view."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import networkx as nx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opencdp.api.runtime import Runtime
from opencdp.config import Settings
from opencdp.store.journal import accepted_line
from tests.conftest import make_settings


@pytest.fixture
def rt(settings: Settings) -> Iterator[Runtime]:
    runtime = Runtime(settings)
    yield runtime
    runtime.close()


def journal(rt: Runtime, source_id: str, messages: list[dict[str, Any]]) -> None:
    lines = b""
    for m in messages:
        client = (m["messageId"], m["type"], m.get("event"), m.get("userId"), m.get("anonymousId"))
        lines += accepted_line(
            source_id, client, (None, None, None, "2026-01-01T00:00:00.000Z"), json.dumps(m).encode()
        )
    rt.journal.write_sync(lines)
    rt.load()


def msg(mid: str, *, user: str | None = None, anon: str | None = None, **traits: Any) -> dict[str, Any]:
    m: dict[str, Any] = {"type": "identify" if traits else "track", "messageId": mid, "event": "E"}
    if user:
        m["userId"] = user
    if anon:
        m["anonymousId"] = anon
    if traits:
        m["traits"] = traits
    return m


def profiles(rt: Runtime) -> dict[str, str | None]:
    """messageId -> profile id, through the record_profiles view."""
    return {k: p for k, p in rt.engine.fetch_all("SELECT record_key, profile_id FROM record_profiles")}


def partition(assignment: dict[str, str | None]) -> set[frozenset[str]]:
    groups: dict[str, set[str]] = {}
    for key, profile in assignment.items():
        if profile is not None:
            groups.setdefault(profile, set()).add(key)
    return {frozenset(g) for g in groups.values()}


def test_an_anonymous_visitor_becomes_known_and_placeholders_join_nobody(rt: Runtime) -> None:
    web = rt.registry.create("web", "web", None).source_id
    journal(rt, web, [msg("1", anon="a1"), msg("2", anon="a1"), msg("3", anon="a2")])
    before = profiles(rt)
    assert before["1"] == before["2"] != before["3"]
    journal(rt, web, [msg("4", user="u1", anon="a1", email=" Ada@Example.org"), msg("5", user="u1", anon="a2")])
    after = profiles(rt)
    assert len({after[k] for k in "12345"}) == 1  # a1 and a2 were one person all along: merged
    survivor = after["1"]
    assert survivor == before["1"]  # the oldest profile survives
    absorbed = rt.engine.fetch_all("SELECT alias, profile_id FROM profile_aliases")
    assert absorbed == [(before["3"], survivor)]
    events = rt.engine.fetch_all(
        "SELECT kind, profile_id, other_profile_id FROM identity_events ORDER BY happened_at, kind"
    )
    assert ("merged", survivor, before["3"]) in events
    # placeholders identify nobody: two people sharing "test@test.com" and "N/A" stay apart
    journal(rt, web, [msg("6", user="u2", email="test@test.com", phone="N/A"),
                      msg("7", user="u3", email="TEST@test.com", phone="0000000000")])  # fmt: skip
    now = profiles(rt)
    assert now["6"] != now["7"]
    emails = rt.engine.fetch_all("SELECT id_value FROM identity_nodes WHERE id_type = 'email'")
    assert emails == [("ada@example.org",)]  # normalised; the placeholder never became a node


def test_records_join_by_email_and_crm_ids_are_per_source(rt: Runtime) -> None:
    web = rt.registry.create("web", "web", None).source_id
    crm = rt.registry.create("crm", "server", None).source_id
    journal(rt, web, [msg("w1", user="u1", email="ada@example.org")])
    record = {"type": "record", "messageId": "r1", "event": "customers", "key": "C1",
              "fields": {"customer_id": "C1", "email": "ADA@example.org", "phone": "+4930123456"}}  # fmt: skip
    journal(rt, crm, [record])
    found = rt.engine.fetch_all("SELECT record_key, kind, profile_id FROM record_profiles")
    rows = {(key, kind): profile for key, kind, profile in found}
    assert rows[("C1", "customers")] == rows[("w1", "event")]
    crm_ids = rt.engine.fetch_all("SELECT id_value FROM identity_nodes WHERE id_type = 'crm_id'")
    assert crm_ids == [(f"{crm}:C1",)]


def _random_messages(rng: random.Random, n: int, people: int) -> list[dict[str, Any]]:
    out = []
    for i in range(n):
        ids: dict[str, Any] = {}
        if rng.random() < 0.5:
            ids["user"] = f"u{rng.randrange(people)}"
        if rng.random() < 0.7 or not ids:
            ids["anon"] = f"a{rng.randrange(people * 2)}"
        if rng.random() < 0.3:
            ids["email"] = f"e{rng.randrange(people)}@x.org"
        out.append(msg(f"m{i}", **ids))
    return out


def _expected_partition(messages: list[dict[str, Any]]) -> set[frozenset[str]]:
    """Messages grouped by the connected components of their identifiers (networkx, independently)."""
    g: nx.Graph[str] = nx.Graph()
    for m in messages:
        ids = [f"user_id:{m['userId']}"] if "userId" in m else []
        ids += [f"anonymous_id:{m['anonymousId']}"] if "anonymousId" in m else []
        ids += [f"email:{m['traits']['email']}"] if "traits" in m else []
        g.add_node(m["messageId"])
        for identifier in ids:
            g.add_edge(m["messageId"], identifier)
    return {frozenset(n for n in c if not n.count(":")) for c in nx.connected_components(g)}


def test_components_match_networkx_on_a_random_graph(rt: Runtime) -> None:
    web = rt.registry.create("web", "web", None).source_id
    messages = _random_messages(random.Random(5), 400, 60)
    for start in range(0, len(messages), 37):  # many small batches
        journal(rt, web, messages[start : start + 37])
    assert partition(profiles(rt)) == _expected_partition(messages)


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(seed=st.integers(0, 10_000), cut=st.integers(1, 50))
def test_incremental_batches_in_any_order_equal_one_full_run(tmp_path: Path, seed: int, cut: int) -> None:
    rng = random.Random(seed)
    messages = _random_messages(rng, 60, 12)
    shuffled = messages[:]
    rng.shuffle(shuffled)
    results = []
    for order, size in ((messages, len(messages)), (shuffled, cut)):
        rt = Runtime(make_settings(tmp_path / f"{seed}-{cut}-{size}", "duckdb"))
        try:
            web = rt.registry.create("web", "web", None).source_id
            for start in range(0, len(order), size):
                journal(rt, web, order[start : start + size])
            results.append(partition(profiles(rt)))
            live = rt.engine.fetch_one("SELECT count(*) FROM profiles_index")
            assert live is not None and live[0] == len(results[-1])
        finally:
            rt.close()
    assert results[0] == results[1] == _expected_partition(messages)


def test_profile_ids_survive_a_rerun(tmp_path: Path) -> None:
    messages = _random_messages(random.Random(9), 80, 15)
    ids = []
    for run in range(2):
        rt = Runtime(make_settings(tmp_path / str(run), "duckdb"))
        try:
            web = rt.registry.create("web", "web", None).source_id
            journal(rt, web, messages)
            ids.append(profiles(rt))
        finally:
            rt.close()
    assert ids[0] == ids[1]
