"""``kill -9`` of a real ``opencdp serve`` process mid-stream: nothing acknowledged is lost, nothing is doubled.

Each test drives traffic at a server process, kills it with SIGKILL (no shutdown code runs), restarts it on the
same data directory and port, and checks the ``events`` view against what the clients were told.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest
from segment.analytics import Client

from tests.e2e.support import UNLIMITED, journal_ids, restart, store_counts, stored_ids, wait_for
from tests.helpers import ServerProcess

pytestmark = pytest.mark.slow

RETRYABLE = frozenset({429, 500, 502, 503, 504})


def _track(tag: str, i: int) -> dict[str, Any]:
    return {
        "type": "track",
        "userId": f"user-{tag}",
        "event": "Crash Test",
        "messageId": f"{tag}-{i}-{uuid.uuid4()}",
        "properties": {"tag": tag, "i": i},
    }


class RetryingSender(threading.Thread):
    """One client of the stream: sends its requests one after the other and, like an SDK, retries a request
    (the same messages with the same messageIds) on connection errors and 5xx until it is acknowledged."""

    def __init__(self, url: str, write_key: str, tag: str, requests: int, deadline: float) -> None:
        super().__init__(daemon=True, name=f"sender-{tag}")
        self.url, self.write_key, self.tag, self.requests, self.deadline = url, write_key, tag, requests, deadline
        self.sent: list[tuple[str, dict[str, Any]]] = []
        """Every request, in order, as (path, body)."""
        self.acked: list[str] = []
        """messageIds of the requests answered 200."""
        self.retried: list[str] = []
        """messageIds of the requests that needed more than one attempt (the crash hit them)."""
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with httpx.Client(base_url=self.url, auth=(self.write_key, ""), timeout=5) as client:
                for n in range(self.requests):
                    if n % 2:  # a batch of four
                        items = [_track(self.tag, 10 * n + k) for k in range(4)]
                        path, body = "/v1/batch", {"batch": items}
                    else:
                        items = [_track(self.tag, 10 * n)]
                        path, body = "/v1/track", items[0]
                    self.sent.append((path, body))
                    attempts = self._deliver(client, path, body)
                    ids = [m["messageId"] for m in items]
                    self.acked.extend(ids)
                    if attempts > 1:
                        self.retried.extend(ids)
        except BaseException as exc:
            self.error = exc

    def _deliver(self, client: httpx.Client, path: str, body: dict[str, Any]) -> int:
        attempts = 0
        while time.monotonic() < self.deadline:
            attempts += 1
            try:
                r = client.post(path, json=body)
            except httpx.TransportError:  # the server died under us or is not back yet
                time.sleep(0.02)
                continue
            if r.status_code == 200:
                return attempts
            if r.status_code in RETRYABLE:
                time.sleep(0.02)
                continue
            raise AssertionError(f"{path} answered {r.status_code}: {r.text}")
        raise TimeoutError(f"{self.name}: a request was not acknowledged after {attempts} attempts")


def test_kill9_mid_stream_keeps_every_acknowledged_message_once(server_process: ServerProcess) -> None:
    server_process.env["OPENCDP_JOURNAL_RETENTION_SEGMENTS"] = "100000"  # keep loaded segments to count copies
    server = server_process.start()
    source = server.admin.create_source("crash-stream", "server", UNLIMITED)
    deadline = time.monotonic() + 40
    senders = [RetryingSender(server.url, source.write_key, f"t{t}", 40, deadline) for t in range(6)]
    total = sum(1 if n % 2 == 0 else 4 for n in range(40)) * len(senders)
    for s in senders:
        s.start()

    # Kill once about a third of the stream is acknowledged: requests are in flight on every thread.
    wait_for(lambda: sum(len(s.acked) for s in senders) >= total // 3, 20, "a third of the stream to be acked")
    acked_before = {m for s in senders for m in list(s.acked)}
    server.kill9()
    # Acknowledged means journalled: every id acked before the kill is in a complete journal line on disk.
    assert acked_before <= set(journal_ids(server.data_dir))
    restart(server)

    for s in senders:
        s.join(timeout=max(0.1, deadline - time.monotonic()))
    assert not [s.name for s in senders if s.is_alive()], "senders did not finish"
    assert [s.error for s in senders if s.error] == []
    acked = [m for s in senders for m in s.acked]
    assert len(acked) == len(set(acked)) == total
    assert len(acked_before) < total, "the kill came after the stream had ended"
    retried = [m for s in senders for m in s.retried]
    assert retried, "no request was retried: the kill did not hit the stream"

    stored = stored_ids(server.admin, source.source_id)
    assert set(stored) == set(acked), "an acknowledged message is missing after the restart"
    assert [m for m, n in stored.items() if n != 1] == []

    # An SDK whose answer was lost in the crash sends the same request again: acknowledged, not stored again.
    resent = [s.sent[0] for s in senders] + [s.sent[1] for s in senders]
    with httpx.Client(base_url=server.url, auth=(source.write_key, ""), timeout=5) as client:
        for path, body in resent:
            assert client.post(path, json=body).status_code == 200
    assert stored_ids(server.admin, source.source_id) == stored
    assert store_counts(server.admin) == (total, total)
    server.stop()
    journalled = journal_ids(server.data_dir)
    assert sum(n - 1 for n in journalled.values()) >= len(resent) * 2  # the copies were journalled, then deduplicated


def test_segment_sdk_retries_across_kill9_and_every_message_is_stored_once(
    server_process: ServerProcess, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="segment")
    server = server_process.start()
    source = server.admin.create_source("crash-sdk", "server", UNLIMITED)
    failures: list[str] = []
    client = Client(
        source.write_key,
        host=server.url,  # only the host changes
        max_retries=10,  # 0 s, 0.5 s, 1 s, 2 s, ... between attempts: spans a restart of about a second
        upload_interval=0.05,
        upload_size=20,
        timeout=5,
        on_error=lambda exc, batch: failures.append(f"{exc!r} ({len(batch)} messages)"),
    )
    crash, crash_error = threading.Event(), []

    def kill_and_restart() -> None:
        try:
            if crash.wait(20):
                server.kill9()
                restart(server)
        except BaseException as exc:
            crash_error.append(exc)

    killer = threading.Thread(target=kill_and_restart, daemon=True)
    killer.start()
    ids: list[str] = []
    try:
        for i in range(300):
            ok, msg = client.track(user_id=f"user-{i % 7}", event="Crash Test", properties={"i": i})
            assert ok
            ids.append(msg["messageId"])
            if i == 100:
                crash.set()  # the stream goes on while the server is down: the SDK queues and retries
            time.sleep(0.003)
        killer.join(timeout=30)
        assert not killer.is_alive() and crash_error == []
        wait_for(lambda: client.queue.unfinished_tasks == 0, 40, "the SDK to deliver its queue")
    finally:
        client.join()

    assert failures == []
    retries = [r.getMessage() for r in caplog.records if r.name == "segment" and "retry" in r.getMessage().lower()]
    assert retries, "the SDK never retried: the kill did not hit its stream"
    assert len(set(ids)) == 300
    assert stored_ids(server.admin, source.source_id) == Counter(dict.fromkeys(ids, 1))
    rows, distinct = store_counts(server.admin)
    assert rows == distinct


def _ack_then_kill(server: ServerProcess, write_key: str, tag: str, kill_after: int) -> list[str]:
    """Four clients send single calls; the one that reads the ``kill_after``-th 200 sends SIGKILL at once.

    Returns the messageIds answered 200 (a few may arrive in the same instant as the one that triggered the kill).
    """
    assert server.proc is not None
    pid = server.proc.pid
    acked: list[str] = []
    errors: list[str] = []
    lock, killed = threading.Lock(), threading.Event()
    deadline = time.monotonic() + 15

    def send(name: str) -> None:
        try:
            with httpx.Client(base_url=server.url, auth=(write_key, ""), timeout=5) as client:
                i = 0
                while not killed.is_set() and time.monotonic() < deadline:
                    body = _track(name, i)
                    i += 1
                    try:
                        r = client.post("/v1/track", json=body)
                    except httpx.TransportError:
                        return  # the server is gone; an unanswered message is not acknowledged
                    if r.status_code != 200:
                        errors.append(f"{r.status_code}: {r.text}")
                        return
                    with lock:
                        acked.append(body["messageId"])
                        if len(acked) >= kill_after and not killed.is_set():
                            os.kill(pid, signal.SIGKILL)
                            killed.set()
        except BaseException as exc:
            errors.append(repr(exc))

    threads = [threading.Thread(target=send, args=(f"{tag}t{t}",), daemon=True) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(0.1, deadline - time.monotonic()))
    assert errors == [] and not any(t.is_alive() for t in threads)
    assert killed.is_set(), "the server was never killed"
    server.kill9()  # reaps the process the client killed
    return acked


def test_a_message_is_durable_the_instant_it_is_acknowledged(server_process: ServerProcess) -> None:
    """SIGKILL sent by the client the instant it reads a 200, three times over: each time every acknowledged
    message is already in a complete journal line on disk, and after the restarts each is stored once."""
    server = server_process.start()
    source = server.admin.create_source("ack-kill", "server", UNLIMITED)
    acked_all: list[str] = []
    for round_ in range(3):
        if round_:
            restart(server)
        # Sometimes before the loader's first pass after start, sometimes well after it.
        acked = _ack_then_kill(server, source.write_key, f"r{round_}", kill_after=5 + 40 * round_)
        on_disk = journal_ids(server.data_dir)
        assert [m for m in acked if m not in on_disk] == [], f"round {round_}: acknowledged but not journalled"
        acked_all += acked

    restart(server)
    stored = stored_ids(server.admin, source.source_id)
    assert [m for m in acked_all if stored[m] != 1] == []
    rows, distinct = store_counts(server.admin)
    assert rows == distinct
