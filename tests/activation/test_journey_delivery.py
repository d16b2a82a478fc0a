"""The abandoned cart end to end, on both engines: events in, the journey waits an hour, and the email with the
cart's products reaches a real SMTP server (aiosmtpd on loopback); nothing is sent to a customer who
completed the order in time, and a journey message to a destination that does not exist is dead-lettered
with the reason, not lost."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from opencdp.api.runtime import Runtime
from opencdp.errors import Rejected
from tests.activation.peers import Mailbox
from tests.activation.support import outbox
from tests.activation.test_plugins import FAST
from tests.identity.test_stitching import journal as send

NOW = datetime.now(UTC).replace(microsecond=0)
BODY = "{% for e in message.events %}- {{ e.properties.name }} ({{ e.properties.sku }})\n{% endfor %}"


def _added(mid: str, user: str, sku: str, name: str, at: datetime) -> dict[str, Any]:
    return {"type": "track", "messageId": mid, "userId": user, "event": "Product Added",
            "properties": {"sku": sku, "name": name, "price": 10}, "_at": at}  # fmt: skip


def _ordered(mid: str, user: str, at: datetime) -> dict[str, Any]:
    return {"type": "track", "messageId": mid, "userId": user, "event": "Order Completed",
            "properties": {"order_id": mid, "total": 10}, "_at": at}  # fmt: skip


def test_abandoned_cart_email_reaches_the_smtp_server(rt: Runtime, smtp: tuple[Mailbox, int]) -> None:
    mailbox, port = smtp
    web = rt.registry.create("web", "web", None).source_id
    send(rt, web, [_added("w1", "u0", "0", "Warm-up", NOW - timedelta(days=2)), _ordered("w2", "u0", NOW)])
    rt.activation.add({"name": "shop_email", "kind": "email", "smtp_host": "127.0.0.1", "smtp_port": port,
                       "from_address": "shop@example.org", "subject": "You left something, {{ traits.first_name }}",
                       "body": BODY, **FAST})  # fmt: skip
    rt.put_journey({"name": "abandoned_cart", "trigger": {"event": "Product Added"}, "exit_on": ["Order Completed"],
                    "steps": [{"wait": {"hours": 1}},
                              {"send": {"destination": "shop_email", "template": "abandoned_cart"}}]})  # fmt: skip
    t0 = NOW - timedelta(minutes=30)
    send(rt, web, [
        {"type": "identify", "messageId": "ia", "userId": "ann", "traits": {"email": "ann@shop.example",
                                                                             "firstName": "Ann"}},
        {"type": "identify", "messageId": "ib", "userId": "bob", "traits": {"email": "bob@shop.example",
                                                                             "firstName": "Bob"}},
        _added("a1", "ann", "D-18", "Cordless drill", t0),
        _added("a2", "ann", "B-10", "Drill bits {{7*7}}", t0 + timedelta(minutes=2)),
        _added("b1", "bob", "S-01", "Sander", t0),
        _ordered("b2", "bob", t0 + timedelta(minutes=20)),  # bob bought within the hour
    ])  # fmt: skip
    rt.activation.drain(wait_seconds=1)
    assert mailbox.messages == []  # the hour is not over

    rt.journeys.clock = lambda: t0 + timedelta(minutes=61)
    rt.load()
    assert rt.activation.drain(wait_seconds=10)["delivered"] == 1
    (mail,) = mailbox.messages
    assert mail["To"] == "ann@shop.example" and mail["Subject"] == "You left something, Ann"
    assert mail.get_payload().splitlines() == ["- Cordless drill (D-18)", "- Drill bits {{7*7}} (B-10)"]
    rt.load()  # nothing more: the entry is done and the message delivered once
    rt.activation.drain(wait_seconds=1)
    assert len(mailbox.messages) == 1


def test_a_message_to_a_missing_destination_is_dead_lettered_not_lost(rt: Runtime) -> None:
    web = rt.registry.create("web", "web", None).source_id
    send(rt, web, [_added("w1", "u0", "0", "Warm-up", NOW)])
    with pytest.raises(Rejected, match="no destination named 'nowhere'"):
        rt.put_journey({"name": "j", "trigger": {"event": "Product Added"},
                        "steps": [{"send": {"destination": "nowhere"}}]})  # fmt: skip
    rt.activation.add(
        {"name": "hook", "kind": "webhook", "url": "http://127.0.0.1:9/hook", "secret": "0123456789abcdef0123", **FAST}
    )
    rt.put_journey({"name": "j", "trigger": {"event": "Product Added"}, "steps": [{"send": {"destination": "hook"}}]})
    rt.engine.execute("DELETE FROM destinations WHERE name = 'hook'")  # removed behind the journey's back
    send(rt, web, [_added("x1", "u1", "1", "Saw", NOW)])
    rt.load()
    (row,) = outbox(rt, "hook")
    assert row["state"] == "dead" and "no destination is named hook" in row["error"]
