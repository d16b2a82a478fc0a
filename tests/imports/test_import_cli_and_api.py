"""``opencdp import`` as a real process, with and without a server, and the admin upload endpoint."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import httpx

from tests.cli.test_cli import cli
from tests.helpers import ADMIN_TOKEN, ServerProcess, ThreadedServer

CSV = (
    "Customer ID,Email,Phone,Country,Tier\nC1,a@example.com,030 1234567,DE,gold\n,b@example.com,,DE,\nC3,c@example,,,\n"
)


def test_import_without_a_server_writes_a_summary_and_the_rejects(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (tmp_path / "crm.csv").write_text(CSV)
    cli(data, "sources", "create", "crm", "--kind", "server")
    out = cli(
        data, "import", str(tmp_path / "crm.csv"), "--source", "crm", "--kind", "customers", "--json",
        "--rejects-file", str(data / "rejects.csv"),
    )  # fmt: skip
    summary = json.loads(out.stdout)
    assert (summary["accepted"], summary["rejected"], summary["duplicates"]) == (2, 1, 0)
    assert summary["mapping_inferred"] and summary["mapping"]["fields"]["customer_id"] == {"column": "Customer ID"}
    assert summary["flagged"] == {"email": 1}
    rejects = list(csv.DictReader(io.StringIO((data / "rejects.csv").read_text())))
    assert [(r["row_number"], r["column_name"]) for r in rejects] == [("2", "customer_id")]
    again = json.loads(cli(data, "import", str(tmp_path), "--source", "crm", "--kind", "customers", "--json").stdout)
    assert (again["accepted"], again["duplicates"]) == (0, 2)  # a directory: its files; the same rows: nothing new
    table = cli(data, "import", str(tmp_path / "crm.csv"), "--source", "crm", "--kind", "customers").stdout
    assert "mapping (inferred" in table and "Customer ID" in table


def test_fatal_errors_exit_non_zero_with_the_reason(tmp_path: Path) -> None:
    data = tmp_path / "data"
    cli(data, "sources", "create", "crm")
    missing = cli(data, "import", str(tmp_path / "nope*.csv"), "--source", "crm", "--kind", "customers", check=False)
    assert missing.returncode == 1 and "file_not_found" in missing.stderr
    (tmp_path / "m.yaml").write_text("fields: {customer_id: {column: Kundennummer}}\n")
    (tmp_path / "c.csv").write_text(CSV)
    bad = cli(
        data, "import", str(tmp_path / "c.csv"), "--source", "crm", "--kind", "customers",
        "--mapping", str(tmp_path / "m.yaml"), check=False,
    )  # fmt: skip
    assert bad.returncode == 1 and "mapping_column_missing" in bad.stderr and "Kundennummer" in bad.stderr


def test_import_through_a_running_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (tmp_path / "crm.csv").write_text(CSV)
    with ServerProcess(data, OPENCDP_ADMIN_TOKEN=""):  # the CLI finds the generated token in the data directory
        cli(data, "sources", "create", "crm", "--kind", "server")
        summary = json.loads(
            cli(data, "import", str(tmp_path / "crm.csv"), "--source", "crm", "--kind", "customers", "--json").stdout
        )
        assert (summary["accepted"], summary["rejected"]) == (2, 1)
        rows = json.loads(cli(data, "query", "SELECT record_key FROM records ORDER BY 1", "--json").stdout)
        assert [r["record_key"] for r in rows] == ["C1", "C3"]


def test_upload_endpoint_needs_the_admin_token(server: ThreadedServer, tmp_path: Path) -> None:
    source = server.admin.create_source("crm", "server")
    files = {"files": ("crm.csv", CSV.encode())}
    params = {"source": "crm", "kind": "customers"}
    assert httpx.post(f"{server.url}/admin/v1/imports", params=params, files=files).status_code == 401
    as_write_key = httpx.post(f"{server.url}/admin/v1/imports", params=params, files=files, auth=(source.write_key, ""))
    assert as_write_key.status_code == 401
    ok = httpx.post(
        f"{server.url}/admin/v1/imports",
        params=params,
        files=[("files", ("crm.csv", CSV.encode())), ("mapping", ("m.yaml", b"default_region: DE\n"))],
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=60,
    )
    assert ok.status_code == 200, ok.text
    assert (ok.json()["accepted"], ok.json()["rejected"]) == (2, 1)
    bad = httpx.post(
        f"{server.url}/admin/v1/imports",
        params={"source": "crm", "kind": "customers"},
        files=[("files", ("../../etc/evil.csv", b""))],
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
    )
    assert bad.status_code == 400 and bad.json()["code"] == "empty_file"
    assert "evil.csv" in bad.json()["message"] and ".." not in bad.json()["message"]
