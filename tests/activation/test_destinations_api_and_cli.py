"""Destinations through the admin API (admin token only) and the ``opencdp destinations`` command, with real
events sent to a real server and forwarded to a webhook as they arrive; the broad-sync threshold holds a sync
until confirmed."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import yaml

from opencdp.api.runtime import Runtime
from opencdp.config import Settings
from tests.activation.peers import Receiver
from tests.activation.support import members, outbox, people, webhook
from tests.api.test_collection import basic, track
from tests.cli.test_cli import cli
from tests.helpers import ServerProcess, ThreadedServer


def test_events_are_forwarded_as_they_arrive_through_the_admin_api(server: ThreadedServer) -> None:
    key = server.admin.create_source("web").write_key
    with Receiver() as peer:
        doc = webhook("orders", peer.url, events=["Order Completed"], traits=["email"])
        assert httpx.post(server.url + "/admin/v1/destinations", json=doc).status_code == 401  # admin token only
        assert httpx.post(server.url + "/admin/v1/destinations", json=doc,
                          headers=basic(key)).status_code == 401  # fmt: skip
        added = server.admin.client.post("/admin/v1/destinations", json=doc)
        assert added.status_code == 201 and added.json()["version"] == 1
        refused = server.admin.client.post("/admin/v1/destinations", json={**doc, "name": "x", "allow_private": False})
        assert refused.status_code == 422 and refused.json()["code"] == "private_address"
        for i, event in enumerate(["Order Completed", "Product Viewed", "Order Completed"]):
            body = track(event=event, userId="u1", properties={"order": i})
            httpx.post(server.url + "/v1/track", json=body, headers=basic(key)).raise_for_status()
        deadline = time.monotonic() + 30
        while len(peer.received) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        got = sorted((r.json() for r in peer.received), key=lambda d: d["message"]["properties"]["order"])
        assert [d["message"]["properties"]["order"] for d in got] == [0, 2]
        assert {d["event"] for d in got} == {"Order Completed"} and {d["type"] for d in got} == {"event"}
        assert got[0]["profile_id"] and {"type": "user_id", "value": "u1"} in got[0]["identities"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            status = server.admin.client.get("/admin/v1/destinations/status").json()
            if status[0]["done"] == 2:
                break
            time.sleep(0.05)
        assert status[0]["destination"] == "orders" and status[0]["done"] == 2 and status[0]["pending"] == 0
        test = server.admin.client.post("/admin/v1/destinations/orders/test").json()
        assert test == {"destination": "orders", "outcome": "delivered", "error": None}
        assert peer.received[-1].json()["type"] == "test"
        listed = server.admin.client.get("/admin/v1/destinations").json()
        assert listed[0]["secret"] == "**********" and "s3cret" not in json.dumps(listed)
        assert server.admin.client.post("/admin/v1/destinations/nope/replay").status_code == 404


def test_a_broad_sync_is_held_until_confirmed(settings: Settings) -> None:
    rt = Runtime(settings)
    try:
        ids = people(rt, 5)
        members(rt, "everyone", ids)
        with Receiver() as peer:
            rt.activation.add(webhook("ads", peer.url, audiences=["everyone"], confirm_above=3))
            routed = rt.activation.route()
            assert routed.held == {"ads/everyone": 5}
            assert rt.activation.drain()["delivered"] == 0 and not peer.received
            assert {r["state"] for r in outbox(rt, "ads")} == {"held"}
            assert rt.activation.status()[0]["held"] == 5
            assert rt.activation.confirm("ads")["confirmed"] == 5
            assert rt.activation.drain()["delivered"] == 5
        assert len(peer.received) == 5
    finally:
        rt.close()


def test_the_destinations_command_with_and_without_a_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Receiver() as peer:
        doc = tmp_path / "hook.yaml"
        doc.write_text(yaml.safe_dump(webhook("hook", peer.url, events=["Signed Up"])))
        added = json.loads(cli(data, "destinations", "add", str(doc), "--json").stdout)
        assert added == {"name": "hook", "kind": "webhook", "version": 1}
        bad = tmp_path / "bad.yaml"
        bad.write_text(yaml.safe_dump({**webhook("bad", "http://10.0.0.1/x"), "allow_private": False}))
        refused = cli(data, "destinations", "add", str(bad), check=False)
        assert refused.returncode == 1 and "private_address" in refused.stderr
        assert json.loads(cli(data, "destinations", "list", "--json").stdout)[0]["name"] == "hook"
        assert "delivered" in cli(data, "destinations", "test", "hook").stdout
        with ServerProcess(data, OPENCDP_ADMIN_TOKEN="") as server:
            key = json.loads(cli(data, "sources", "create", "web", "--json").stdout)["write_key"]
            httpx.post(server.url + "/v1/track", json=track(event="Signed Up", userId="z"),
                       headers=basic(key)).raise_for_status()  # fmt: skip
            drained = json.loads(cli(data, "destinations", "drain", "--json").stdout)
            status = json.loads(cli(data, "destinations", "status", "--json").stdout)
            assert status[0]["done"] + drained["delivered"] >= 1
            deadline = time.monotonic() + 30
            while len(peer.received) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert "destination" in cli(data, "destinations", "status").stdout
        assert [r.json()["type"] for r in peer.received] == ["test", "event"]
        assert json.loads(cli(data, "destinations", "status", "--json").stdout)[0]["done"] == 1
        assert json.loads(cli(data, "destinations", "replay", "hook", "--json").stdout)["replayed"] == 0
