"""A PII class whose policy is ``drop`` never reaches the journal or the raw log (a real server on loopback)."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx

from tests.api.test_collection import basic, track
from tests.helpers import ThreadedServer, events

CARD = "4111111111111111"


def journal_bytes(server: ThreadedServer) -> bytes:
    root = Path(server.settings.journal_dir)
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def test_dropped_classes_are_gone_before_the_journal(server: ThreadedServer) -> None:
    admin = server.admin.client
    web = server.admin.create_source("web", "web").write_key
    other = server.admin.create_source("shop", "server").write_key
    r = admin.put("/admin/v1/pii/policy", json={"sources": {"web": {"payment_card": "drop", "ip_address": "drop"}}})
    assert r.status_code == 200, r.text
    single = track(properties={"card_number": "4111 1111 1111 1111", "note": "4111-1111-1111-1111", "plan": "pro"},
                   context={"traits": {"cc": CARD, "email": "ada@example.org"}})  # fmt: skip
    assert httpx.post(server.url + "/v1/track", json=single, headers=basic(web)).status_code == 200
    batch = {"batch": [{**track(properties={"pan": CARD}), "type": "track"}], "context": {"traits": {"x": CARD}}}
    r = httpx.post(server.url + "/v1/batch", json=batch, headers=basic(web))
    assert r.status_code == 200, r.text
    broken = b'{"userId": "u", "event": "E", "properties": {"card": "' + CARD.encode() + b'"'
    r = httpx.post(server.url + "/v1/track", content=broken, headers={**basic(web), "content-type": "application/json"})
    assert r.status_code == 400
    kept = track(properties={"card_number": CARD})
    assert httpx.post(server.url + "/v1/track", json=kept, headers=basic(other)).status_code == 200

    rows = {e["message_id"]: e for e in events(server.admin)}
    assert rows[single["messageId"]]["message"]["properties"] == {"plan": "pro"}
    assert rows[single["messageId"]]["message"]["context"] == {"traits": {"email": "ada@example.org"}}  # no ip added
    assert rows[batch["batch"][0]["messageId"]]["message"]["properties"] == {}
    assert rows[kept["messageId"]]["message"]["properties"] == {"card_number": CARD}  # shop does not drop
    [rejected] = server.admin.rejected()
    assert CARD not in str(rejected) and "withheld" in str(rejected)
    # the shop's card is the only one anywhere in the journal
    assert journal_bytes(server).count(CARD.encode()) == 1
    assert b"4111 1111" not in journal_bytes(server) and b"4111-1111" not in journal_bytes(server)
    fields = admin.get("/admin/v1/pii/fields", params={"source": "shop"}).json()
    assert [(f["field"], f["class"], f["action"]) for f in fields] == [("card_number", "payment_card", "mask")]


def test_the_policy_round_trips_and_bad_ones_get_a_clear_error(server: ThreadedServer) -> None:
    admin = server.admin.client
    server.admin.create_source("web", "web")
    r = admin.put("/admin/v1/pii/policy", json={"default": {"email": "shred"}})
    assert r.status_code == 400 and r.json()["code"] == "invalid_pii_policy", r.text
    assert admin.put("/admin/v1/pii/policy", json={"default": {"email": "hash"}}).json() == {"version": 1}
    got = admin.get("/admin/v1/pii/policy").json()
    assert got["version"] == 1 and got["default"] == {"email": "hash"}
    key = str(uuid.uuid4())
    assert admin.get("/admin/v1/pii/fields", headers={"Authorization": f"Bearer {key}"}).status_code == 401
