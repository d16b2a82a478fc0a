"""``opencdp profiles`` and ``opencdp traits`` as real processes, and the admin API's profile endpoints on a real
server: the 360 view (text and JSON), trait definitions from a file, export with every format, errors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import yaml

from tests.cli.test_cli import cli
from tests.helpers import ThreadedServer, write_csv


def _setup(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    cli(data, "sources", "create", "pos", "--kind", "server")
    cli(data, "sources", "create", "support", "--kind", "server")
    orders = write_csv(tmp_path / "orders.csv", [
        {"order_id": "O1", "customer_id": "C1", "email": "ada@lovelace.org", "amount": "120.00", "currency": "USD",
         "ordered_at": "2026-05-01T10:00:00", "items": '[{"category": "Tools"}]'},
        {"order_id": "O2", "customer_id": "C1", "email": "ada@lovelace.org", "amount": "80.00", "currency": "USD",
         "ordered_at": "2026-05-03T10:00:00"},
    ])  # fmt: skip
    cli(data, "import", str(orders), "--source", "pos", "--kind", "orders")
    tickets = write_csv(tmp_path / "tickets.csv", [
        {"ticket_id": "T1", "email": "ada@lovelace.org", "subject": "Broken drill",
         "text": "This is the worst purchase ever, it broke after one day. Terrible.",
         "created_at": "2026-05-04T09:00:00"},
    ])  # fmt: skip
    cli(data, "import", str(tickets), "--source", "support", "--kind", "tickets")
    return data


def test_profiles_show_traits_and_export_from_the_command_line(tmp_path: Path) -> None:
    data = _setup(tmp_path)
    shown = json.loads(cli(data, "profiles", "show", "email:ada@lovelace.org", "--json").stdout)
    assert shown["computed"]["order_count"] == 2 and shown["computed"]["gross_revenue"] == 200.0
    assert shown["computed"]["ticket_count"] == 1 and shown["computed"]["avg_ticket_sentiment"] < -0.5
    assert shown["traits"]["email"]["value"] == "ada@lovelace.org"
    assert {"type": "email", "value": "ada@lovelace.org"} in shown["identities"]
    assert [t["kind"] for t in shown["timeline"]] == ["tickets", "orders", "orders"]
    text = cli(data, "profiles", "show", shown["profile_id"]).stdout
    assert "ltv_net" in text and "200.00" in text and "ada@lovelace.org" in text and "timeline" in text
    missing = cli(data, "profiles", "show", "email:nobody@nowhere.org", check=False)
    assert missing.returncode == 1 and "unknown_profile" in missing.stderr

    spec = tmp_path / "traits.yaml"
    spec.write_text(yaml.safe_dump({"traits": [
        {"name": "big_orders", "over": "orders", "aggregate": "count",
         "where": [{"property": "amount", "op": ">", "value": 100}]},
        {"name": "big_share", "expression": "big_orders / order_count"},
    ]}))  # fmt: skip
    cli(data, "traits", "add", str(spec))
    listed = json.loads(cli(data, "traits", "list", "--json").stdout)
    assert [t["name"] for t in listed if not t["shipped"]] == ["big_orders", "big_share"]
    assert "big_orders" in cli(data, "traits", "list").stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "x", "expression": "big_orders +"}))
    refused = cli(data, "traits", "add", str(bad), check=False)
    assert refused.returncode == 1 and "bad_trait" in refused.stderr

    for fmt in ("parquet", "csv", "jsonl"):
        out = tmp_path / f"profiles.{fmt}"
        cli(data, "profiles", "export", str(out), "--format", fmt)
        if fmt == "parquet":
            rows = pq.read_table(out).to_pylist()
        elif fmt == "csv":
            rows = list(csv.DictReader(io.StringIO(out.read_text())))
        else:
            rows = [json.loads(line) for line in out.read_text().splitlines()]
        (ada,) = [r for r in rows if r["email"] == "ada@lovelace.org"]
        assert float(ada["big_share"]) == 0.5 and float(ada["ltv_net"]) == 200.0


def test_admin_api_profile_endpoints(tmp_path: Path) -> None:
    data = _setup(tmp_path)
    from tests.conftest import make_settings

    settings = make_settings(tmp_path, "duckdb").model_copy(update={"data_dir": data})
    with ThreadedServer(settings) as srv, httpx.Client(base_url=srv.url, timeout=120) as admin:
        admin.headers["Authorization"] = "Bearer test-admin-token"
        view = admin.get("/admin/v1/profiles/email:ada@lovelace.org", params={"lineage": True, "limit": 1})
        assert view.status_code == 200
        body = view.json()
        assert body["traits"]["email"]["record_key"] in ("O1", "O2", "T1") and len(body["timeline"]) == 1
        older = admin.get(f"/admin/v1/profiles/{body['profile_id']}", params={"before": body["timeline_next"]})
        assert [t["kind"] for t in older.json()["timeline"]] == ["orders", "orders"]
        assert admin.get("/admin/v1/profiles/email:nobody@x.org").status_code == 404
        added = admin.post("/admin/v1/traits", json={"name": "orders_30d", "over": "orders", "aggregate": "count",
                                                     "window_days": 30})  # fmt: skip
        assert added.status_code == 200, added.text
        refused = admin.post("/admin/v1/traits", json={"name": "a", "expression": "(SELECT 1)"})
        assert refused.status_code == 400 and refused.json()["code"] == "bad_trait"
        assert admin.delete("/admin/v1/traits/nope").status_code == 404
        backfilled = admin.post("/admin/v1/traits/backfill")
        assert backfilled.status_code == 200 and backfilled.json()["profiles"] >= 1, backfilled.text
        put = admin.put("/admin/v1/profiles-settings", json={"currency": "EUR", "rates": {"USD": 0.9}})
        assert put.status_code == 200
        again = admin.get("/admin/v1/profiles/email:ada@lovelace.org").json()
        assert again["computed"]["gross_revenue"] == 180.0  # now in euros
        assert httpx.get(f"{srv.url}/admin/v1/traits").status_code == 401  # no token
