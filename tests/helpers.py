"""Test helpers: servers on free loopback ports, in a thread or as a separate process."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import uvicorn

from opencdp.api.server import Server
from opencdp.config import Settings
from opencdp.model.sources import Source, SourceLimits

ADMIN_TOKEN = "test-admin-token"


def write_csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    """A CSV file with a header from the first row's keys."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_healthy(url: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        time.sleep(0.05)
    raise TimeoutError(f"server at {url} did not become healthy")


class Admin:
    """A small client for the admin API."""

    def __init__(self, url: str, token: str = ADMIN_TOKEN) -> None:
        self.url = url
        self.client = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=30)

    def close(self) -> None:
        self.client.close()

    def create_source(self, name: str, kind: str = "http", limits: SourceLimits | None = None) -> Source:
        body: dict[str, Any] = {"name": name, "kind": kind}
        if limits is not None:
            body["limits"] = limits.model_dump()
        r = self.client.post("/admin/v1/sources", json=body)
        r.raise_for_status()
        return Source.model_validate(r.json())

    def query(self, sql: str) -> list[dict[str, Any]]:
        r = self.client.post("/admin/v1/query", json={"sql": sql})
        r.raise_for_status()
        rows: list[dict[str, Any]] = r.json()["rows"]
        return rows

    def rejected(self) -> list[dict[str, Any]]:
        r = self.client.get("/admin/v1/rejected", params={"limit": 10000})
        r.raise_for_status()
        rows: list[dict[str, Any]] = r.json()
        return rows


class ThreadedServer:
    """uvicorn serving OpenCDP in a background thread of the test process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.app = Server(settings, address=("127.0.0.1", self.port))
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            http="httptools",
            loop="asyncio",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.admin = Admin(self.url)

    def _run(self) -> None:
        asyncio.run(self._server.serve())

    def __enter__(self) -> ThreadedServer:
        self._thread.start()
        wait_healthy(self.url)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self.admin.close()

    @property
    def runtime(self) -> Any:
        return self.app.runtime


class ServerProcess:
    """``opencdp serve`` in its own process, so a test can ``kill -9`` it."""

    def __init__(self, data_dir: Path, **env: str) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, "OPENCDP_ADMIN_TOKEN": ADMIN_TOKEN, **env}
        self.proc: subprocess.Popen[bytes] | None = None
        self.admin = Admin(self.url)
        self.log = data_dir.parent / "server.log"

    def start(self) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "opencdp",
                    "serve",
                    "--port",
                    str(self.port),
                    "--data-dir",
                    str(self.data_dir),
                    "--log-level",
                    "warning",
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            wait_healthy(self.url)
        except TimeoutError:
            self.stop()
            raise TimeoutError(self.log.read_text()) from None
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    def stop(self) -> None:
        self.admin.close()
        self.admin = Admin(self.url)
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def events(admin: Admin, where: str = "TRUE") -> list[dict[str, Any]]:
    rows = admin.query(
        "SELECT message_id, source_id, type, event, user_id, anonymous_id, timestamp, original_timestamp, sent_at, "
        f"received_at, message FROM events WHERE {where} ORDER BY seq"
    )
    for r in rows:
        r["message"] = json.loads(r["message"])
    return rows
