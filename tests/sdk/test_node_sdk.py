"""@segment/analytics-node (from npm, pinned in js/package-lock.json), unchanged except for the host."""

from __future__ import annotations

import base64
import json
import subprocess
from typing import Any

import pytest

from tests.helpers import ServerProcess
from tests.sdk.common import (
    JS_DIR,
    assert_payload_intact,
    assert_stored_as_sent,
    assert_stored_exactly_once,
    calls,
    require_node_modules,
    wait_for_events,
)

N = 240
FLUSH_AT = 25


def send_with_node(host: str, write_key: str, made: list[dict[str, Any]]) -> dict[str, Any]:
    require_node_modules()
    payload = json.dumps({"host": host, "writeKey": write_key, "flushAt": FLUSH_AT, "calls": made})
    proc = subprocess.run(
        ["node", "send_node.mjs"], cwd=JS_DIR, input=payload, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


@pytest.mark.slow
def test_analytics_node_batches_are_stored_exactly_once(server_process: ServerProcess) -> None:
    server_process.start()
    source = server_process.admin.create_source("node-backend", "server")
    made = calls(N)
    result = send_with_node(server_process.url, source.write_key, made)
    assert result["errors"] == []
    assert [s["error"] for s in result["sent"]] == [None] * N
    assert [s["type"] for s in result["sent"]] == [c["type"] for c in made]
    message_ids = [s["messageId"] for s in result["sent"]]
    assert all(m.startswith("node-next-") for m in message_ids)

    requests = result["requests"]
    assert len(requests) >= N // FLUSH_AT, "the SDK should have sent several batches"
    auth = "Basic " + base64.b64encode(f"{source.write_key}:".encode()).decode()
    for r in requests:
        assert r["url"] == server_process.url + "/v1/batch"
        assert r["headers"]["Authorization"] == auth
        assert r["body"]["writeKey"] == source.write_key
    wire = {item["messageId"]: (item, r["body"]["sentAt"]) for r in requests for item in r["body"]["batch"]}
    assert sorted(wire) == sorted(message_ids)

    rows = wait_for_events(server_process.admin, source.source_id, N)
    stored = assert_stored_exactly_once(rows, message_ids)
    for message_id, call in zip(message_ids, made, strict=True):
        item, sent_at = wire[message_id]
        assert_stored_as_sent(stored[message_id], item, envelope_sent_at=sent_at)
        added = {"category": call["category"]} if call["type"] == "page" else None  # the SDK copies it in
        assert_payload_intact(stored[message_id]["message"], call, added)
        assert stored[message_id]["message"]["context"]["library"]["name"] == "@segment/analytics-node"
    assert server_process.admin.rejected() == []
