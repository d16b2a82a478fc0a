"""Incremental profiles on both engines: a batch computes golden and computed traits again only for the profiles
whose inputs it could change, and the result equals a computation of every profile from scratch, batch after
batch, over random traffic (page views, product views, identify calls with new traits and new identifiers,
orders, refunds, anonymous visitors who log in later). The profile API's read model follows each batch."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from opencdp.api.runtime import Runtime
from opencdp.cli.backend import Backend
from opencdp.config import Settings
from tests.identity.test_stitching import journal as send
from tests.profiles.test_traits import _assert_read_model_is_current

T0 = datetime(2026, 4, 1, tzinfo=UTC)
PRODUCTS = [("Tools", "Acme"), ("Garden", "Verde"), ("Books", "Folio")]


@pytest.fixture
def rt(settings: Settings) -> Iterator[Runtime]:
    runtime = Runtime(settings)
    runtime.put_profile_settings({"currency": "USD", "rates": {"EUR": 1.2}})
    yield runtime
    runtime.close()


def _stored(rt: Runtime) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Every golden trait with its lineage, and every computed trait (without when it was computed)."""
    golden = rt.engine.fetch_all("SELECT * FROM profile_traits ORDER BY profile_id, trait")
    names = ", ".join(t.name for t in rt.profiles.definitions().traits)
    computed = rt.engine.fetch_all(f"SELECT profile_id, {names} FROM profile_computed ORDER BY profile_id")
    return golden, computed


def _batch(rng: random.Random, n: int, at: datetime, seen: list[str]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for k in range(n):
        mid = f"m-{at:%d%H%M}-{k}"
        user = f"u{rng.randrange(8)}"
        who = {"userId": user} if rng.random() < 0.7 else {"anonymousId": f"a{rng.randrange(12)}"}
        kind = rng.random()
        m: dict[str, Any]
        if kind < 0.35:
            m = {"type": "page", "name": "Home", **who}
        elif kind < 0.5:
            category, brand = rng.choice(PRODUCTS)
            m = {"type": "track", "event": "Product Viewed", **who,
                 "properties": {"category": category, "brand": brand}}  # fmt: skip
        elif kind < 0.6:
            m = {"type": "track", "event": "Page Viewed", **who}
        elif kind < 0.75:
            order = f"o-{mid}"
            seen.append(order)
            m = {"type": "track", "event": "Order Completed", **who,
                 "properties": {"order_id": order, "total": rng.choice([10, 25.5, 99]),
                                "currency": rng.choice(["USD", "EUR"]),
                                "discount": rng.choice([0, 5])}}  # fmt: skip
        elif kind < 0.8 and seen:
            m = {"type": "track", "event": "Order Refunded", **who,
                 "properties": {"order_id": rng.choice(seen), "total": 5, "currency": "USD"}}  # fmt: skip
        else:  # an identify call, which may link an anonymous visitor and bring a new email or name
            traits = {"email": f"{user}.{rng.randrange(3)}@mail.test", "firstName": rng.choice(["Al", "Bo"])}
            m = {"type": "identify", "userId": user, "anonymousId": f"a{rng.randrange(12)}", "traits": traits}
        out.append({**m, "messageId": mid, "_at": at + timedelta(seconds=k)})
    return out


def test_batches_compute_again_only_what_they_change_and_match_a_full_computation(rt: Runtime) -> None:
    rng = random.Random(17)
    web = rt.registry.create("web", "web", None).source_id
    orders: list[str] = []
    for b in range(8):
        send(rt, web, _batch(rng, 25, T0 + timedelta(hours=b), orders))
        _assert_read_model_is_current(rt)
        incremental = _stored(rt)
        rt.backfill_traits()  # every profile from scratch
        assert _stored(rt) == incremental, f"batch {b}"
    assert incremental[0] and incremental[1]


def test_a_page_view_adds_to_the_timeline_and_leaves_the_traits_alone(rt: Runtime) -> None:
    web = rt.registry.create("web", "web", None).source_id
    order = {"order_id": "o1", "total": 30, "currency": "USD"}
    send(rt, web, [{"type": "identify", "messageId": "i1", "userId": "kim", "traits": {"email": "kim@mail.test"}},
                   {"type": "track", "messageId": "t1", "event": "Order Completed", "userId": "kim",
                    "properties": order}])  # fmt: skip
    before = rt.profile("user_id:kim")
    send(rt, web, [{"type": "page", "messageId": "p1", "name": "Home", "userId": "kim"}])
    after = rt.profile("user_id:kim")
    assert after["computed_at"] == before["computed_at"]  # not computed again
    assert after["computed"] == before["computed"] and after["traits"] == before["traits"]
    assert [r["kind"] for r in after["timeline"]][:2] == ["page", "track"]
    cached = rt.profile_cache.lookup("user_id:kim")
    assert cached is not None and cached.document(lineage=False)["timeline"][0]["seq"] == after["timeline"][0]["seq"]
    _assert_read_model_is_current(rt)

    # an order is computed at once; a new identifier joins the document's identities
    send(rt, web, [{"type": "track", "messageId": "t2", "event": "Order Completed", "userId": "kim",
                    "anonymousId": "kim-phone", "properties": {**order, "order_id": "o2"}}])  # fmt: skip
    cached = rt.profile_cache.lookup("anonymous_id:kim-phone")
    assert cached is not None
    doc = cached.document(lineage=False)
    assert doc["computed"]["order_count"] == 2 and doc["computed_at"] != before["computed_at"]
    assert {"type": "anonymous_id", "value": "kim-phone"} in doc["identities"]
    _assert_read_model_is_current(rt)


def test_a_batch_hands_every_touched_profiles_identifiers_and_activity_to_the_segments_stage(rt: Runtime) -> None:
    """What the segments stage is handed (instead of reading the whole tables again) is, at the moment it runs,
    every identifier of every touched profile and all of their activity with a grain; a batch that computed
    no trait hands nothing over."""
    web = rt.registry.create("web", "web", None).source_id
    real_run = rt.segments.run
    seen: list[bool] = []
    wrong: list[str] = []  # the loader logs and retries what fails in a stage: collected, asserted below

    def checked_run(touched: list[str] | None, **kwargs: Any) -> Any:
        handed = kwargs.get("handed")
        seen.append(handed is not None)
        if handed is not None and touched:
            e = rt.engine
            e.execute("CREATE TEMP TABLE IF NOT EXISTS _t_touched (profile_id VARCHAR)")
            e.execute("DELETE FROM _t_touched")
            for pid in touched:
                e.execute("INSERT INTO _t_touched VALUES (?)", (pid,))
            nodes = "SELECT node_id, profile_id FROM {} WHERE profile_id IN (SELECT profile_id FROM _t_touched)"
            if sorted(e.fetch_all(nodes.format(handed.nodes))) != sorted(
                e.fetch_all(nodes.format("identity_membership"))
            ):
                wrong.append(f"identifiers, batch {len(seen)}")
            rows = """SELECT a.node_id, a.seq, a.grain, a.name, a.ts, a.item_key, a.amount, a.currency,
                             CAST(a.props AS VARCHAR) FROM {} AS a
                      JOIN identity_membership AS m ON m.node_id = a.node_id
                      WHERE a.grain IS NOT NULL AND m.profile_id IN (SELECT profile_id FROM _t_touched)"""
            want = sorted(e.fetch_all(rows.format("activity")), key=repr)
            if not want or sorted(e.fetch_all(rows.format(handed.activity)), key=repr) != want:
                wrong.append(f"activity, batch {len(seen)}")
        return real_run(touched, **kwargs)

    rt.segments.run = checked_run  # type: ignore[method-assign]
    rt.put_audience({"name": "buyers", "where": {"event": "Order Completed"}})
    rng = random.Random(5)
    orders: list[str] = []
    for b in range(6):
        send(rt, web, _batch(rng, 25, T0 + timedelta(hours=b), orders))
    # an anonymous visitor's activity follows them into the profile they log in to
    send(rt, web, [{"type": "track", "messageId": "x1", "event": "Order Completed", "anonymousId": "late",
                    "properties": {"order_id": "ox", "total": 12}, "_at": T0 + timedelta(days=1)}])  # fmt: skip
    send(rt, web, [{"type": "identify", "messageId": "x2", "userId": "u1", "anonymousId": "late",
                    "_at": T0 + timedelta(days=1, hours=1)}])  # fmt: skip
    send(rt, web, [{"type": "page", "messageId": "x3", "name": "Home", "userId": "u1",
                    "_at": T0 + timedelta(days=1, hours=2)}])  # fmt: skip
    assert not wrong and rt.last_load_error is None
    assert seen[-1] is False  # a page view computes no trait: nothing handed over
    assert sum(seen) >= 6
    assert rt.evaluate_audiences() == {"audiences": 1, "entered": 0, "exited": 0}


def test_a_command_without_a_server_processes_without_building_the_read_model(settings: Settings) -> None:
    """The CLI's runtime (no server running) keeps no profile API read model: building it reads every profile
    (minutes at 1M), and a command never serves it. The server's runtime builds it from the same data."""
    with Backend(settings)._runtime() as local:
        web = local.registry.create("web", "web", None).source_id
        send(local, web, [
            {"type": "identify", "messageId": "i1", "userId": "kim", "traits": {"email": "kim@mail.test"}},
            {"type": "track", "messageId": "t1", "event": "Order Completed", "userId": "kim",
             "properties": {"order_id": "o1", "total": 30, "currency": "USD"}},
        ])  # fmt: skip
        assert local.profile("user_id:kim")["computed"]["order_count"] == 1  # processed
        assert local.profile_cache.docs == {} and local.profile_cache.lookup("user_id:kim") is None
    server = Runtime(settings)
    try:
        cached = server.profile_cache.lookup("user_id:kim")
        assert cached is not None and cached.document(lineage=False)["computed"]["order_count"] == 1
    finally:
        server.close()
