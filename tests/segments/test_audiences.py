"""Audiences on both engines, checked against an independent evaluation in plain Python over the same random
data: random condition trees over golden, custom and computed traits, activity with windows and property
filters, identities and other audiences; batch evaluation (on save), live counts of every branch, and the
real-time path (events after the save) must all agree with Python, and with each other."""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from opencdp.api.runtime import Runtime
from opencdp.config import Settings
from opencdp.model.audiences import AudienceDefinition
from opencdp.segments.compile import Sources, Workspace, compiled_together
from tests.identity.test_stitching import journal as send

NOW = datetime.now(UTC).replace(microsecond=0)
CITIES = ["Berlin", "Paris", "Porto", "Lyon"]
PLANS = ["gold", "silver", "free"]
CATEGORIES = ["tools", "garden", "toys"]


@pytest.fixture
def rt(settings: Settings) -> Iterator[Runtime]:
    runtime = Runtime(settings)
    yield runtime
    runtime.close()


@dataclass
class Person:
    user: str
    email: str | None = None
    city: str | None = None
    plan: str | None = None
    orders: list[tuple[datetime, float]] = field(default_factory=list)
    added: list[tuple[datetime, str]] = field(default_factory=list)  # Product Added: (when, category)


@dataclass
class World:
    people: dict[str, Person] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    n: int = 0

    def _mid(self) -> str:
        self.n += 1
        return f"m{self.n}"

    def identify(self, p: Person, at: datetime, **traits: str) -> None:
        for k, v in traits.items():
            setattr(p, k, v)
        self.messages.append({"type": "identify", "messageId": self._mid(), "userId": p.user, "traits": traits,
                              "_at": at})  # fmt: skip

    def order(self, p: Person, at: datetime, total: float) -> None:
        p.orders.append((at, total))
        self.messages.append({"type": "track", "messageId": self._mid(), "userId": p.user, "event": "Order Completed",
                              "properties": {"order_id": f"o{self.n}", "total": total}, "_at": at})  # fmt: skip

    def add(self, p: Person, at: datetime, category: str) -> None:
        p.added.append((at, category))
        self.messages.append({"type": "track", "messageId": self._mid(), "userId": p.user, "event": "Product Added",
                              "properties": {"category": category}, "_at": at})  # fmt: skip


def _activity(rng: random.Random, world: World, p: Person) -> None:
    for _ in range(rng.randint(0, 4)):
        world.order(p, NOW - timedelta(days=rng.randint(0, 90), hours=rng.randint(1, 20)), float(rng.randint(5, 200)))
    for _ in range(rng.randint(0, 5)):
        world.add(p, NOW - timedelta(days=rng.randint(0, 60), hours=rng.randint(1, 20)), rng.choice(CATEGORIES))


def _world(rng: random.Random, people: int) -> World:
    world = World()
    for i in range(people):
        p = Person(f"u{i}")
        world.people[p.user] = p
        traits = {}
        if rng.random() < 0.7:
            traits["email"] = f"p{i}@shop.example"
        if rng.random() < 0.8:
            traits["city"] = rng.choice(CITIES)
        if rng.random() < 0.6:
            traits["plan"] = rng.choice(PLANS)
        world.identify(p, NOW - timedelta(days=100), **traits)
        _activity(rng, world, p)
    return world


# ------------------------------------------------------------------------------------ the independent evaluation

Eval = Callable[[Person], bool]


def _count(times: list[datetime], within: int | None) -> int:
    return sum(1 for t in times if within is None or t >= NOW - timedelta(days=within))


def _trait_value(p: Person, trait: str) -> Any:
    if trait == "order_count":
        return len(p.orders)
    if trait == "gross_revenue":
        return float(sum(total for _, total in p.orders))
    if trait == "last_order_at":
        return max((t for t, _ in p.orders), default=None)
    return getattr(p, trait)


def _compare(v: Any, op: str, value: Any) -> bool:
    if op == "exists":
        return v is not None
    if op == "not_exists":
        return v is None
    if v is None:
        return False
    if op == "in_last_days":
        return bool(v >= NOW - timedelta(days=value))
    if op == "before_last_days":
        return bool(v < NOW - timedelta(days=value))
    if isinstance(v, datetime):
        value = [datetime.fromisoformat(x) for x in value] if isinstance(value, list) else datetime.fromisoformat(value)
    ops: dict[str, Callable[[], bool]] = {
        "=": lambda: v == value, "!=": lambda: v != value, ">": lambda: v > value, ">=": lambda: v >= value,
        "<": lambda: v < value, "<=": lambda: v <= value, "in": lambda: v in value, "not_in": lambda: v not in value,
        "between": lambda: value[0] <= v <= value[1], "contains": lambda: value in v,
        "starts_with": lambda: v.startswith(value),
    }  # fmt: skip
    return ops[op]()


def evaluator(node: dict[str, Any], members: dict[str, set[str]]) -> Eval:
    if "all" in node:
        parts = [evaluator(n, members) for n in node["all"]]
        return lambda p: all(f(p) for f in parts)
    if "any" in node:
        parts = [evaluator(n, members) for n in node["any"]]
        return lambda p: any(f(p) for f in parts)
    if "not" in node:
        inner = evaluator(node["not"], members)
        return lambda p: not inner(p)
    if "trait" in node:
        return lambda p: _compare(_trait_value(p, node["trait"]), node.get("op", "="), node.get("value"))
    if "audience" in node:
        return lambda p: p.user in members[node["audience"]]
    if "identity" in node:
        return lambda p: p.email is not None
    low = node.get("at_least", 0 if "at_most" in node else 1)
    high = node.get("at_most", 10**9)
    within = node.get("within_days")
    if node["event"] == "Order Completed":
        return lambda p: low <= _count([t for t, _ in p.orders], within) <= high
    category = node["where"][0]["value"] if node.get("where") else None
    return lambda p: low <= _count([t for t, c in p.added if category in (None, c)], within) <= high


# -------------------------------------------------------------------------------------------- random definitions


def _leaf(rng: random.Random, audiences: list[str]) -> dict[str, Any]:
    kind = rng.choice(["count", "revenue", "city", "plan", "last_order", "added", "no_order", "identity",
                       "audience" if audiences else "city"])  # fmt: skip
    if kind == "count":
        op = rng.choice(["=", ">=", "<", "between", "!="])
        value: Any = sorted([rng.randint(0, 4), rng.randint(0, 4)]) if op == "between" else rng.randint(0, 4)
        return {"trait": "order_count", "op": op, "value": value}
    if kind == "revenue":
        return {"trait": "gross_revenue", "op": rng.choice([">", "<="]), "value": rng.randint(0, 500)}
    if kind == "city":
        op = rng.choice(["=", "!=", "in", "not_in", "exists", "not_exists", "contains", "starts_with"])
        if op in ("exists", "not_exists"):
            return {"trait": "city", "op": op}
        if op in ("in", "not_in"):
            return {"trait": "city", "op": op, "value": rng.sample(CITIES, 2)}
        if op in ("contains", "starts_with"):
            return {"trait": "city", "op": op, "value": rng.choice(["P", "r", "Ly", "o"])}
        return {"trait": "city", "op": op, "value": rng.choice(CITIES)}
    if kind == "plan":
        return {"trait": "plan", "op": rng.choice(["=", "!="]), "value": rng.choice(PLANS)}
    if kind == "last_order":
        if rng.random() < 0.5:
            return {"trait": "last_order_at", "op": rng.choice(["in_last_days", "before_last_days"]),
                    "value": rng.randint(5, 60)}  # fmt: skip
        return {"trait": "last_order_at", "op": ">=", "value": (NOW - timedelta(days=rng.randint(5, 60))).isoformat()}
    if kind == "added":
        leaf: dict[str, Any] = {"event": "Product Added", "at_least": rng.randint(1, 3)}
        if rng.random() < 0.5:
            leaf["within_days"] = rng.randint(7, 45)
        if rng.random() < 0.5:
            leaf["where"] = [{"property": "category", "op": "=", "value": rng.choice(CATEGORIES)}]
        return leaf
    if kind == "no_order":
        return {"event": "Order Completed", "at_most": rng.randint(0, 1), "within_days": rng.randint(10, 60)}
    if kind == "identity":
        return {"identity": "email"}
    return {"audience": rng.choice(audiences)}


def _tree(rng: random.Random, depth: int, audiences: list[str]) -> dict[str, Any]:
    if depth == 0 or rng.random() < 0.3:
        return _leaf(rng, audiences)
    shape = rng.choice(["all", "any", "not"])
    if shape == "not":
        return {"not": _tree(rng, depth - 1, audiences)}
    return {shape: [_tree(rng, depth - 1, audiences) for _ in range(rng.randint(2, 3))]}


# ------------------------------------------------------------------------------------------------------- tests


def _members(rt: Runtime, name: str) -> set[str]:
    """The audience's saved members, as user ids."""
    rows = rt.engine.fetch_all(
        """SELECT n.id_value FROM audience_members AS a JOIN identity_membership AS m ON m.profile_id = a.profile_id
        JOIN identity_nodes AS n ON n.node_id = m.node_id WHERE a.audience = ? AND n.id_type = 'user_id'""",
        (name,),
    )
    return {str(r[0]) for r in rows}


def _replayed(rt: Runtime) -> dict[str, set[str]]:
    """Membership rebuilt from the change log alone (entered adds, exited removes, in change_seq order)."""
    state: dict[str, set[str]] = {}
    seqs = []
    for seq, audience, profile_id, change in rt.engine.fetch_all(
        "SELECT change_seq, audience, profile_id, change FROM audience_changes ORDER BY change_seq"
    ):
        seqs.append(seq)
        members = state.setdefault(str(audience), set())
        if change == "entered":
            assert profile_id not in members
            members.add(str(profile_id))
        else:
            members.remove(str(profile_id))
    assert seqs == list(range(1, len(seqs) + 1))
    return state


def _assert_agree(rt: Runtime, world: World, saved: dict[str, dict[str, Any]]) -> None:
    expected: dict[str, set[str]] = {}
    for name, where in saved.items():
        f = evaluator(where, expected)
        expected[name] = {u for u, p in world.people.items() if f(p)}
        assert _members(rt, name) == expected[name], (name, where)
    log = _replayed(rt)
    for name in saved:
        current = {str(r[0]) for r in rt.engine.fetch_all(
            "SELECT profile_id FROM audience_members WHERE audience = ?", (name,))}  # fmt: skip
        assert log.get(name, set()) == current


def test_audiences_match_an_independent_evaluation(rt: Runtime) -> None:
    rng = random.Random(11)
    web = rt.registry.create("web", "web", None).source_id
    world = _world(rng, 60)
    send(rt, web, world.messages)
    saved: dict[str, dict[str, Any]] = {}
    branches_checked = 0
    for i in range(14):
        name = f"a{i}"
        where = _tree(rng, 3, list(saved))
        counted = rt.count_audience({"where": where})
        result = rt.put_audience({"name": name, "where": where})
        saved[name] = where
        f = evaluator(where, {n: _members(rt, n) for n in saved})
        want = {u for u, p in world.people.items() if f(p)}
        assert counted["count"] == len(want) == result["entered"], (name, where)
        # each top-level branch's count, evaluated on its own
        for branch in counted["branches"]:
            top = re.fullmatch(r"where\.(all|any)\[(\d+)\]", branch["path"])
            if top:
                sub = where[top[1]][int(top[2])]
                g = evaluator(sub, {n: _members(rt, n) for n in saved})
                assert branch["count"] == sum(1 for p in world.people.values() if g(p)), (branch, sub)
                branches_checked += 1
    assert branches_checked >= 10
    _assert_agree(rt, world, saved)

    # more activity and trait changes arrive: the real-time path keeps every audience current, reading the
    # touched profiles' identifiers and activity from what the profiles stage hands over
    real_run, handed = rt.segments.run, []

    def run(touched: list[str] | None, **kwargs: Any) -> Any:
        handed.append(kwargs.get("handed") is not None)
        return real_run(touched, **kwargs)

    rt.segments.run = run  # type: ignore[method-assign]
    world.messages.clear()
    for p in rng.sample(list(world.people.values()), 20):
        _activity(rng, world, p)
        if rng.random() < 0.5:
            world.identify(p, NOW - timedelta(hours=1), city=rng.choice(CITIES), plan=rng.choice(PLANS))
    send(rt, web, world.messages)
    assert handed == [True]
    _assert_agree(rt, world, saved)
    changed = rt.engine.fetch_one("SELECT count(*) FROM audience_changes WHERE cause = 'realtime'")
    assert changed is not None and changed[0] > 0

    # page views, which no trait or audience counts: nothing is computed or handed over, and the segments
    # stage reads the tables itself
    world.messages.clear()
    for p in rng.sample(list(world.people.values()), 15):
        world.messages.append({"type": "page", "messageId": world._mid(), "userId": p.user, "name": "Home",
                               "_at": NOW - timedelta(minutes=5)})  # fmt: skip
    send(rt, web, world.messages)
    assert handed == [True, False]
    _assert_agree(rt, world, saved)

    # trait changes: those profiles' rows are computed whole again (golden traits are columns of them) and
    # handed over, and every audience is still current
    world.messages.clear()
    for p in rng.sample(list(world.people.values()), 15):
        world.identify(p, NOW - timedelta(minutes=2), city=rng.choice(CITIES))
    send(rt, web, world.messages)
    assert handed == [True, False, True]
    _assert_agree(rt, world, saved)

    # a full evaluation finds nothing the real-time path missed
    assert rt.evaluate_audiences() == {"audiences": len(saved), "entered": 0, "exited": 0}


def test_a_merge_moves_memberships_and_a_deleted_audience_empties(rt: Runtime) -> None:
    web = rt.registry.create("web", "web", None).source_id
    send(rt, web, [
        {"type": "identify", "messageId": "i1", "userId": "u1", "traits": {"city": "Paris"}},
        {"type": "track", "messageId": "t1", "anonymousId": "anon", "event": "Product Added",
         "properties": {"category": "tools"}},
    ])  # fmt: skip
    rt.put_audience({"name": "tool_fans", "where": {"event": "Product Added", "where": [
        {"property": "category", "op": "=", "value": "tools"}]}})  # fmt: skip
    rt.put_audience({"name": "parisians", "where": {"trait": "city", "op": "=", "value": "Paris"}})
    anon_profile = rt.profile("anonymous_id:anon")["profile_id"]
    assert rt.audience_members("tool_fans") == [{"profile_id": anon_profile}]
    # the anonymous visitor logs in: the profiles merge; membership follows the survivor
    send(rt, web, [{"type": "identify", "messageId": "i2", "userId": "u1", "anonymousId": "anon"}])
    survivor = rt.profile("user_id:u1")["profile_id"]
    fans = [m["profile_id"] for m in rt.audience_members("tool_fans")]
    assert fans == [survivor]
    both = rt.count_audience({"where": {"all": [{"audience": "tool_fans"}, {"audience": "parisians"}]}})
    assert both["count"] == 1
    gone = {anon_profile, survivor} - {survivor}
    for pid in gone:
        log = rt.engine.fetch_all(
            "SELECT change FROM audience_changes WHERE profile_id = ? ORDER BY change_seq", (pid,)
        )
        assert [r[0] for r in log] == ["entered", "exited"]
    assert rt.delete_audience("tool_fans") == {"deleted": "tool_fans", "exited": 1}
    assert rt.engine.fetch_one("SELECT count(*) FROM audience_members WHERE audience = 'tool_fans'") == (0,)
    last = rt.engine.fetch_one("SELECT change, cause FROM audience_changes ORDER BY change_seq DESC LIMIT 1")
    assert last == ("exited", "deleted")


def test_identifier_conditions_follow_new_identifiers_and_merges(rt: Runtime) -> None:
    """ "Has an email" reads the identifier types the profiles stage keeps per profile: a new email, a merge
    and a profile without one (NOT of the condition) are each reflected at once, in real time."""
    web = rt.registry.create("web", "web", None).source_id
    send(rt, web, [
        {"type": "identify", "messageId": "i1", "userId": "u1"},
        {"type": "identify", "messageId": "i2", "anonymousId": "a9", "traits": {"email": "nine@example.com"}},
        {"type": "identify", "messageId": "i3", "userId": "u3"},
    ])  # fmt: skip
    rt.put_audience({"name": "reachable", "where": {"identity": "email"}})
    rt.put_audience({"name": "unreachable", "where": {"not": {"identity": "email"}}})

    def members(name: str) -> set[str]:
        return {m["profile_id"] for m in rt.audience_members(name)}

    def profile(ref: str) -> str:
        return str(rt.profile(ref)["profile_id"])

    def types(ref: str) -> str:
        row = rt.engine.fetch_one("SELECT identifier_types FROM profile_computed WHERE profile_id = ?", (profile(ref),))
        return str(row[0]) if row else ""

    assert members("reachable") == {profile("anonymous_id:a9")}
    assert members("unreachable") == {profile("user_id:u1"), profile("user_id:u3")}
    assert types("user_id:u1") == ",user_id,"
    assert types("anonymous_id:a9") == ",anonymous_id,email,"

    # u1 gives an email; u3 logs in on a9's browser: a9's profile (with its email) merges into u3's
    send(rt, web, [
        {"type": "identify", "messageId": "i4", "userId": "u1", "traits": {"email": "one@example.com"}},
        {"type": "identify", "messageId": "i5", "userId": "u3", "anonymousId": "a9"},
    ])  # fmt: skip
    assert types("user_id:u1") == ",email,user_id,"
    assert types("user_id:u3") == ",anonymous_id,email,user_id,"
    assert members("reachable") == {profile("user_id:u1"), profile("user_id:u3")}
    assert members("unreachable") == set()
    causes = rt.engine.fetch_all("SELECT DISTINCT cause FROM audience_changes WHERE change_seq > 3")
    assert {r[0] for r in causes} == {"realtime"}
    assert rt.evaluate_audiences() == {"audiences": 2, "entered": 0, "exited": 0}


def test_audiences_evaluated_together_count_each_kind_of_activity_once() -> None:
    ws = Workspace(computed={}, stored=frozenset(), identifier_types=frozenset(), audiences={})
    added = {"event": "Product Added", "within_days": 30, "where": [{"property": "category", "op": "=", "value": "t"}]}
    a = AudienceDefinition.model_validate({"name": "a", "where": {**added, "at_least": 2}})
    b = AudienceDefinition.model_validate({"name": "b", "where": {"all": [
        added, {"event": "Order Completed", "within_days": 7, "at_most": 0}]}})  # fmt: skip
    sql = compiled_together([a, b], ws, Sources(), NOW)
    # one activity pass with one count per distinct kind of row (the same Product Added filter is counted once)
    assert sql.count("WITH _ac") == 1
    assert len(re.findall(r" AS m\d+\b", sql)) == 2
    assert "coalesce(a.a0, 0) >= 2" in sql and "coalesce(a.a0, 0) >= 1" in sql and "coalesce(a.a1, 0) <= 0" in sql
    # joined to the candidates once, not semi-joined per condition
    assert sql.count("JOIN _ac") == 1 and "IN (SELECT pk" not in sql
