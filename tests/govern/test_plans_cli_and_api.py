"""Tracking plans through the CLI (a real process) and the admin API, with traffic imported as events."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import yaml

from tests.cli.test_cli import cli
from tests.helpers import ADMIN_TOKEN, ThreadedServer


def write_events(path: Path, events: list[dict[str, object]]) -> Path:
    path.write_text("\n".join(json.dumps(e) for e in events) + "\n")
    return path


def test_infer_set_block_fix_and_release_from_the_cli(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cli(data, "sources", "create", "web", "--kind", "web")
    observed = [
        {"type": "track", "event": "Order Completed", "userId": "u1", "properties": {"revenue": 10, "coupon": "X"}},
        {"type": "track", "event": "Order Completed", "userId": "u2", "properties": {"revenue": 12.5}},
        {"type": "identify", "userId": "u1", "traits": {"email": "u1@example.com"}},
    ]
    cli(data, "import", str(write_events(tmp_path / "seen.jsonl", observed)), "--source", "web", "--kind", "events")

    draft = json.loads(cli(data, "plans", "infer", "--source", "web", "--json").stdout)
    assert draft["events"] == {
        "Order Completed": {
            "type": "object",
            "properties": {"coupon": {"type": "string"}, "revenue": {"type": "number"}},
            "required": ["revenue"],  # seen in every message; coupon in one of two
        }
    }
    assert draft["identify"]["properties"] == {"email": {"type": "string"}}
    draft["unplanned"] = "block"
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(draft))
    assert "version 1" in cli(data, "plans", "set", "web", str(tmp_path / "plan.yaml")).stdout

    later = [
        {"type": "track", "event": "Order Completed", "userId": "u3", "properties": {"revenue": "n/a"}},
        {"type": "track", "event": "Cart Abandoned", "userId": "u3", "properties": {}},
    ]
    cli(data, "import", str(write_events(tmp_path / "later.jsonl", later)), "--source", "web", "--kind", "events")
    counts = json.loads(cli(data, "violations", "--json").stdout)
    assert {(v["event"], v["property"], v["rule"], v["count"]) for v in counts} == {
        ("Order Completed", "revenue", "type_mismatch", 1),
        ("Cart Abandoned", None, "unplanned_event", 1),
    }
    held = json.loads(cli(data, "quarantine", "list", "--json").stdout)
    assert [(h["event"], h["reasons"]) for h in held] == [("Cart Abandoned", "unplanned_event")]

    draft["events"]["Cart Abandoned"] = {"type": "object"}
    (tmp_path / "plan.yaml").write_text(yaml.safe_dump(draft))
    assert "version 2" in cli(data, "plans", "set", "web", str(tmp_path / "plan.yaml")).stdout
    assert json.loads(cli(data, "quarantine", "release", "--json").stdout) == {"released": 1, "still_held": 0}
    assert json.loads(cli(data, "quarantine", "release", "--json").stdout) == {"released": 0, "still_held": 0}
    stream = json.loads(cli(data, "query", "SELECT event, status FROM governed ORDER BY gseq", "--json").stdout)
    assert [(r["event"], r["status"]) for r in stream][-2:] == [
        ("Order Completed", "flagged"),
        ("Cart Abandoned", "released"),
    ]
    shown = cli(data, "plans", "show", "web").stdout
    assert shown.startswith("# version 2") and "Cart Abandoned" in shown
    [web] = [q for q in json.loads(cli(data, "quality", "--json").stdout) if q["name"] == "web"]
    assert web["messages"] == 5 and web["violation_rate"] == 2 / 5 and web["blocked"] == 1
    assert "data quality" in cli(data, "quality").stdout


def test_a_plan_that_is_not_valid_is_refused_with_the_reason(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cli(data, "sources", "create", "web")
    (tmp_path / "bad.yaml").write_text("events:\n  E: {type: object, properties: {p: {type: strng}}}\n")
    result = cli(data, "plans", "set", "web", str(tmp_path / "bad.yaml"), check=False)
    assert result.returncode == 1 and "invalid_plan" in result.stderr and "not a valid JSON Schema" in result.stderr
    missing = cli(data, "plans", "show", "web", check=False)
    assert missing.returncode == 1 and "no_plan" in missing.stderr


def test_plan_routes_of_the_admin_api(server: ThreadedServer) -> None:
    server.admin.create_source("web", "web")
    auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    url = f"{server.url}/admin/v1/sources/web/plan"
    assert httpx.get(url, headers=auth).json()["code"] == "no_plan"
    bad = httpx.put(url, headers=auth, json={"events": {"E": {"type": "object"}}, "violations": "drop"})
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_plan" and "violations" in bad.json()["message"]
    assert httpx.put(url, json={"events": {}}).status_code == 401
    ok = httpx.put(url, headers=auth, json={"events": {"E": {"type": "object"}}, "unplanned": "block"})
    assert ok.json()["version"] == 1
    assert httpx.get(url, headers=auth).json()["plan"]["unplanned"] == "block"
    for path in ("/admin/v1/violations", "/admin/v1/quarantine"):
        assert httpx.get(server.url + path).status_code == 401
        assert httpx.get(server.url + path, headers=auth).json() == []
    released = httpx.post(f"{server.url}/admin/v1/quarantine/release", headers=auth).json()
    assert released == {"released": 0, "still_held": 0}
