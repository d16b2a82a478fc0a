"""Bad audience definitions are refused at definition time with a clear error and nothing saved (both engines);
hostile values stay values; audiences that can change with time alone are evaluated again on the schedule."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from opencdp.api.runtime import Runtime
from opencdp.config import Settings
from opencdp.errors import Rejected
from tests.identity.test_stitching import journal as send

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def rt(settings: Settings) -> Iterator[Runtime]:
    runtime = Runtime(settings)
    web = runtime.registry.create("web", "web", None).source_id
    send(runtime, web, [
        {"type": "identify", "messageId": "i1", "userId": "u1", "traits": {"city": "Paris", "plan": "gold"}},
        {"type": "identify", "messageId": "i2", "userId": "u2", "traits": {"city": "Lyon"}},
        {"type": "track", "messageId": "o1", "userId": "u1", "event": "Order Completed",
         "properties": {"order_id": "A", "total": 30}, "_at": NOW - timedelta(days=9)},
    ])  # fmt: skip
    runtime.put_audience({"name": "base", "where": {"trait": "city", "op": "=", "value": "Paris"}})
    yield runtime
    runtime.close()


def _deep(n: int) -> dict[str, Any]:
    return {"trait": "city", "op": "exists"} if n == 0 else {"not": _deep(n - 1)}


BAD: list[tuple[dict[str, Any], str]] = [
    ({"trait": "ltvnet", "op": ">", "value": 5}, "did you mean 'ltv_net'"),
    ({"trait": "order_count", "op": "=", "value": "ten"}, "type mismatch"),
    ({"trait": "city", "op": ">", "value": 5}, "type mismatch"),
    ({"trait": "last_order_at", "op": ">", "value": "yesterday"}, "not an ISO date"),
    ({"trait": "last_order_at", "op": "=", "value": "2026-01-01"}, "a timestamp"),
    ({"trait": "gross_revenue", "op": "contains", "value": "1"}, "a number"),
    ({"trait": "city", "op": "in_last_days", "value": 3}, "timestamp traits"),
    ({"trait": "city", "op": "between", "value": ["a", "b", "c"]}, "between takes [low, high]"),
    ({"trait": "city", "op": "=", "value": ["Paris"]}, "takes one value"),
    ({"trait": "city", "op": "exists", "value": "x"}, "takes no value"),
    ({"trait": "last_order_at", "op": "in_last_days", "value": 0}, "whole number of days"),
    ({"audience": "nope"}, "there is no audience 'nope'"),
    ({"identity": "passport"}, "not an identifier type"),
    ({"event": "Order Complete"}, "did you mean 'Order Completed'"),
    ({"event": "Order Completed", "at_least": 3, "at_most": 1}, "nobody can match"),
    ({"event": "Order Completed", "within_days": 0}, "within_days"),
    ({"event": "Order Completed", "at_least": 0}, "matches everyone"),
    ({"event": "Order Completed", "where": [{"property": "a'); DROP TABLE x; --", "op": "exists"}]}, "property path"),
    ({"all": []}, "at least one condition"),
    ({"foo": 1}, "a condition is all, any, not"),
    (_deep(9), "nest at most 8"),
    ({"any": [{"trait": "city", "op": "exists"}] * 101}, "at most 100 conditions"),
]


@pytest.mark.parametrize(("where", "message"), BAD, ids=[m for _, m in BAD])
def test_a_bad_definition_is_refused_and_nothing_saved(rt: Runtime, where: dict[str, Any], message: str) -> None:
    before = rt.engine.fetch_all("SELECT name, version FROM audiences ORDER BY name")
    for attempt in (rt.put_audience, rt.count_audience):
        with pytest.raises(Rejected) as caught:
            attempt({"name": "bad", "where": where})
        assert caught.value.code == "bad_audience" and message in caught.value.message, caught.value.message
    assert rt.engine.fetch_all("SELECT name, version FROM audiences ORDER BY name") == before


def test_bad_names_cycles_and_audiences_in_use(rt: Runtime) -> None:
    with pytest.raises(Rejected, match="not an audience name"):
        rt.put_audience({"name": "Bad Name", "where": {"trait": "city", "op": "exists"}})
    rt.put_audience({"name": "derived", "where": {"audience": "base"}})
    with pytest.raises(Rejected, match=r"circle: base -> derived -> base"):
        rt.put_audience({"name": "base", "where": {"audience": "derived"}})
    with pytest.raises(Rejected) as used:
        rt.delete_audience("base")
    assert used.value.code == "audience_in_use"
    with pytest.raises(Rejected) as missing:
        rt.delete_audience("nope")
    assert missing.value.status == 404
    assert [a["name"] for a in rt.audiences()] == ["base", "derived"]
    assert [a["members"] for a in rt.audiences()] == [1, 1]


def test_hostile_values_are_only_values(rt: Runtime) -> None:
    assert rt.count_audience({"where": {"trait": "city", "op": "=", "value": "x' OR '1'='1"}})["count"] == 0
    assert rt.count_audience({"where": {"trait": "plan", "op": "=", "value": "gold'; DROP TABLE audiences; --"}})[
        "count"
    ] == 0  # fmt: skip
    assert rt.count_audience({"where": {"trait": "city", "op": "contains", "value": "%"}})["count"] == 0
    assert rt.count_audience({"where": {"trait": "city", "op": "exists"}})["count"] == 2
    assert rt.engine.fetch_one("SELECT count(*) FROM audiences") == (1,)


def test_time_relative_audiences_are_evaluated_again_on_the_schedule(rt: Runtime) -> None:
    rt.put_audience({"name": "recent_buyers", "where": {"event": "Order Completed", "within_days": 10}})
    rt.put_audience({"name": "recent_by_trait", "where": {"trait": "last_order_at", "op": "in_last_days",
                                                          "value": 10}})  # fmt: skip
    u1 = rt.profile("user_id:u1")["profile_id"]
    assert [m["profile_id"] for m in rt.audience_members("recent_buyers")] == [u1]
    assert [m["profile_id"] for m in rt.audience_members("recent_by_trait")] == [u1]
    assert rt.segments.run([]).audiences == 0  # nothing is due yet
    later = NOW + timedelta(days=2)
    rt.segments.clock = lambda: later
    done = rt.segments.run([])
    assert done.audiences == 2 and done.exited == 2
    assert rt.audience_members("recent_buyers") == [] and rt.audience_members("recent_by_trait") == []
    causes = rt.engine.fetch_all("SELECT DISTINCT change, cause FROM audience_changes WHERE profile_id = ? "
                                 "AND audience LIKE 'recent%'", (u1,))  # fmt: skip
    assert sorted(causes) == [("entered", "batch"), ("exited", "schedule")]
    assert rt.segments.run([]).audiences == 0  # and not again until the next one is due
    assert [m["profile_id"] for m in rt.audience_members("base")] == [u1]  # the others are not re-evaluated


def test_names_the_data_just_showed_are_known_at_once(rt: Runtime) -> None:
    """Trait keys and event names are cached for checks; a refusal reads them again, so a name the data has
    just shown is never refused."""
    assert rt.count_audience({"where": {"event": "Order Completed"}})["count"] == 1  # fills the cache
    with pytest.raises(Rejected, match="no event named 'Wishlist Added'"):
        rt.count_audience({"where": {"event": "Wishlist Added"}})
    web = rt.registry.get("web").source_id
    send(rt, web, [{"type": "track", "messageId": "w1", "userId": "u2", "event": "Wishlist Added"},
                   {"type": "identify", "messageId": "i3", "userId": "u2", "traits": {"shoe_size": "44"}}])  # fmt: skip
    assert rt.count_audience({"where": {"event": "Wishlist Added"}})["count"] == 1
    assert rt.count_audience({"where": {"trait": "shoe_size", "op": "=", "value": "44"}})["count"] == 1
