"""The admin API: guarded by the admin token, never by a write key."""

from __future__ import annotations

import httpx
import pytest

from tests.api.test_collection import basic, track
from tests.helpers import ADMIN_TOKEN, ThreadedServer

ADMIN_ROUTES = [
    ("GET", "/admin/v1/sources"),
    ("POST", "/admin/v1/sources"),
    ("GET", "/admin/v1/sources/web"),
    ("POST", "/admin/v1/sources/web/disable"),
    ("POST", "/admin/v1/sources/web/enable"),
    ("POST", "/admin/v1/sources/web/rotate-key"),
    ("PUT", "/admin/v1/sources/web/limits"),
    ("POST", "/admin/v1/query"),
    ("GET", "/admin/v1/rejected"),
    ("GET", "/admin/v1/tail"),
    ("GET", "/admin/v1/status"),
]


@pytest.mark.parametrize(("method", "path"), ADMIN_ROUTES)
def test_a_write_key_reaches_no_admin_route(server: ThreadedServer, method: str, path: str) -> None:
    key = server.admin.create_source("web").write_key
    for headers in (
        {},
        basic(key),
        {"Authorization": f"Bearer {key}"},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Basic {ADMIN_TOKEN}"},
    ):
        r = httpx.request(method, server.url + path, headers=headers, json={"name": "x", "sql": "SELECT 1"})
        assert r.status_code == 401, (path, headers)
        assert r.json()["code"] == "unauthorized"
    # and nothing changed
    [source] = server.admin.client.get("/admin/v1/sources").json()
    assert source["write_key"] == key and source["enabled"] is True


def test_source_lifecycle(server: ThreadedServer) -> None:
    client = server.admin.client
    created = client.post("/admin/v1/sources", json={"name": "app", "kind": "mobile"})
    assert created.status_code == 201
    source = created.json()
    assert source["write_key"].startswith("wk_") and source["enabled"] is True
    assert source["limits"]["max_message_bytes"] == 32 * 1024
    assert client.post("/admin/v1/sources", json={"name": "app"}).status_code == 409
    assert client.post("/admin/v1/sources", json={"name": "  "}).json()["code"] == "invalid_source_name"
    assert client.post("/admin/v1/sources", json={"name": "x", "kind": "fax"}).status_code == 422
    assert client.get("/admin/v1/sources/nope").status_code == 404
    limits = {**source["limits"], "max_batch_items": 10}
    assert client.put("/admin/v1/sources/app/limits", json=limits).json()["limits"]["max_batch_items"] == 10
    assert client.put("/admin/v1/sources/app/limits", json={**limits, "burst": -1}).status_code == 422
    assert client.post("/admin/v1/sources/app/disable").json()["enabled"] is False
    assert client.post("/admin/v1/sources/app/enable").json()["enabled"] is True
    assert [s["name"] for s in client.get("/admin/v1/sources").json()] == ["app"]


def test_query_endpoint_is_read_only(server: ThreadedServer) -> None:
    key = server.admin.create_source("web").write_key
    httpx.post(server.url + "/v1/track", json=track(), headers=basic(key)).raise_for_status()
    client = server.admin.client
    r = client.post("/admin/v1/query", json={"sql": "SELECT count(*) AS n FROM events"})
    assert r.json() == {"columns": ["n"], "rows": [{"n": 1}]}
    r = client.post("/admin/v1/query", json={"sql": "DELETE FROM raw_events"})
    assert r.status_code == 400 and r.json()["code"] == "read_only"
    r = client.post("/admin/v1/query", json={"sql": "SELEC nonsense"})
    assert r.status_code == 400
    r = client.post("/admin/v1/query", json={"sql": "SELECT * FROM no_such_table"})
    assert r.status_code == 400 and r.json()["code"] == "query_failed"
    assert "no_such_table" in r.json()["message"]
    assert client.post("/admin/v1/query", json={"sql": "SELECT count(*) AS n FROM events"}).json()["rows"] == [{"n": 1}]


def test_tail_streams_acknowledged_messages(server: ThreadedServer) -> None:
    web = server.admin.create_source("web").write_key
    other = server.admin.create_source("other").write_key
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    with httpx.stream("GET", server.url + "/admin/v1/tail", params={"source": "web"}, headers=headers, timeout=10) as r:
        lines = r.iter_lines()
        assert '"started"' in next(lines)
        httpx.post(server.url + "/v1/track", json=track(event="Other"), headers=basic(other)).raise_for_status()
        httpx.post(server.url + "/v1/track", json=track(event="Mine"), headers=basic(web)).raise_for_status()
        httpx.post(server.url + "/v1/track", json={"userId": "u"}, headers=basic(web))
        import json

        first = json.loads(next(lines))
        second = json.loads(next(lines))
    assert first["kind"] == "accepted" and first["message"]["event"] == "Mine"
    assert second["kind"] == "rejected" and second["message"]["code"] == "missing_event"


def test_openapi_docs_are_served(server: ThreadedServer) -> None:
    spec = httpx.get(server.url + "/openapi.json").json()
    assert "/admin/v1/sources" in spec["paths"]
    assert httpx.get(server.url + "/docs").status_code == 200
