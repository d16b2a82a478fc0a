"""``opencdp audiences`` as real processes, and the admin API's audience endpoints on a real server."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import yaml

from tests.cli.test_cli import cli
from tests.conftest import make_settings
from tests.helpers import ThreadedServer, write_csv


def _setup(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    cli(data, "sources", "create", "pos", "--kind", "server")
    orders = write_csv(tmp_path / "orders.csv", [
        {"order_id": f"O{i}-{k}", "customer_id": f"C{i}", "email": f"c{i}@shop.example", "amount": str(50 * (i + 1)),
         "currency": "USD", "ordered_at": f"2026-05-0{k + 1}T10:00:00"}
        for i in range(4) for k in range(i + 1)
    ])  # fmt: skip
    cli(data, "import", str(orders), "--source", "pos", "--kind", "orders")
    return data


def test_audiences_from_the_command_line(tmp_path: Path) -> None:
    data = _setup(tmp_path)
    spec = tmp_path / "loyal.yaml"
    spec.write_text(yaml.safe_dump({"name": "loyal", "description": "three orders or more", "where": {"all": [
        {"over": "orders", "at_least": 3}, {"trait": "gross_revenue", "op": ">", "value": 100}]}}))  # fmt: skip
    counted = json.loads(cli(data, "audiences", "count", str(spec), "--json").stdout)
    # customers C2 (3 orders of 150) and C3 (4 of 200); C0 and C1 have fewer orders
    assert counted["count"] == 2
    assert [b["count"] for b in counted["branches"]] == [2, 3]  # C1 has two orders of 100
    tree = cli(data, "audiences", "count", str(spec)).stdout
    assert "loyal: 2 profiles" in tree and "gross_revenue > 100" in tree
    assert "saved (version 1): 2 entered" in cli(data, "audiences", "create", str(spec)).stdout
    members = json.loads(cli(data, "audiences", "members", "loyal", "--json").stdout)
    assert sorted(m["email"] for m in members) == ["c2@shop.example", "c3@shop.example"]
    preview = json.loads(cli(data, "audiences", "preview", str(spec), "--limit", "1", "--json").stdout)
    assert len(preview) == 1 and preview[0]["profile_id"] == min(m["profile_id"] for m in members)
    listed = json.loads(cli(data, "audiences", "list", "--json").stdout)
    assert [(a["name"], a["members"]) for a in listed] == [("loyal", 2)]
    assert "loyal" in cli(data, "audiences", "list").stdout
    assert "2 members" in cli(data, "audiences", "show", "loyal").stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "x", "where": {"trait": "order_cnt", "op": ">", "value": 1}}))
    refused = cli(data, "audiences", "create", str(bad), check=False)
    assert refused.returncode == 1 and "bad_audience" in refused.stderr and "order_count" in refused.stderr
    assert "1 audience(s) evaluated: 0 entered, 0 left" in cli(data, "audiences", "evaluate").stdout
    assert "2 members left it" in cli(data, "audiences", "delete", "loyal").stdout


def test_admin_api_audience_endpoints(tmp_path: Path) -> None:
    data = _setup(tmp_path)
    settings = make_settings(tmp_path, "duckdb").model_copy(update={"data_dir": data})
    with ThreadedServer(settings) as srv, httpx.Client(base_url=srv.url, timeout=120) as admin:
        admin.headers["Authorization"] = "Bearer test-admin-token"
        where = {"over": "orders", "at_least": 2}
        assert admin.post("/admin/v1/audiences/count", json={"where": where}).json()["count"] == 3
        saved = admin.post("/admin/v1/audiences", json={"name": "repeat", "where": where})
        assert saved.status_code == 200 and saved.json()["entered"] == 3, saved.text
        page = admin.get("/admin/v1/audiences/repeat/members", params={"limit": 2}).json()
        rest = admin.get("/admin/v1/audiences/repeat/members", params={"after": page[-1]["profile_id"]}).json()
        assert len(page) == 2 and len(rest) == 1
        assert admin.get("/admin/v1/audiences/repeat").json()["definition"] == {"name": "repeat", "where": where}
        refused = admin.post("/admin/v1/audiences", json={"name": "x", "where": {"audience": "nope"}})
        assert refused.status_code == 400 and refused.json()["code"] == "bad_audience"
        assert admin.get("/admin/v1/audiences/nope").status_code == 404
        assert admin.post("/admin/v1/audiences/evaluate", json={"names": ["repeat"]}).json()["audiences"] == 1
        assert admin.post("/admin/v1/audiences/evaluate", json={"names": ["nope"]}).status_code == 404
        assert httpx.get(f"{srv.url}/admin/v1/audiences").status_code == 401  # no token
        read = (data / "read_token").read_text().strip()
        assert httpx.get(f"{srv.url}/admin/v1/audiences", headers={"Authorization": f"Bearer {read}"}).status_code \
            == 401  # fmt: skip
        assert admin.delete("/admin/v1/audiences/repeat").json() == {"deleted": "repeat", "exited": 3}


def test_journeys_from_the_command_line(tmp_path: Path) -> None:
    data = _setup(tmp_path)
    audience = tmp_path / "big.yaml"
    audience.write_text(yaml.safe_dump({"name": "big", "where": {"trait": "gross_revenue", "op": ">", "value": 1000}}))
    cli(data, "audiences", "create", str(audience))
    hook = tmp_path / "hook.yaml"
    hook.write_text(yaml.safe_dump({"name": "crm", "kind": "webhook", "url": "http://127.0.0.1:9/hook",
                                    "secret": "0123456789abcdef", "allow_private": True}))  # fmt: skip
    cli(data, "destinations", "add", str(hook))
    spec = tmp_path / "welcome.yaml"
    spec.write_text(yaml.safe_dump({"name": "welcome_big", "description": "thank big spenders", "trigger": {
        "audience": "big"}, "steps": [{"wait": {"days": 1}}, {"send": {"destination": "crm"}}]}))  # fmt: skip
    assert "journey welcome_big saved (version 1)" in cli(data, "journeys", "create", str(spec)).stdout
    listed = json.loads(cli(data, "journeys", "list", "--json").stdout)
    assert [(j["name"], j["active"], j["sent"]) for j in listed] == [("welcome_big", 0, 0)]
    assert "thank big spenders" in cli(data, "journeys", "list").stdout
    shown = json.loads(cli(data, "journeys", "show", "welcome_big").stdout)
    assert shown["definition"]["trigger"] == {"audience": "big"}
    # customer C3 (4 orders of 200) becomes big with one more order: the journey enters them
    order = {
        "order_id": "X1",
        "customer_id": "C3",
        "email": "c3@shop.example",
        "amount": "300",
        "currency": "USD",
        "ordered_at": "2026-05-09T10:00:00",
    }
    more = write_csv(tmp_path / "more.csv", [order])
    cli(data, "import", str(more), "--source", "pos", "--kind", "orders")
    cli(data, "process")
    entries = json.loads(cli(data, "journeys", "entries", "welcome_big", "--json").stdout)
    assert [(e["step"], e["status"]) for e in entries] == [(1, "active")]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "x", "trigger": {"audience": "nope"}, "steps": [{"wait": {"hours": 1}}]}))
    refused = cli(data, "journeys", "create", str(bad), check=False)
    assert refused.returncode == 1 and "bad_journey" in refused.stderr
    assert "1 entries ended" in cli(data, "journeys", "delete", "welcome_big").stdout
