"""segment-analytics-python and rudder-sdk-python, unchanged except for the host, against a real server."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import pytest
import rudderstack.analytics as rudder_analytics
import rudderstack.analytics.request as rudder_request
import segment.analytics.request as segment_request
from segment.analytics import Client as SegmentClient

from tests.helpers import ThreadedServer
from tests.sdk.common import (
    RequestsSpy,
    assert_payload_intact,
    assert_stored_as_sent,
    assert_stored_exactly_once,
    calls,
    python_call,
    wait_for_events,
)

pytestmark = pytest.mark.slow

N = 300
UPLOAD_SIZE = 50  # several batches per run (the SDK's default is 100)


def basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


@pytest.fixture
def segment_spy(monkeypatch: pytest.MonkeyPatch) -> RequestsSpy:
    spy = RequestsSpy(segment_request._session)
    monkeypatch.setattr(segment_request._session, "post", spy)
    return spy


@pytest.fixture
def rudder_spy(monkeypatch: pytest.MonkeyPatch) -> RequestsSpy:
    spy = RequestsSpy(rudder_request._session)
    monkeypatch.setattr(rudder_request._session, "post", spy)
    return spy


@pytest.mark.parametrize("gzip", [False, True], ids=["plain", "gzip"])
def test_segment_python_sdk_batches_are_stored_exactly_once(
    server: ThreadedServer, segment_spy: RequestsSpy, gzip: bool
) -> None:
    source = server.admin.create_source("backend", "server")
    errors: list[Any] = []
    client = SegmentClient(
        source.write_key,
        host=server.url,
        gzip=gzip,
        upload_size=UPLOAD_SIZE,
        max_retries=2,
        on_error=lambda exc, batch: errors.append((exc, len(batch))),
    )
    made = calls(N, js_safe=False)
    try:
        returned = [python_call(client, c) for c in made]
        client.flush()
    finally:
        client.shutdown()
    assert errors == []
    assert all(ok for ok, _ in returned)
    message_ids = [msg["messageId"] for _, msg in returned]

    wire = segment_spy.calls
    assert len(wire) >= N // UPLOAD_SIZE, "the SDK should have sent several batches"
    for c in wire:
        assert c.url == server.url + "/v1/batch"
        assert c.status == 200
        assert c.gzipped is gzip
        assert c.body["writeKey"] == source.write_key  # 2.4.0 sends the key in the body and as Basic
        assert c.headers["Authorization"] == basic(source.write_key)
    assert [item["messageId"] for item, _ in segment_spy.items()] == message_ids

    stored = assert_stored_exactly_once(wait_for_events(server.admin, source.source_id, N), message_ids)
    for (item, sent_at), call in zip(segment_spy.items(), made, strict=True):
        assert_stored_as_sent(stored[item["messageId"]], item, envelope_sent_at=sent_at)
        assert_payload_intact(stored[item["messageId"]]["message"], call)
    assert server.admin.rejected() == []


@pytest.fixture
def rudder_module(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The module-level API as RudderStack documents it; its global client is reset around the test."""
    monkeypatch.setattr(rudder_analytics, "default_client", None)
    yield rudder_analytics
    if rudder_analytics.default_client is not None:
        rudder_analytics.shutdown()


def test_rudder_python_sdk_batches_are_stored_exactly_once(
    server: ThreadedServer, rudder_spy: RequestsSpy, rudder_module: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = server.admin.create_source("rudder-backend", "rudderstack")
    errors: list[Any] = []
    monkeypatch.setattr(rudder_module, "write_key", source.write_key)
    monkeypatch.setattr(rudder_module, "dataPlaneUrl", server.url)
    monkeypatch.setattr(rudder_module, "max_retries", 2)
    monkeypatch.setattr(rudder_module, "on_error", lambda exc, batch: errors.append((exc, len(batch))))
    made = calls(N, js_safe=False)
    # One message far over Segment's 32 KiB: RudderStack allows 4 MiB, and so does a "rudderstack" source.
    made.append({**made[0], "properties": {"blob": "x" * 200_000, "nested": made[0]["properties"]}})
    for c in made:
        python_call(rudder_module, c)  # the module-level calls return nothing: ids are read off the wire
    rudder_module.flush()
    assert errors == []

    wire = rudder_spy.calls
    assert len(wire) >= len(made) // 100, "the SDK should have sent several batches"
    for c in wire:
        assert c.url == server.url + "/v1/batch"
        assert c.status == 200
        assert c.gzipped, "rudder-sdk-python gzips by default"
        assert c.headers["Authorization"] == basic(source.write_key)
        assert "writeKey" not in c.body
    items = rudder_spy.items()
    message_ids = [item["messageId"] for item, _ in items]
    assert len(message_ids) == len(made)

    stored = assert_stored_exactly_once(wait_for_events(server.admin, source.source_id, len(made)), message_ids)
    for (item, sent_at), call in zip(items, made, strict=True):
        row = stored[item["messageId"]]
        message = row["message"]
        assert_stored_as_sent(row, item, envelope_sent_at=sent_at)
        assert message["channel"] == "server"
        if call["type"] == "identify":  # rudder-sdk-python moves identify traits into context.traits
            assert message["context"]["traits"] == call["traits"]
            assert "traits" not in message
            call = {k: v for k, v in call.items() if k != "traits"}
        assert_payload_intact(message, call)
    assert server.admin.rejected() == []
