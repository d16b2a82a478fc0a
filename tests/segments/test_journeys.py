"""Journeys on both engines: the abandoned cart (a wait, exit on order, the cart's products in the message, a
frequency cap, state that survives a restart), an audience trigger with a branch and a trait, and refusals."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from opencdp.api.runtime import Runtime
from opencdp.config import Settings
from opencdp.errors import Rejected
from tests.identity.test_stitching import journal as send

NOW = datetime.now(UTC).replace(microsecond=0)
CART = {
    "name": "abandoned_cart",
    "trigger": {"event": "Product Added"},
    "exit_on": ["Order Completed"],
    "cap": {"entries": 1, "days": 7},
    "steps": [
        {"wait": {"hours": 1}},
        {"send": {"destination": "shop_email", "template": "abandoned_cart"}},
        {"set_trait": {"name": "cart_reminded", "value": True}},
    ],
}


@pytest.fixture
def rt(settings: Settings) -> Iterator[Runtime]:
    runtime = Runtime(settings)
    yield runtime
    runtime.close()


def _added(mid: str, user: str, sku: str, at: datetime) -> dict[str, Any]:
    return {"type": "track", "messageId": mid, "userId": user, "event": "Product Added",
            "properties": {"sku": sku, "name": f"Drill {sku}", "price": 99.5}, "_at": at}  # fmt: skip


def _destinations(rt: Runtime, *names: str) -> None:
    """Webhook destinations the journeys may name (nothing is delivered here: the tests read journey_sends)."""
    for name in names:
        rt.activation.add({"name": name, "kind": "webhook", "url": "http://127.0.0.1:9/hook",
                           "secret": "0123456789abcdef", "allow_private": True})  # fmt: skip


def _at(rt: Runtime, when: datetime) -> None:
    """Run the processor as if it were ``when``."""
    rt.journeys.clock = lambda: when
    rt.load()


def _sends(rt: Runtime) -> list[dict[str, Any]]:
    rows = rt.engine.fetch_all("SELECT destination, payload FROM journey_sends ORDER BY send_seq")
    return [{"destination": d, **json.loads(p)} for d, p in rows]


def test_abandoned_cart(settings: Settings) -> None:
    rt = Runtime(settings)
    web = rt.registry.create("web", "web", None).source_id
    send(rt, web, [_added("warm-up", "u0", "s0", NOW - timedelta(days=3)),
                   {"type": "track", "messageId": "warm-up-2", "userId": "u0", "event": "Order Completed",
                    "properties": {"order_id": "O0", "total": 5}, "_at": NOW - timedelta(days=3)}])  # fmt: skip
    _destinations(rt, "shop_email")
    assert rt.put_journey(CART) == {"name": "abandoned_cart", "version": 1}
    t0 = NOW - timedelta(minutes=10)
    send(rt, web, [
        {"type": "identify", "messageId": "i-a", "userId": "ann", "traits": {"email": "ann@shop.example"}},
        _added("a1", "ann", "111", t0),
        _added("a2", "ann", "222", t0 + timedelta(minutes=5)),
        _added("b1", "bob", "333", t0),
        {"type": "track", "messageId": "b2", "userId": "bob", "event": "Order Completed",
         "properties": {"order_id": "B1", "total": 99.5}, "_at": t0 + timedelta(minutes=3)},
        _added("c1", "cid", "444", t0),
    ])  # fmt: skip
    states = {r["profile_id"]: r["status"] for r in rt.journey_states("abandoned_cart")}
    profile = {u: rt.profile(f"user_id:{u}")["profile_id"] for u in ("ann", "bob", "cid")}
    assert states == {profile["ann"]: "active", profile["bob"]: "exited", profile["cid"]: "active"}
    assert _sends(rt) == []  # the hour is not over

    rt.close()  # a restart: the entries wait in the engine
    rt = Runtime(settings)
    _at(rt, t0 + timedelta(minutes=59))
    assert _sends(rt) == []
    _at(rt, t0 + timedelta(minutes=61))
    sent = _sends(rt)
    assert sorted(s["profile_id"] for s in sent) == sorted([profile["ann"], profile["cid"]])
    (ann,) = [s for s in sent if s["profile_id"] == profile["ann"]]
    assert ann["destination"] == "shop_email" and ann["template"] == "abandoned_cart"
    assert [e["properties"]["sku"] for e in ann["events"]] == ["111", "222"]  # the whole cart
    assert ann["traits"]["email"] == "ann@shop.example"
    assert {r["status"] for r in rt.journey_states("abandoned_cart")} == {"done", "exited"}
    rt.load()  # the trait the journey set is part of the golden record after the next profiles cycle
    assert rt.profile("user_id:ann")["custom_traits"]["cart_reminded"] == "true"
    assert "cart_reminded" not in rt.profile("user_id:bob")["custom_traits"]

    # the cap: one entry per 7 days, so another cart the next day does not enter ann again, but a new person does
    day = t0 + timedelta(days=1)
    send(rt, web, [_added("a3", "ann", "555", day), _added("d1", "dan", "666", day)])
    _at(rt, t0 + timedelta(days=1, hours=2))
    assert len(_sends(rt)) == 3 and _sends(rt)[-1]["profile_id"] == rt.profile("user_id:dan")["profile_id"]
    summary = rt.journey_list()
    assert summary[0]["done"] == 3 and summary[0]["exited"] == 1 and summary[0]["sent"] == 3
    assert rt.delete_journey("abandoned_cart") == {"deleted": "abandoned_cart", "ended": 0}
    rt.close()


def test_audience_trigger_with_a_branch(rt: Runtime) -> None:
    web = rt.registry.create("web", "web", None).source_id
    send(rt, web, [{"type": "identify", "messageId": "i0", "userId": "u0", "traits": {"city": "Lyon", "plan": "free"}}])
    rt.put_audience({"name": "parisians", "where": {"trait": "city", "op": "=", "value": "Paris"}})
    _destinations(rt, "vip_hook", "crm")
    rt.put_journey({"name": "welcome", "trigger": {"audience": "parisians"}, "steps": [
        {"if": {"trait": "plan", "op": "=", "value": "gold"},
         "then": [{"send": {"destination": "vip_hook"}}],
         "else": [{"set_trait": {"name": "welcome", "value": "basic"}}]},
        {"send": {"destination": "crm"}},
    ]})  # fmt: skip
    send(rt, web, [
        {"type": "identify", "messageId": "i1", "userId": "u1", "traits": {"city": "Paris", "plan": "gold"}},
        {"type": "identify", "messageId": "i2", "userId": "u2", "traits": {"city": "Paris", "plan": "free"}},
    ])  # fmt: skip
    rt.load()
    u1, u2 = (rt.profile(f"user_id:{u}")["profile_id"] for u in ("u1", "u2"))
    assert sorted((s["destination"], s["profile_id"]) for s in _sends(rt)) == sorted(
        [("vip_hook", u1), ("crm", u1), ("crm", u2)]
    )
    assert rt.profile("user_id:u2")["custom_traits"]["welcome"] == "basic"
    assert "welcome" not in rt.profile("user_id:u1")["custom_traits"]
    assert {r["status"] for r in rt.journey_states("welcome")} == {"done"}


BAD: list[tuple[dict[str, Any], str]] = [
    ({**CART, "trigger": {"audience": "nope"}}, "no audience 'nope'"),
    ({**CART, "trigger": {"event": "Product Addd"}}, "no event named 'Product Addd'"),
    ({**CART, "exit_on": ["Order Done"]}, "no event named 'Order Done'"),
    ({**CART, "trigger": {}}, "an event or an audience"),
    ({**CART, "steps": []}, "at least one step"),
    ({**CART, "steps": [{"jump": 1}]}, "a step is wait, send, set_trait or if"),
    ({**CART, "steps": [{"wait": {"hours": 0}}]}, "a wait is more than nothing"),
    ({**CART, "steps": [{"if": {"trait": "ltvnet", "op": ">", "value": 1}, "then": []}]}, "did you mean 'ltv_net'"),
    ({**CART, "name": "Cart!"}, "not a journey name"),
    ({**CART, "cap": {"entries": 0, "days": 1}}, "frequency cap"),
]


@pytest.mark.parametrize(("doc", "message"), BAD, ids=[m for _, m in BAD])
def test_a_bad_journey_is_refused(rt: Runtime, doc: dict[str, Any], message: str) -> None:
    web = rt.registry.create("web", "web", None).source_id
    send(rt, web, [_added("a1", "ann", "1", NOW), {"type": "track", "messageId": "o", "userId": "ann",
                   "event": "Order Completed", "properties": {"order_id": "O", "total": 1}}])  # fmt: skip
    _destinations(rt, "shop_email")
    with pytest.raises(Rejected) as caught:
        rt.put_journey(doc)
    assert caught.value.code == "bad_journey" and message in caught.value.message, caught.value.message
    assert rt.journey_list() == []


def test_an_anonymous_cart_follows_the_visitor_into_their_account(rt: Runtime) -> None:
    """The usual abandoned cart: products added before logging in; the login merges the anonymous profile
    into the known one, and the message goes to the known profile (with its email) once."""
    web = rt.registry.create("web", "web", None).source_id
    send(rt, web, [_added("w", "u0", "0", NOW - timedelta(days=1)),
                   {"type": "track", "messageId": "w2", "userId": "u0", "event": "Order Completed",
                    "properties": {"order_id": "O0", "total": 5}, "_at": NOW - timedelta(days=1)}])  # fmt: skip
    _destinations(rt, "shop_email")
    rt.put_journey(CART)
    t0 = NOW - timedelta(minutes=30)
    send(rt, web, [
        {"type": "identify", "messageId": "i1", "userId": "kim", "traits": {"email": "kim@shop.example"},
         "_at": t0 - timedelta(days=3)},
        {"type": "track", "messageId": "a1", "anonymousId": "visitor-7", "event": "Product Added",
         "properties": {"sku": "777", "name": "Ladder"}, "_at": t0},
    ])  # fmt: skip
    anonymous = rt.profile("anonymous_id:visitor-7")["profile_id"]
    assert [(r["profile_id"], r["status"]) for r in rt.journey_states("abandoned_cart")] == [(anonymous, "active")]
    send(rt, web, [{"type": "identify", "messageId": "i2", "userId": "kim", "anonymousId": "visitor-7",
                    "_at": t0 + timedelta(minutes=5)}])  # fmt: skip
    kim = rt.profile("user_id:kim")["profile_id"]
    assert rt.profile("anonymous_id:visitor-7")["profile_id"] == kim != anonymous
    _at(rt, t0 + timedelta(minutes=61))
    (message,) = _sends(rt)
    assert message["profile_id"] == kim and message["traits"]["email"] == "kim@shop.example"
    assert [e["properties"]["sku"] for e in message["events"]] == ["777"]
