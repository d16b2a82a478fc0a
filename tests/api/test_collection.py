"""The collection API over real HTTP (uvicorn on loopback), checked against what the store then holds."""

from __future__ import annotations

import base64
import gzip
import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from opencdp.model.sources import SourceLimits
from tests.helpers import ThreadedServer, events


def basic(key: str, colon: bool = True) -> dict[str, str]:
    token = base64.b64encode(f"{key}{':' if colon else ''}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def track(**extra: Any) -> dict[str, Any]:
    return {"userId": "u1", "event": "Order Completed", "messageId": str(uuid.uuid4()), **extra}


@pytest.fixture
def web(server: ThreadedServer) -> str:
    return server.admin.create_source("web", "web").write_key


@pytest.mark.parametrize(
    ("path", "type_"),
    [
        ("/v1/identify", "identify"),
        ("/v1/track", "track"),
        ("/v1/page", "page"),
        ("/v1/screen", "screen"),
        ("/v1/group", "group"),
        ("/v1/alias", "alias"),
        ("/v1/i", "identify"),
        ("/v1/t", "track"),
        ("/v1/p", "page"),
        ("/v1/s", "screen"),
        ("/v1/g", "group"),
        ("/v1/a", "alias"),
    ],
)
def test_every_single_route_stores_its_type(server: ThreadedServer, web: str, path: str, type_: str) -> None:
    mid = str(uuid.uuid4())
    body = {
        "userId": "u1",
        "previousId": "anon-1",
        "groupId": "g1",
        "event": "E",
        "messageId": mid,
        "properties": {"a": 1},
        "type": "ignored-the-path-wins",
    }
    r = httpx.post(server.url + path, json=body, headers=basic(web))
    assert r.status_code == 200, r.text
    assert r.json() == {"success": True}
    [row] = events(server.admin, f"message_id = '{mid}'")
    assert row["type"] == type_
    assert row["message"]["properties"] == {"a": 1}


@pytest.mark.parametrize("path", ["/v1/batch", "/v1/import", "/v1/b", "//v1/batch/"])
def test_batch_routes_keep_every_item(server: ThreadedServer, web: str, path: str) -> None:
    items = [{"type": "track", **track(properties={"i": i})} for i in range(5)]
    r = httpx.post(server.url + path, json={"batch": items, "writeKey": web})
    assert r.status_code == 200, r.text
    stored = events(server.admin)
    assert [e["message_id"] for e in stored] == [i["messageId"] for i in items]
    assert [e["message"]["properties"]["i"] for e in stored] == list(range(5))


def test_auth_by_basic_with_and_without_colon_body_and_query(server: ThreadedServer, web: str) -> None:
    assert httpx.post(server.url + "/v1/track", json=track(), headers=basic(web)).status_code == 200
    assert httpx.post(server.url + "/v1/track", json=track(), headers=basic(web, colon=False)).status_code == 200
    assert httpx.post(server.url + "/v1/track", json=track(writeKey=web)).status_code == 200
    assert (
        httpx.post(
            server.url + f"/beacon/v1/batch?writeKey={web}", json={"batch": [{"type": "track", **track()}]}
        ).status_code
        == 200
    )
    assert len(events(server.admin)) == 4


def test_unknown_missing_and_conflicting_keys_are_401(server: ThreadedServer, web: str) -> None:
    other = server.admin.create_source("other").write_key
    for kwargs in (
        {"json": track()},
        {"json": track(writeKey="wk_nope")},
        {"json": track(), "headers": basic("wk_nope")},
        {"json": track(writeKey=other), "headers": basic(web)},
    ):
        r = httpx.post(server.url + "/v1/track", **kwargs)  # type: ignore[arg-type]
        assert r.status_code == 401, kwargs
        assert r.json()["code"] in ("invalid_write_key", "conflicting_write_keys")
    assert events(server.admin) == []


def test_disabled_and_rotated_keys_stop_working(server: ThreadedServer, web: str) -> None:
    admin = server.admin.client
    rotated = admin.post("/admin/v1/sources/web/rotate-key").json()["write_key"]
    assert rotated != web
    assert httpx.post(server.url + "/v1/track", json=track(), headers=basic(web)).status_code == 401
    assert httpx.post(server.url + "/v1/track", json=track(), headers=basic(rotated)).status_code == 200
    admin.post("/admin/v1/sources/web/disable").raise_for_status()
    assert httpx.post(server.url + "/v1/track", json=track(), headers=basic(rotated)).status_code == 401
    assert httpx.get(server.url + f"/v1/projects/{rotated}/settings").status_code == 404


def test_gzip_body(server: ThreadedServer, web: str) -> None:
    body = gzip.compress(json.dumps({"batch": [{"type": "track", **track()}]}).encode())
    r = httpx.post(
        server.url + "/v1/batch",
        content=body,
        headers={**basic(web), "Content-Encoding": "gzip", "Content-Type": "application/json"},
    )
    assert r.status_code == 200, r.text
    assert len(events(server.admin)) == 1


def test_duplicate_message_ids_are_acknowledged_and_stored_once(server: ThreadedServer, web: str) -> None:
    msg = track()
    for _ in range(3):
        assert httpx.post(server.url + "/v1/track", json=msg, headers=basic(web)).status_code == 200
    r = httpx.post(server.url + "/v1/batch", json={"batch": [{"type": "track", **msg}] * 4}, headers=basic(web))
    assert r.status_code == 200
    assert [e["message_id"] for e in events(server.admin)] == [msg["messageId"]]


def test_same_message_id_in_two_sources_is_two_events(server: ThreadedServer, web: str) -> None:
    other = server.admin.create_source("app", "mobile").write_key
    msg = track()
    httpx.post(server.url + "/v1/track", json=msg, headers=basic(web)).raise_for_status()
    httpx.post(server.url + "/v1/track", json=msg, headers=basic(other)).raise_for_status()
    assert len(events(server.admin)) == 2


def test_missing_message_id_gets_one(server: ThreadedServer, web: str) -> None:
    httpx.post(server.url + "/v1/track", json={"userId": "u", "event": "E"}, headers=basic(web)).raise_for_status()
    [row] = events(server.admin)
    assert uuid.UUID(row["message_id"])
    assert row["message"]["messageId"] == row["message_id"]


def test_server_fields_and_clock_skew(server: ThreadedServer, web: str) -> None:
    # The device clock runs exactly one hour fast: timestamp and sentAt are both one hour ahead.
    body = track(timestamp="2030-01-01T13:00:00.000Z", sentAt="2030-01-01T13:00:05.000Z", custom={"kept": True})
    body["context"] = {"library": {"name": "x"}}
    httpx.post(
        server.url + "/v1/track", json=body, headers={**basic(web), "Origin": "https://shop.example"}
    ).raise_for_status()
    [row] = events(server.admin)
    m = row["message"]
    received = datetime.fromisoformat(row["received_at"])
    assert abs(received - datetime.now(UTC)) < timedelta(minutes=1)
    assert datetime.fromisoformat(row["timestamp"]) == received - timedelta(seconds=5)
    assert datetime.fromisoformat(row["original_timestamp"]) == datetime(2030, 1, 1, 13, tzinfo=UTC)
    assert datetime.fromisoformat(row["sent_at"]) == datetime(2030, 1, 1, 13, 0, 5, tzinfo=UTC)
    assert (m["timestamp"], m["sentAt"]) == ("2030-01-01T13:00:00.000Z", "2030-01-01T13:00:05.000Z")  # as sent
    assert m["custom"] == {"kept": True}
    assert m["context"]["ip"] == "127.0.0.1"  # a web source gets the caller's address
    assert m["context"]["library"] == {"name": "x"}
    assert "writeKey" not in m


def test_settings_document_for_analytics_js(server: ThreadedServer, web: str) -> None:
    r = httpx.get(server.url + f"/v1/projects/{web}/settings")
    assert r.status_code == 200
    doc = r.json()
    assert list(doc["integrations"]) == ["Segment.io"]
    assert doc["integrations"]["Segment.io"]["apiKey"] == web
    assert doc["integrations"]["Segment.io"]["apiHost"] == f"127.0.0.1:{server.port}/v1"
    assert r.headers["cache-control"] == "public, max-age=300"
    assert httpx.get(server.url + "/v1/projects/wk_unknown/settings").status_code == 404


def test_cors_preflight_and_simple_requests(server: ThreadedServer, web: str) -> None:
    r = httpx.options(
        server.url + "/v1/t",
        headers={
            "Origin": "https://shop.example",
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type",
        },
    )
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == "https://shop.example"
    assert r.headers["access-control-allow-credentials"] == "true"
    assert "Authorization" in r.headers["access-control-allow-headers"]
    assert int(r.headers["access-control-max-age"]) >= 600
    r = httpx.post(
        server.url + "/v1/t",
        content=json.dumps(track(writeKey=web)),
        headers={"Content-Type": "text/plain", "Origin": "https://shop.example"},
    )
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "https://shop.example"


def test_health_and_metrics(server: ThreadedServer, web: str) -> None:
    assert httpx.get(server.url + "/health").json() == {"status": "ok"}
    assert httpx.post(server.url + "/v1/m", json={"series": []}).status_code == 200


def test_postgres_engine_serves_the_same_api(pg_server: ThreadedServer) -> None:
    key = pg_server.admin.create_source("web").write_key
    msg = track()
    for _ in range(2):
        assert httpx.post(pg_server.url + "/v1/track", json=msg, headers=basic(key)).status_code == 200
    rows = events(pg_server.admin)
    assert [r["message_id"] for r in rows] == [msg["messageId"]]
    assert rows[0]["message"]["event"] == "Order Completed"


def test_rudderstack_source_accepts_larger_messages(server: ThreadedServer) -> None:
    big = track(properties={"blob": "x" * 100_000})
    small_key = server.admin.create_source("segment-like").write_key
    rudder_key = server.admin.create_source("rudder", "rudderstack").write_key
    assert httpx.post(server.url + "/v1/track", json=big, headers=basic(small_key)).status_code == 400
    assert httpx.post(server.url + "/v1/track", json=big, headers=basic(rudder_key)).status_code == 200
    limits = SourceLimits.for_kind("rudderstack")
    assert limits.max_message_bytes == 4 * 1024 * 1024
