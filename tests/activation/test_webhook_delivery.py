"""Routing into the outbox and webhook delivery on both engines, against real HTTP peers on loopback: diffs
after a first sync, HMAC signatures checked independently, retries with backoff, dead letters, replay exactly
once, Retry-After, at-least-once across a crash, and a hanging destination that does not hold up a healthy one."""

from __future__ import annotations

import hashlib
import hmac
import threading
from datetime import UTC, datetime, timedelta

import pytest

from opencdp.activation.delivery import Deliverer
from opencdp.api.runtime import Runtime
from tests.activation.peers import Answer, Received, Receiver
from tests.activation.support import change, members, outbox, people, webhook


def test_first_sync_then_diffs_signed_and_keyed(rt: Runtime) -> None:
    ids = people(rt, 4)
    members(rt, "vip", ids[:2])
    with Receiver() as peer:
        rt.activation.add(webhook("hook", peer.url, audiences=["vip"], traits=["email", "first_name"]))
        rt.load()  # routes the first sync: the two current members
        assert [r["change"] for r in outbox(rt, "hook")] == ["entered", "entered"]
        change(rt, "vip", ids[2], "entered")
        change(rt, "vip", ids[0], "exited")
        change(rt, "other", ids[3], "entered")  # not subscribed
        rt.load()
        done = rt.activation.drain()
        assert done["delivered"] == 4 and done["dead"] == 0
        rt.load()
        assert rt.activation.drain()["delivered"] == 0  # nothing routed twice
    rows = outbox(rt, "hook")
    assert {(r["profile_id"], r["change"]) for r in rows[:2]} == {(ids[0], "entered"), (ids[1], "entered")}
    assert [(r["profile_id"], r["change"]) for r in rows[2:]] == [(ids[2], "entered"), (ids[0], "exited")]
    assert {r["state"] for r in rows} == {"done"}
    assert sorted(peer.keys()) == sorted(r["key"] for r in rows)
    # each request is signed over "<t>." + body with the secret: checked here with hmac directly
    for req in peer.received:
        parts = dict(p.split("=", 1) for p in req.headers["x-opencdp-signature"].split(","))
        expected = hmac.new(b"s3cret-s3cret-s3cret", parts["t"].encode() + b"." + req.body, hashlib.sha256)
        assert hmac.compare_digest(parts["v1"], expected.hexdigest())
    bodies = {r.json()["idempotency_key"]: r.json() for r in peer.received}
    third = bodies[rows[2]["key"]]
    assert third["type"] == "audience" and third["audience"] == "vip" and third["profile_id"] == ids[2]
    assert third["traits"] == {"email": "person.2@example.com", "first_name": "P2"}
    assert {"type": "user_id", "value": "u2"} in third["identities"]


def test_retries_then_dead_letter_then_replay_exactly_once(rt: Runtime) -> None:
    ids = people(rt, 2)
    failing = True

    def script(_: Received, __: int) -> Answer:
        return (500, {}, b"boom") if failing else (200, {}, b"ok")

    with Receiver(script) as peer:
        rt.activation.add(webhook("hook", peer.url, audiences=["a"], max_attempts=3))
        change(rt, "a", ids[0], "entered")
        change(rt, "a", ids[1], "entered")
        rt.load()
        drained = rt.activation.drain(wait_seconds=5)
        assert drained["dead"] == 2 and drained["delivered"] == 0
        rows = outbox(rt, "hook")
        assert [(r["state"], r["attempts"]) for r in rows] == [("dead", 3), ("dead", 3)]
        assert "gave up after 3 attempts" in rows[0]["error"] and "500" in rows[0]["error"]
        assert len(peer.received) == 6
        attempts = rt.engine.fetch_all(
            "SELECT delivery_id, attempt, outcome FROM delivery_attempts ORDER BY delivery_id, attempt"
        )
        assert [a[1:] for a in attempts] == [(1, "transient"), (2, "transient"), (3, "transient")] * 2
        status = {s["destination"]: s for s in rt.activation.status()}["hook"]
        assert status["dead"] == 2 and status["last_errors"][0]["error"].endswith("answered 500")

        failing = False
        assert rt.activation.replay("hook")["replayed"] == 2
        assert rt.activation.replay("hook")["replayed"] == 0  # already pending again: not twice
        assert rt.activation.drain()["delivered"] == 2
        assert rt.activation.replay("hook")["replayed"] == 0  # delivered letters are no longer dead
        rt.activation.drain()
    assert len(peer.received) == 8
    assert sorted(peer.keys()[6:]) == sorted(r["key"] for r in rows)  # the same keys as before
    assert [r.json()["replay"] for r in peer.received[6:]] == [1, 1]
    assert [r["state"] for r in outbox(rt, "hook")] == ["done", "done"]


def test_permanent_errors_go_to_dead_letters_at_once_and_429_waits(rt: Runtime) -> None:
    ids = people(rt, 2)

    def script(req: Received, n: int) -> Answer:
        if req.json()["profile_id"] == ids[0]:
            return 404, {}, b"no such list"
        return (429, {"Retry-After": "120"}, b"slow down") if n < 2 else (200, {}, b"")

    with Receiver(script) as peer:
        rt.activation.add(webhook("hook", peer.url, audiences=["a"]))
        change(rt, "a", ids[0], "entered")
        change(rt, "a", ids[1], "entered")
        rt.load()
        before = datetime.now(UTC)
        rt.activation.drain()
    rows = {r["profile_id"]: r for r in outbox(rt, "hook")}
    assert rows[ids[0]]["state"] == "dead" and rows[ids[0]]["attempts"] == 1 and "404" in rows[ids[0]]["error"]
    assert rows[ids[1]]["state"] == "pending" and rows[ids[1]]["attempts"] == 1
    row = rt.engine.fetch_one("SELECT next_at FROM outbox WHERE profile_id = ?", (ids[1],))
    assert row is not None and row[0] >= before + timedelta(seconds=119)  # Retry-After honoured over the jitter


def test_a_crash_before_the_acknowledgement_is_recorded_resends_with_the_same_key(rt: Runtime) -> None:
    ids = people(rt, 1)
    with Receiver() as peer:
        rt.activation.add(webhook("hook", peer.url, audiences=["a"]))
        change(rt, "a", ids[0], "entered")
        rt.load()
        crashed = Deliverer(rt.engine, rt.activation.store)
        assert crashed.step() == 1  # sent; the peer acknowledges, but this deliverer never records it
        deadline = datetime.now(UTC) + timedelta(seconds=10)
        while not peer.received and datetime.now(UTC) < deadline:
            threading.Event().wait(0.01)
        crashed.stop()  # the outcome is never settled: the row stays pending, as after a kill -9
        assert outbox(rt, "hook")[0]["state"] == "pending"
        assert rt.activation.drain()["delivered"] == 1
    assert len(peer.received) == 2 and peer.keys()[0] == peer.keys()[1]
    assert outbox(rt, "hook")[0]["state"] == "done"


def test_a_hanging_destination_does_not_hold_up_a_healthy_one(rt: Runtime) -> None:
    ids = people(rt, 6)
    hang = threading.Event()
    hang.set()
    with Receiver() as healthy, Receiver(hang=hang) as stuck:
        rt.activation.add(webhook("stuck", stuck.url, audiences=["a"], timeout_seconds=20, concurrency=2))
        rt.activation.add(webhook("healthy", healthy.url, audiences=["a"], concurrency=2))
        for pid in ids:
            change(rt, "a", pid, "entered")
        rt.load()
        rt.activation.deliverer.start()
        try:
            deadline = datetime.now(UTC) + timedelta(seconds=30)
            while (len(healthy.received) < 6 or len(stuck.received) < 2) and datetime.now(UTC) < deadline:
                threading.Event().wait(0.02)
            # every healthy delivery went out while the stuck destination's first two requests still hang
            assert len(healthy.received) == 6
            assert len(stuck.received) == 2  # its two workers, both hanging; its other rows wait in its own queue
            assert not rt.engine.fetch_all("SELECT 1 FROM delivery_attempts WHERE destination = 'stuck'")
        finally:
            hang.clear()
            rt.activation.deliverer.stop()
    healthy_rows = outbox(rt, "healthy")
    assert all(r["attempts"] <= 1 for r in healthy_rows)


def test_replay_of_a_time_range_sends_what_happened_then_once_more(rt: Runtime) -> None:
    ids = people(rt, 2)
    with Receiver() as peer:
        rt.activation.add(webhook("hook", peer.url, audiences=["a"]))
        rt.activation.route()
        change(rt, "a", ids[0], "entered")
        rt.load()
        rt.activation.drain()
        middle = datetime.now(UTC)
        change(rt, "a", ids[1], "entered")
        rt.load()
        rt.activation.drain()
        assert len(peer.received) == 2
        later = datetime.now(UTC) + timedelta(minutes=1)
        assert rt.activation.replay("hook", dead=False, since=middle, until=later)["replayed"] == 1
        assert rt.activation.drain()["delivered"] == 1
    assert len(peer.received) == 3
    again = peer.received[2].json()
    assert again["profile_id"] == ids[1] and again["replay"] == 1
    assert peer.keys()[2] == peer.keys()[1]
    with pytest.raises(Exception, match="since < until"):
        rt.activation.replay("hook", dead=False, since=later, until=middle)


def test_a_destination_that_refuses_every_connection_is_paused_not_hammered(rt: Runtime) -> None:
    ids = people(rt, 12)
    with Receiver() as peer:
        url = peer.url  # closed on leaving: nothing listens there any more
    rt.activation.add(webhook("down", url, audiences=["a"], concurrency=2, max_attempts=50,
                              backoff_base_seconds=5, backoff_cap_seconds=5))  # fmt: skip
    rt.activation.route()
    for pid in ids:
        change(rt, "a", pid, "entered")
    rt.load()
    rt.activation.drain()
    attempts = rt.engine.fetch_all("SELECT count(*), count(DISTINCT delivery_id) FROM delivery_attempts")
    rows = outbox(rt, "down")
    # about one round of claims (2 workers x 4 queued batches) failed, then the destination was paused: the
    # other rows were not tried, none twice, and none of them is lost
    [(tried, distinct)] = attempts
    assert 8 <= tried <= 9 and tried == distinct
    assert sum(r["attempts"] == 0 for r in rows) == 12 - tried and max(r["attempts"] for r in rows) == 1
    assert {r["state"] for r in rows} == {"pending"}


def test_changing_a_destination_moves_its_queued_batches_to_the_new_configuration(rt: Runtime) -> None:
    ids = people(rt, 4)
    hang = threading.Event()
    hang.set()
    with Receiver(hang=hang) as old, Receiver() as new:
        rt.activation.add(webhook("hook", old.url, audiences=["a"], concurrency=1, timeout_seconds=20))
        rt.activation.route()
        for pid in ids:
            change(rt, "a", pid, "entered")
        rt.load()
        deliverer = rt.activation.deliverer
        assert deliverer.step() == 4  # one batch sent (it hangs), three queued behind it
        deadline = datetime.now(UTC) + timedelta(seconds=10)
        while not old.received and datetime.now(UTC) < deadline:
            threading.Event().wait(0.01)
        rt.activation.add(webhook("hook", new.url, audiences=["a"]), replace=True)
        deliverer.step()  # picks up the new version: the three queued batches are withdrawn and claimed again
        hang.clear()  # the one already sent gets its answer from the old peer
        assert rt.activation.drain(wait_seconds=5)["left"] == {}
    assert len(old.received) == 1 and len(new.received) == 3
    assert {r["state"] for r in outbox(rt, "hook")} == {"done"}
    assert sorted(old.keys() + new.keys()) == sorted(r["key"] for r in outbox(rt, "hook"))


def test_delivered_rows_past_the_retention_are_forgotten_and_nothing_else(rt: Runtime) -> None:
    """Delivered rows older than the retention go (with their attempts); dead letters, held and pending rows stay
    whatever their age, and so does the newest row (delivery ids are never given twice)."""
    ids = people(rt, 5)
    answers = {ids[0]: 200, ids[1]: 200, ids[2]: 400, ids[3]: 200}

    def script(req: Received, _: int) -> Answer:
        return answers[req.json()["profile_id"]], {}, b""

    with Receiver(script) as peer:
        rt.activation.add(webhook("hook", peer.url, audiences=["a"], max_attempts=1, batch_size=1))
        for pid in ids[:4]:
            change(rt, "a", pid, "entered")
        rt.load()
        assert rt.activation.drain()["dead"] == 1
    rt.engine.execute("UPDATE outbox SET delivered_at = delivered_at - INTERVAL 40 DAY WHERE state = 'done'")
    rt.engine.execute("UPDATE delivery_attempts SET started_at = started_at - INTERVAL 40 DAY")
    rt.engine.execute("UPDATE outbox SET state = 'held' WHERE profile_id = ?", (ids[1],))  # waits for a confirm
    before = {r["profile_id"]: r for r in outbox(rt, "hook")}
    newest = max(r["delivery_id"] for r in before.values())
    deliverer = Deliverer(rt.engine, rt.activation.store, retention=timedelta(days=30))
    deliverer.step()  # the first turn forgets what is past the retention
    after = {r["profile_id"]: r["state"] for r in outbox(rt, "hook")}
    kept = {p: r["state"] for p, r in before.items() if r["state"] != "done" or r["delivery_id"] == newest}
    assert after == kept and after[ids[1]] == "held" and after[ids[2]] == "dead"
    gone = {r["delivery_id"] for p, r in before.items() if p not in kept}
    assert gone  # at least one old delivered row went
    attempts = {a[0] for a in rt.engine.fetch_all("SELECT DISTINCT delivery_id FROM delivery_attempts")}
    assert not gone & attempts
    assert before[ids[2]]["delivery_id"] in attempts  # a dead letter keeps why it died
    deliverer.step()
    assert len(outbox(rt, "hook")) == len(kept)
    change(rt, "a", ids[4], "entered")
    rt.load()
    assert max(r["delivery_id"] for r in outbox(rt, "hook")) == newest + 1  # numbering goes on
