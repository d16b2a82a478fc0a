"""Size limits as the SDKs enforce them client-side: what an SDK lets through, the server must keep.

Found with the real SDKs (the tests named ``*_python_sdk_*`` below); the hand-written requests pin the exact
boundaries so a regression shows without the SDKs' batching in the way.
"""

from __future__ import annotations

import base64
import gzip
import json
import random
import uuid
from typing import Any

import httpx
import pytest
from rudderstack.analytics import Client as RudderClient
from segment.analytics import Client as SegmentClient
from segment.analytics.request import DatetimeSerializer

from tests.helpers import ThreadedServer, events
from tests.sdk.common import assert_stored_exactly_once, wait_for_events

KIB = 1024
MIB = 1024 * KIB


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def filler(n: int) -> str:
    """``n`` characters that gzip barely shrinks (runs of one letter would trip the server's gzip-bomb ratio)."""
    return random.Random(n).randbytes(n // 2 + 1).hex()[:n]


def sized_item(size: int) -> dict[str, Any]:
    """A batch item whose ``json.dumps`` (what the Python SDKs measure, and send) is exactly ``size`` bytes."""
    item: dict[str, Any] = {"type": "track", "userId": "u1", "event": "Big", "messageId": str(uuid.uuid4())}
    item["timestamp"] = "2030-01-01T00:00:00.000+00:00"
    item["properties"] = {"blob": ""}
    item["properties"]["blob"] = filler(size - len(json.dumps(item)))
    assert len(json.dumps(item)) == size
    return item


def test_batch_item_of_exactly_the_limit_is_kept_one_byte_more_is_rejected(server: ThreadedServer) -> None:
    key = server.admin.create_source("backend", "server").write_key
    fits, over = sized_item(32 * KIB), sized_item(32 * KIB + 1)
    r = httpx.post(server.url + "/v1/batch", content=json.dumps({"batch": [fits, over]}), headers=basic(key))
    assert r.status_code == 200, r.text
    assert [(e["index"], e["code"]) for e in r.json()["errors"]] == [(1, "message_too_large")]
    assert [e["message_id"] for e in events(server.admin)] == [fits["messageId"]]


def test_single_call_of_exactly_the_limit_is_kept(server: ThreadedServer) -> None:
    key = server.admin.create_source("web", "web").write_key
    item = sized_item(32 * KIB)
    r = httpx.post(server.url + "/v1/t", content=json.dumps(item), headers=basic(key))
    assert r.status_code == 200, r.text
    [row] = events(server.admin)
    assert row["message"]["properties"] == item["properties"]


@pytest.mark.slow
def test_segment_python_sdk_message_at_its_size_limit_is_stored(server: ThreadedServer) -> None:
    """The SDK drops messages over 32 KiB itself; one just under must not be lost behind the SDK's back."""
    source = server.admin.create_source("backend", "server")
    errors: list[Any] = []
    client = SegmentClient(source.write_key, host=server.url, max_retries=1, on_error=lambda e, b: errors.append(e))
    try:
        _, probe = SegmentClient(source.write_key, send=False).track(user_id="u1", event="Big", properties={"b": ""})
        pad = 32 * KIB - len(json.dumps(probe, cls=DatetimeSerializer))
        _, msg = client.track(user_id="u1", event="Big", properties={"b": filler(pad)})
        assert len(json.dumps(msg, cls=DatetimeSerializer)) == 32 * KIB  # as large as the SDK lets through
        client.flush()
    finally:
        client.shutdown()
    assert errors == []
    stored = assert_stored_exactly_once(wait_for_events(server.admin, source.source_id, 1), [msg["messageId"]])
    assert stored[msg["messageId"]]["message"]["properties"] == msg["properties"]
    assert server.admin.rejected() == []


def test_rudderstack_batch_of_4_mib_plus_one_message_is_accepted(server: ThreadedServer) -> None:
    """rudder-sdk-python closes a batch only once it has reached 4 MiB, so it may carry 4 MiB + one message."""
    key = server.admin.create_source("rudder", "rudderstack").write_key
    items = [sized_item(MIB) for _ in range(3)] + [sized_item(4 * MIB - 1000)]
    body = gzip.compress(json.dumps({"batch": items, "sentAt": "2030-01-01T00:00:01+00:00"}).encode())
    r = httpx.post(
        server.url + "/v1/batch",
        content=body,
        headers={**basic(key), "Content-Encoding": "gzip", "Content-Type": "application/json"},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    assert r.json() == {"success": True}
    assert [e["message_id"] for e in events(server.admin)] == [i["messageId"] for i in items]


@pytest.mark.slow
def test_rudder_python_sdk_megabyte_messages_are_all_stored(server: ThreadedServer) -> None:
    source = server.admin.create_source("rudder", "rudderstack")
    errors: list[str] = []
    client = RudderClient(source.write_key, host=server.url, max_retries=1, on_error=lambda e, b: errors.append(str(e)))
    try:
        sent = [
            client.track(user_id="u1", event="Upload", properties={"i": i, "blob": filler(MIB)})[1] for i in range(5)
        ]
        client.flush()
    finally:
        client.shutdown()
    assert errors == []
    ids = [m["messageId"] for m in sent]
    stored = assert_stored_exactly_once(wait_for_events(server.admin, source.source_id, len(ids)), ids)
    assert [stored[i]["message"]["properties"]["i"] for i in ids] == list(range(5))
    assert all(len(stored[i]["message"]["properties"]["blob"]) == MIB for i in ids)
