"""The ``opencdp`` command, run as a real process, with and without a server holding the DuckDB file."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import httpx

from tests.api.test_collection import basic, track
from tests.helpers import ServerProcess


def cli(data_dir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OPENCDP_DATA_DIR": str(data_dir), "COLUMNS": "200"}
    env.pop("OPENCDP_ADMIN_TOKEN", None)
    result = subprocess.run(
        [sys.executable, "-m", "opencdp", *args], env=env, capture_output=True, text=True, timeout=120
    )
    if check:
        assert result.returncode == 0, result.stderr + result.stdout
    return result


def test_sources_and_query_without_a_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    created = json.loads(cli(data, "sources", "create", "web", "--kind", "web", "--json").stdout)
    assert created["name"] == "web" and created["write_key"].startswith("wk_")
    assert json.loads(cli(data, "sources", "list", "--json").stdout)[0]["source_id"] == created["source_id"]
    rotated = json.loads(cli(data, "sources", "rotate-key", "web", "--json").stdout)
    assert rotated["write_key"] != created["write_key"]
    assert json.loads(cli(data, "sources", "disable", "web", "--json").stdout)["enabled"] is False
    dup = cli(data, "sources", "create", "web", check=False)
    assert dup.returncode == 1 and "source_exists" in dup.stderr
    rows = json.loads(cli(data, "query", "SELECT count(*) AS n FROM events", "--json").stdout)
    assert rows == [{"n": 0}]
    refused = cli(data, "query", "DROP TABLE raw_events", check=False)
    assert refused.returncode == 1 and "read_only" in refused.stderr


def test_cli_goes_through_a_running_server_and_reads_the_file_after(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with ServerProcess(data, OPENCDP_ADMIN_TOKEN="") as server:
        # No admin token in the environment: the CLI finds the generated one in the data directory.
        key = json.loads(cli(data, "sources", "create", "web", "--json").stdout)["write_key"]
        for i in range(3):
            httpx.post(server.url + "/v1/track", json=track(properties={"i": i}), headers=basic(key)).raise_for_status()
        rows = json.loads(cli(data, "query", "SELECT event, properties FROM events ORDER BY seq", "--json").stdout)
        assert [json.loads(r["properties"])["i"] for r in rows] == [0, 1, 2]
        out = cli(data, "query", "SELECT type, count(*) AS n FROM events GROUP BY type", "--csv").stdout
        assert list(csv.DictReader(io.StringIO(out))) == [{"type": "track", "n": "3"}]
        table = cli(data, "query", "SELECT type FROM events LIMIT 1").stdout
        assert "track" in table and "1 row(s)" in table
        assert httpx.post(server.url + "/v1/track", json={"userId": "u"}, headers=basic(key)).status_code == 400
        [refused] = json.loads(cli(data, "rejected", "--source", "web", "--json").stdout)
        assert refused["code"] == "missing_event" and json.loads(refused["payload"]) == {"userId": "u"}
        assert json.loads(cli(data, "rejected", "--source", "nope", "--json", check=False).stdout or "[]") == []
    # Server stopped: any DuckDB client reads the documented view straight from the file.
    con = duckdb.connect(str(data / "opencdp.duckdb"), read_only=True)
    assert con.execute("SELECT count(*), count(DISTINCT message_id) FROM events").fetchone() == (3, 3)
    con.close()
    assert [r["code"] for r in json.loads(cli(data, "rejected", "--json").stdout)] == ["missing_event"]


def test_tail_prints_messages_live(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with ServerProcess(data, OPENCDP_ADMIN_TOKEN="") as server:
        key = json.loads(cli(data, "sources", "create", "web", "--json").stdout)["write_key"]
        env = {**os.environ, "OPENCDP_DATA_DIR": str(data)}
        env.pop("OPENCDP_ADMIN_TOKEN", None)
        proc = subprocess.Popen(
            [sys.executable, "-m", "opencdp", "tail", "--json"], env=env, stdout=subprocess.PIPE, text=True
        )
        stop = threading.Event()

        def send_until_seen() -> None:  # the tail may subscribe after the first posts: keep sending
            while not stop.wait(0.2):
                httpx.post(server.url + "/v1/track", json=track(event="Tailed"), headers=basic(key)).raise_for_status()

        sender = threading.Thread(target=send_until_seen, daemon=True)
        watchdog = threading.Timer(30, proc.kill)  # bounds the blocking readline below
        sender.start()
        watchdog.start()
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line, "tail printed nothing within 30 s"
            assert json.loads(line)["message"]["event"] == "Tailed"
        finally:
            stop.set()
            watchdog.cancel()
            sender.join(timeout=10)
            proc.terminate()
            proc.communicate(timeout=10)


def test_help_for_every_command(tmp_path: Path) -> None:
    for args in (
        ["--help"],
        ["serve", "--help"],
        ["demo", "--help"],
        ["sources", "--help"],
        ["query", "--help"],
        ["tail", "--help"],
        ["sources", "create", "--help"],
    ):
        assert "Usage" in cli(tmp_path, *args).stdout


def test_demo_sends_traffic_that_lands_in_events(tmp_path: Path) -> None:
    from tests.helpers import free_port, wait_healthy

    data = tmp_path / "data"
    port = free_port()
    env = {**os.environ, "OPENCDP_DATA_DIR": str(data)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "opencdp", "demo", "--port", str(port), "--events", "40", "--rate", "400"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        wait_healthy(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 30
        n = 0
        while time.monotonic() < deadline and n < 40:
            n = json.loads(cli(data, "query", "SELECT count(*) AS n FROM events", "--json").stdout)[0]["n"]
            time.sleep(0.2)
        assert n >= 40
        kinds = json.loads(cli(data, "query", "SELECT DISTINCT type FROM events", "--json").stdout)
        assert {"page", "track"} <= {k["type"] for k in kinds}
    finally:
        proc.terminate()
        out = proc.communicate(timeout=30)[0]
    assert "write key" in out and "curl" in out


def test_demo_imports_exports_blocks_an_unplanned_event_and_releases_it_after_the_fix(tmp_path: Path) -> None:
    from tests.helpers import free_port, wait_healthy

    data = tmp_path / "data"
    port = free_port()
    env = {**os.environ, "OPENCDP_DATA_DIR": str(data), "COLUMNS": "200"}  # table rows on one line each
    proc = subprocess.Popen(
        [sys.executable, "-m", "opencdp", "demo", "--port", str(port), "--rate", "200"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    printed: list[str] = []  # the console, read as the demo goes: the test waits for the story's last line
    assert proc.stdout is not None
    reader = threading.Thread(target=lambda: printed.extend(iter(proc.stdout.readline, "")), daemon=True)
    reader.start()
    try:
        wait_healthy(f"http://127.0.0.1:{port}")
        deadline = time.monotonic() + 90
        released = 0
        while time.monotonic() < deadline and not released:
            rows = cli(data, "query", "SELECT count(*) AS n FROM governed WHERE status = 'released'", "--json").stdout
            released = json.loads(rows)[0]["n"]
            time.sleep(0.5)
        assert released > 0
        kinds = json.loads(cli(data, "query", "SELECT kind, count(*) AS n FROM records GROUP BY kind", "--json").stdout)
        assert {k["kind"] for k in kinds} == {"customers", "orders", "returns", "tickets"}
        rejects = json.loads(cli(data, "query", "SELECT count(*) AS n FROM rejects", "--json").stdout)
        assert rejects[0]["n"] == 1

        def count(sql: str) -> int:
            return int(json.loads(cli(data, "query", sql, "--json").stdout)[0]["n"])

        renamed = "SELECT count(*) AS n FROM governed AS g JOIN raw_events AS r ON r.seq = g.seq "
        renamed += "WHERE r.event = 'Product Add' AND g.event = 'Product Added'"
        deadline = time.monotonic() + 30
        while count(renamed) == 0 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert count(renamed) > 0  # the transformation's fix
        # the PII policy: card numbers never reached the raw log; IP addresses are masked downstream
        assert count("SELECT count(*) AS n FROM raw_events WHERE CAST(message AS VARCHAR) LIKE '%1111 1111%'") == 0
        assert count("SELECT count(*) AS n FROM records WHERE CAST(attributes AS VARCHAR) LIKE '%Card%'") == 0
        assert count("SELECT count(*) AS n FROM pii_fields WHERE class = 'ip_address' AND action = 'mask'") > 0
        masked = "SELECT count(*) AS n FROM governed WHERE json_extract_string(message, '$.context.ip') = '127.0.0.1'"
        assert count(masked) == 0
        deadline = time.monotonic() + 180  # the activation story comes last
        while "opencdp journeys entries abandoned_cart" not in "".join(printed) and time.monotonic() < deadline:
            time.sleep(0.5)
        story = " ".join("".join(printed).split())  # the console wraps long lines
        assert "opencdp profiles show" in story
        # the audience reached the webhook (every request signed) and a CSV file, a row per member synced
        synced = re.search(r"to a webhook \((\d+) entries, (\d+) of (\d+) requests signed and verified\)", story)
        assert synced, story
        entries = int(synced[1])
        assert entries > 0 and int(synced[2]) == int(synced[3]) >= entries
        assert entries <= count("SELECT count(*) AS n FROM audience_members WHERE audience = 'repeat_buyers'")
        written = sorted((data / "demo-exports" / "audiences").glob("*.csv"))
        assert sum(len(f.read_text().splitlines()) - 1 for f in written) >= entries
        assert "the webhook got the cart (Cordless drill, Drill bit set); Ben ordered in time: nothing sent" in story
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        reader.join(timeout=30)
        proc.stdout.close()
    out = "".join(printed)
    assert "imported crm-customers.csv" in out and "quarantine" in out and "released" in out
    flat = " ".join(out.split())  # the console wraps long lines
    assert "PII dropped: Card Number" in flat and "renamed to 'Product Added'" in flat
    assert "became known as prf_" in flat and "user_id:demo-dad" in flat and "user_id limit" in flat
    # matching: the shop account with no identifier in common joined its CRM row, then was split off for good
    assert "joined CRM customer C0001" in flat and "with probability 0.9" in flat and "separated into prf_" in flat
    _assert_profile_story(flat, data / "demo-exports")


def _assert_profile_story(flat: str, exports: Path) -> None:
    """The demo's profile 360: the figures it printed for the customer it names are what the exports it wrote
    add up to, computed here from the files alone."""
    named = re.search(r"opencdp profiles show email:(\S+)", flat)
    assert named, flat
    email = named.group(1)

    def rows(name: str) -> list[dict[str, str]]:
        with (exports / name).open(newline="") as f:
            return list(csv.DictReader(f))

    customer = next(r["Customer ID"] for r in rows("crm-customers.csv") if r["E-Mail"].lower() == email)
    orders = {r["Order Number"]: float(r["Total"]) for r in rows("pos-orders.csv") if r["Customer ID"] == customer}
    returned = [float(r["Amount"]) for r in rows("finance-returns.csv") if r["Order Number"] in orders]
    gross, refunds = sum(orders.values()), sum(returned)
    assert len(returned) > len(orders) / 2  # the customer returned most of what they bought
    assert f"gross revenue {gross:,.2f} EUR, refunds {refunds:,.2f} EUR" in flat
    assert f"LTV net of returns {gross - refunds:,.2f} EUR; return rate {refunds / gross:.1%}" in flat
    assert re.search(r"1 support ticket: sentiment -0\.\d\d \(negative\)", flat)
    assert "demo-crm " + customer in flat  # golden traits name their source and record
    assert "ranked by gross revenue" in flat and "net of returns" in flat
