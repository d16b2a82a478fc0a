"""What audiences read instead of joins and JSON, on both engines: property paths kept as columns of
``activity``, golden traits as columns of ``profile_computed`` (once a definition reads one), and each
profile's integer key (kept for good) with ``profile_nodes``. Each must equal what it stands for (the JSON
property, the golden trait row, the identity membership) after late events, merges, splits and a definition
that starts reading a new path; and audiences over them must equal an independent evaluation in plain
Python."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from opencdp.api.runtime import Runtime
from opencdp.config import Settings
from opencdp.model.profiles import GOLDEN_NAMES
from opencdp.profiles.observe import KEYED_NAMES
from tests.identity.test_stitching import journal as send

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def rt(settings: Settings) -> Iterator[Runtime]:
    runtime = Runtime(settings)
    yield runtime
    runtime.close()


def assert_kept(rt: Runtime, keys: dict[str, int]) -> None:
    """Every kept column equals what it stands for; ``keys``: the profile keys seen so far."""
    e = rt.engine
    for path, col in e.fetch_all("SELECT path, col FROM activity_properties"):
        differ = e.fetch_one(
            f"SELECT count(*) FROM activity WHERE {col} IS DISTINCT FROM json_extract_string(props, '$.{path}')"
        )
        assert differ == (0,), (path, col)
    # every live profile has a key of its own, kept for good: ``keys`` holds each key seen so far by profile id,
    # and no id changes its key or gives it to another
    live = {str(p): int(k) for p, k in e.fetch_all("SELECT profile_id, profile_key FROM profiles_index")}
    for pid, key in live.items():
        assert keys.setdefault(pid, key) == key, pid
    assert len(set(keys.values())) == len(keys)
    # the rows that carry the key carry their profile's: identifiers, computed rows, saved members; profile_nodes
    # maps exactly each computed profile's identifiers
    membership = e.fetch_all("SELECT node_id, profile_id, profile_key FROM identity_membership ORDER BY node_id")
    assert all(live[p] == k for _, p, k in membership)
    computed = {str(p): k for p, k in e.fetch_all("SELECT profile_id, profile_key FROM profile_computed")}
    assert all(live[p] == k for p, k in computed.items())  # and no row of a profile that is gone
    members = e.fetch_all("SELECT profile_id, profile_key FROM audience_members")
    assert all(live[p] == k for p, k in members)
    kept = e.fetch_all("SELECT node_id, profile_key FROM profile_nodes ORDER BY node_id")
    assert kept == [(n, k) for n, p, k in membership if p in computed]
    # golden traits as columns, once kept: the value of the profile's golden row, NULL without one; NULL before
    kept_golden = e.fetch_one("SELECT count(*) FROM golden_columns_kept") == (1,)
    golden = sorted(GOLDEN_NAMES)
    rows = e.fetch_all(f"SELECT profile_id, {', '.join(golden)} FROM profile_computed")
    traits: dict[tuple[str, str], str] = {
        (str(p), str(t)): str(v) for p, t, v in e.fetch_all("SELECT profile_id, trait, value FROM profile_traits")
    }
    for row in rows:
        for name, value in zip(golden, row[1:], strict=True):
            assert value == (traits.get((str(row[0]), name)) if kept_golden else None), (row[0], name)
    # only rows of these names ever have an item key (segments count other names by rows)
    keyed = {str(r[0]) for r in e.fetch_all("SELECT DISTINCT name FROM activity WHERE item_key IS NOT NULL")}
    assert keyed <= set(KEYED_NAMES)


def _added(mid: str, who: dict[str, str], at: datetime, **props: Any) -> dict[str, Any]:
    return {"type": "track", "messageId": mid, "event": "Product Added", **who, "properties": props, "_at": at}


def _count(events: list[tuple[datetime, dict[str, Any]]], path: str, value: str, days: int) -> int:
    def get(props: dict[str, Any]) -> Any:
        for part in path.split("."):
            props = props.get(part) if isinstance(props, dict) else None  # type: ignore[assignment]
        return props

    return sum(1 for at, props in events if at >= NOW - timedelta(days=days) and get(props) == value)


def test_kept_columns_follow_late_events_merges_splits_and_new_paths(rt: Runtime) -> None:
    web = rt.registry.create("web", "web", None).source_id
    keys: dict[str, int] = {}
    # what each person did, by identifier (an anonymous visitor's events are theirs once they log in)
    did: dict[str, list[tuple[datetime, dict[str, Any]]]] = {k: [] for k in ("u1", "a1", "u2", "a2", "u3")}
    n = 0

    def add(ref: str, days_ago: float, **props: Any) -> dict[str, Any]:
        nonlocal n
        n += 1
        at = NOW - timedelta(days=days_ago)
        did[ref].append((at, props))
        who = {"userId": ref} if ref.startswith("u") else {"anonymousId": ref}
        return _added(f"m{n}", who, at, **props)

    send(rt, web, [
        {"type": "identify", "messageId": "i1", "userId": "u1", "traits": {"city": "Porto"}},
        {"type": "identify", "messageId": "i2", "userId": "u2", "traits": {"city": "Lyon"}},
        {"type": "identify", "messageId": "i3", "userId": "u3"},
        add("u1", 3, category="tools"), add("u1", 40, category="tools"), add("u2", 2, category="garden"),
        add("u3", 1, category="tools", item={"brand": "Acme"}), add("u3", 5, category="tools"),
        add("a1", 4, category="tools", item={"brand": "Acme"}), add("a2", 2, category="tools"),
    ])  # fmt: skip
    assert rt.engine.fetch_all("SELECT path FROM activity_properties") == []
    tools = {"event": "Product Added", "at_least": 2, "within_days": 30,
             "where": [{"property": "category", "op": "=", "value": "tools"}]}  # fmt: skip

    def profile(ref: str) -> str:
        kind = "user_id" if ref.startswith("u") else "anonymous_id"
        return str(rt.profile(f"{kind}:{ref}")["profile_id"])

    def expected(groups: dict[str, list[str]], path: str, value: str, days: int, at_least: int) -> set[str]:
        """Profile ids (by their first identifier) with at least ``at_least`` such events."""
        return {profile(refs[0]) for refs in groups.values()
                if sum(_count(did[r], path, value, days) for r in refs) >= at_least}  # fmt: skip

    # the first count of a definition reading `category` keeps it as a column, filled for the rows so far
    counted = rt.count_audience({"where": tools})
    assert rt.engine.fetch_all("SELECT path FROM activity_properties") == [("category",)]
    assert_kept(rt, keys)
    apart = {"u1": ["u1"], "a1": ["a1"], "u2": ["u2"], "a2": ["a2"], "u3": ["u3"]}
    assert counted["count"] == len(expected(apart, "category", "tools", 30, 2)) == 1  # u3
    rt.put_audience({"name": "tool_fans", "where": tools})

    def members(name: str) -> set[str]:
        return {m["profile_id"] for m in rt.audience_members(name)}

    assert members("tool_fans") == expected(apart, "category", "tools", 30, 2)
    # golden columns are kept from the first definition that reads a golden trait on: filled at once
    assert rt.engine.fetch_all("SELECT since FROM golden_columns_kept") == []
    assert rt.engine.fetch_one("SELECT count(*) FROM profile_computed WHERE city IS NOT NULL") == (0,)
    rt.put_audience({"name": "porto_or_lyon", "where": {"trait": "city", "op": "in", "value": ["Porto", "Lyon"]}})
    assert rt.engine.fetch_one("SELECT count(*) FROM golden_columns_kept") == (1,)
    assert_kept(rt, keys)
    assert members("porto_or_lyon") == {profile("u1"), profile("u2")}

    # late events (days old, arriving now) are written with the column filled; the visitors log in: merges
    send(rt, web, [
        add("u2", 12, category="tools"), add("a1", 20, category="tools"),
        {"type": "identify", "messageId": "i4", "userId": "u1", "anonymousId": "a1"},
        {"type": "identify", "messageId": "i5", "userId": "u2", "anonymousId": "a2", "traits": {"city": "Porto"}},
    ])  # fmt: skip
    assert_kept(rt, keys)
    merged = {"u1": ["u1", "a1"], "u2": ["u2", "a2"], "u3": ["u3"]}
    assert members("tool_fans") == expected(merged, "category", "tools", 30, 2) == {
        profile("u1"), profile("u2"), profile("u3")}  # fmt: skip
    assert members("porto_or_lyon") == {profile("u1"), profile("u2")}
    assert rt.count_audience({"where": {"trait": "city", "op": "=", "value": "Lyon"}})["count"] == 0

    # golden traits change with nothing else (no activity, no new identifier): their columns follow at once
    send(rt, web, [
        {"type": "identify", "messageId": "i6", "userId": "u3", "traits": {"city": "Lyon"}},
        {"type": "identify", "messageId": "i7", "userId": "u1", "traits": {"city": "Paris"}},
    ])  # fmt: skip
    assert_kept(rt, keys)
    assert members("porto_or_lyon") == {profile("u2"), profile("u3")}
    assert rt.count_audience({"where": {"trait": "city", "op": "=", "value": "Paris"}})["count"] == 1

    # a definition reading a new (nested) path: its column is added and filled for every row so far
    acme = {"event": "Product Added", "within_days": 30,
            "where": [{"property": "item.brand", "op": "=", "value": "Acme"}]}  # fmt: skip
    counted = rt.count_audience({"where": acme})
    assert sorted(r[0] for r in rt.engine.fetch_all("SELECT path FROM activity_properties")) == [
        "category", "item.brand"]  # fmt: skip
    assert_kept(rt, keys)
    assert counted["count"] == len(expected(merged, "item.brand", "Acme", 30, 1)) == 2  # u1 (as a1), u3
    rt.put_audience({"name": "acme", "where": acme})

    # the visitor a1 is split off u1 for good: each keeps its own events, keys and memberships
    rt.split_profile("user_id:u1", "anonymous_id:a1")
    rt.load()
    assert profile("a1") != profile("u1")
    assert_kept(rt, keys)
    split = {"u1": ["u1"], "a1": ["a1"], "u2": ["u2", "a2"], "u3": ["u3"]}
    assert members("tool_fans") == expected(split, "category", "tools", 30, 2) == {
        profile("a1"), profile("u2"), profile("u3")}  # fmt: skip
    assert members("acme") == expected(split, "item.brand", "Acme", 30, 1) == {profile("a1"), profile("u3")}

    # an order sent twice (a corrected version) counts once, by event name or by kind; other events count rows
    def order(mid: str, order_id: str, total: float) -> dict[str, Any]:
        return {"type": "track", "messageId": mid, "event": "Order Completed", "userId": "u3",
                "properties": {"order_id": order_id, "total": total}, "_at": NOW - timedelta(days=1)}  # fmt: skip

    send(rt, web, [order("o1", "A-1", 10.0), order("o2", "A-2", 5.0)])
    rt.put_audience({"name": "buyers", "where": {"event": "Order Completed"}})
    # "bought at all" and "exactly two orders" count the same rows, in one column of the real-time pass
    rt.put_audience({"name": "two_orders", "where": {"event": "Order Completed", "at_least": 2, "at_most": 2}})
    assert members("two_orders") == members("buyers") == {profile("u3")}
    send(rt, web, [order("o1-fixed", "A-1", 12.0)])  # a corrected version of A-1, in real time: still two
    assert members("two_orders") == {profile("u3")}
    for where in ({"event": "Order Completed"}, {"over": "orders"}):
        assert rt.count_audience({"where": {**where, "at_least": 2}})["count"] == 1, where
        assert rt.count_audience({"where": {**where, "at_least": 3}})["count"] == 0, where
        assert rt.count_audience({"where": {**where, "at_most": 1}})["count"] == 3, where  # u1, a1, u2
    send(rt, web, [order("o3", "A-3", 7.0)])
    assert members("two_orders") == set()  # three orders now: it left in real time

    # a full evaluation (over the kept columns and keys) finds nothing the real-time path missed
    assert rt.evaluate_audiences() == {"audiences": 5, "entered": 0, "exited": 0}


def test_a_store_made_before_profile_keys_is_keyed_when_opened(settings: Settings) -> None:
    """A store whose profiles have no key yet (made before keys were drawn from a sequence; its computed rows
    keyed by their smallest identifier) gets a key for every profile and for the rows that carry one when it is
    opened; its audiences keep their members (a full evaluation finds no change) and a saved member whose
    profile is gone leaves."""
    rt = Runtime(settings)
    web = rt.registry.create("web", "web", None).source_id
    send(rt, web, [{"type": "identify", "messageId": f"m{i}", "userId": f"u{i}", "anonymousId": f"a{i}",
                    "traits": {"city": "Porto" if i % 2 else "Lyon"}} for i in range(6)])  # fmt: skip
    rt.put_audience({"name": "porto", "where": {"trait": "city", "op": "=", "value": "Porto"}})
    porto = {m["profile_id"] for m in rt.audience_members("porto")}
    assert len(porto) == 3
    e = rt.engine
    # as such a store was: no keys; computed rows and profile_nodes by smallest identifier; and a member whose
    # profile went without its exit being recorded
    e.execute("UPDATE profiles_index SET profile_key = NULL")
    e.execute("UPDATE identity_membership SET profile_key = NULL")
    e.execute("UPDATE audience_members SET profile_key = NULL")
    e.execute("""UPDATE profile_computed SET profile_key = (SELECT min(node_id) FROM identity_membership AS m
                 WHERE m.profile_id = profile_computed.profile_id)""")  # fmt: skip
    e.execute("""UPDATE profile_nodes SET profile_key = (SELECT min(n.node_id) FROM identity_membership AS m
                 JOIN identity_membership AS n ON n.profile_id = m.profile_id
                 WHERE m.node_id = profile_nodes.node_id)""")  # fmt: skip
    e.execute("INSERT INTO audience_members (audience, profile_id, since) VALUES ('porto', 'prf_gone', ?)", (NOW,))
    rt.close()

    rt = Runtime(settings)
    try:
        assert_kept(rt, {})
        # every profile was computed again, so every audience was evaluated in full: only the gone one left
        left = rt.engine.fetch_all("SELECT profile_id FROM audience_changes WHERE change = 'exited'")
        assert left == [("prf_gone",)]
        assert {m["profile_id"] for m in rt.audience_members("porto")} == porto
        assert rt.evaluate_audiences() == {"audiences": 1, "entered": 0, "exited": 0}
        # profiles created from now on draw keys after those
        send(rt, web, [{"type": "identify", "messageId": "m9", "userId": "u9", "traits": {"city": "Porto"}}])
        assert_kept(rt, {})
        assert len({m["profile_id"] for m in rt.audience_members("porto")}) == 4
    finally:
        rt.close()
