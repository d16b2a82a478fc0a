"""``opencdp identity explain|health`` and ``opencdp process`` (real processes), and the admin API."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.cli.test_cli import cli
from tests.helpers import ADMIN_TOKEN, ThreadedServer


def write_events(path: Path, events: list[dict[str, object]]) -> Path:
    path.write_text("\n".join(json.dumps(e) for e in events) + "\n")
    return path


EVENTS: list[dict[str, object]] = [
    {"type": "track", "event": "Product Viewed", "anonymousId": "a1", "messageId": "v1"},
    {"type": "identify", "userId": "mum", "anonymousId": "a1", "messageId": "i1",
     "traits": {"email": "mum@example.org"}},
    {"type": "identify", "userId": "dad", "anonymousId": "a1", "messageId": "i2"},
]  # fmt: skip


def test_explain_shows_each_edge_with_its_message_and_the_refused_merge(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cli(data, "sources", "create", "web", "--kind", "web")
    cli(data, "import", str(write_events(tmp_path / "e.jsonl", EVENTS)), "--source", "web", "--kind", "events")
    done = json.loads(cli(data, "process", "--json").stdout)
    assert done["identity_upto"] == done["governed_stream"] == 3 and done["profiles"] == 2
    doc = json.loads(cli(data, "identity", "explain", "email:mum@example.org", "--json").stdout)
    assert {(i["type"], i["value"]) for i in doc["identifiers"]} == {
        ("user_id", "mum"), ("anonymous_id", "a1"), ("email", "mum@example.org")}  # fmt: skip
    assert {(e["from"], e["to"], e["message_id"]) for e in doc["edges"]} == {
        ("user_id:mum", "anonymous_id:a1", "i1"), ("user_id:mum", "email:mum@example.org", "i1")}  # fmt: skip
    assert [(r["identifier"], r["kept_apart_from"], r["reason"]) for r in doc["refused"]] == [
        ("anonymous_id:a1", "user_id:dad", "user_id limit")]  # fmt: skip
    assert doc["refused"][0]["other_profile_id"] == json.loads(
        cli(data, "identity", "explain", "user_id:dad", "--json").stdout)["profile_id"]  # fmt: skip
    unknown = cli(data, "identity", "explain", "email:nobody@example.org", check=False)
    assert unknown.returncode != 0 and "no profile" in unknown.stderr + unknown.stdout
    health = json.loads(cli(data, "identity", "health", "--json").stdout)
    assert health["profiles"] == 2 and health["refused_edges"] == 1 and health["alerts"] == []
    assert health["size_distribution"] == {"1": 1, "2-5": 1}
    assert "why they are one person" in cli(data, "identity", "explain", "user_id:mum").stdout


def test_the_admin_api_explains_and_reports_health(server: ThreadedServer) -> None:
    key = server.admin.create_source("web", "web").write_key
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    r = httpx.post(server.url + "/v1/batch", json={"batch": EVENTS}, auth=(key, ""))
    assert r.status_code == 200, r.text
    explained = httpx.get(server.url + "/admin/v1/identity/profiles/user_id:mum/explain", headers=auth)
    assert explained.status_code == 200, explained.text
    assert len(explained.json()["edges"]) == 2
    missing = httpx.get(server.url + "/admin/v1/identity/profiles/user_id:nobody/explain", headers=auth)
    assert missing.status_code == 404 and missing.json()["code"] == "unknown_profile"
    health = httpx.get(server.url + "/admin/v1/identity/health", headers=auth).json()
    assert health["profiles"] == 2
    split = httpx.post(server.url + "/admin/v1/identity/profiles/user_id:mum/split", headers=auth,
                       json={"by": "email:mum@example.org"})  # fmt: skip
    assert split.status_code == 200, split.text
    assert split.json()["split_off"] != split.json()["profile_id"]
    assert httpx.get(server.url + "/admin/v1/identity/health", headers=auth).json()["profiles"] == 3
    wrong = httpx.post(server.url + "/admin/v1/identity/profiles/user_id:mum/split", headers=auth,
                       json={"by": "email:dad@example.org"})  # fmt: skip
    assert wrong.status_code == 404 and wrong.json()["code"] == "not_in_profile"
    params = {"a": "email:mum@example.org", "b": "user_id:mum"}
    undone = httpx.delete(server.url + "/admin/v1/identity/cannot-link", headers=auth, params=params)
    assert undone.status_code == 200, undone.text
    assert httpx.get(server.url + "/admin/v1/identity/health", headers=auth).json()["profiles"] == 2
    again = httpx.delete(server.url + "/admin/v1/identity/cannot-link", headers=auth, params=params)
    assert again.status_code == 404 and again.json()["code"] == "no_split"
    assert httpx.get(server.url + "/admin/v1/identity/health", auth=(key, "")).status_code == 401
