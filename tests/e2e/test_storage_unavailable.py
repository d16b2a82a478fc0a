"""Storage unavailable: the journal cannot take a write, so the answer is 503 with Retry-After, never 200.

The failures are real OS-level ones in a real ``opencdp serve`` process (tests run as root, so permissions
would not stop a write): a file-size limit set on the running process (writes fail with EFBIG and can be
rolled back), and an active segment that is a device that is always full (ENOSPC, and no rollback possible).
"""

from __future__ import annotations

import os
import resource
import uuid
from typing import Any

import httpx
import pytest

from tests.e2e.support import UNLIMITED, journal_ids, restart, store_counts, stored_ids
from tests.helpers import ServerProcess

pytestmark = pytest.mark.slow


def _track(message_id: str) -> dict[str, Any]:
    return {"userId": "u1", "event": "Stored Once", "messageId": message_id, "properties": {"n": 1}}


def _assert_unavailable(r: httpx.Response) -> None:
    assert r.status_code == 503, r.text
    assert int(r.headers["retry-after"]) >= 1
    body = r.json()
    assert body["code"] == "storage_unavailable"
    assert isinstance(body["message"], str) and body["message"]


def test_a_journal_that_refuses_writes_answers_503_until_it_takes_them(server_process: ServerProcess) -> None:
    server = server_process.start()
    source = server.admin.create_source("full-disk", "server", UNLIMITED)
    client = httpx.Client(base_url=server.url, auth=(source.write_key, ""), timeout=10)
    segment = server.data_dir / "journal" / "000000000001.jrn"
    try:
        assert client.post("/v1/track", json=_track("before")).status_code == 200
        assert stored_ids(server.admin, source.source_id)["before"] == 1  # loaded: the engine has nothing to write
        size = segment.stat().st_size
        assert server.proc is not None
        pid = server.proc.pid
        limits = resource.prlimit(pid, resource.RLIMIT_FSIZE)
        # From now on the server process cannot grow any file past 16 bytes after the journal's end: the next
        # write lands partly (a torn write) and then fails with EFBIG, as on a disk that has just filled up.
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (size + 16, limits[1]))
        message_id = str(uuid.uuid4())
        try:
            for _ in range(3):  # an SDK retrying: refused every time, never acknowledged
                _assert_unavailable(client.post("/v1/track", json=_track(message_id)))
            batch = {"batch": [{"type": "track", **_track(str(uuid.uuid4()))} for _ in range(3)]}
            _assert_unavailable(client.post("/v1/batch", json=batch))
            assert segment.stat().st_size == size, "the failed write was not rolled back"
        finally:
            resource.prlimit(pid, resource.RLIMIT_FSIZE, limits)  # the disk has room again

        r = client.post("/v1/track", json=_track(message_id))  # the same retry, now accepted
        assert r.status_code == 200, r.text
        assert stored_ids(server.admin, source.source_id) == {"before": 1, message_id: 1}

        server.kill9()  # and it is durable, with no trace of the refused writes
        assert journal_ids(server.data_dir) == {"before": 1, message_id: 1}
        assert segment.read_bytes().endswith(b"\n")
        restart(server)
        assert stored_ids(server.admin, source.source_id) == {"before": 1, message_id: 1}
        assert store_counts(server.admin) == (2, 2)
    finally:
        client.close()


def test_a_segment_that_cannot_be_rolled_back_answers_503_then_the_retry_is_stored_once(
    server_process: ServerProcess,
) -> None:
    """The active segment is /dev/full: the write fails (ENOSPC) and its rollback fails too (ftruncate EINVAL).
    The request gets 503; the journal gives the segment up and opens a new one, so the SDK's retry is accepted.
    (Before the fix the journal kept the closed descriptor and wrote later requests into whatever reused its
    number, here the next client's socket: every later request was dropped until a restart.)"""
    server = server_process.start()
    source = server.admin.create_source("dev-full", "server", UNLIMITED)
    client = httpx.Client(base_url=server.url, auth=(source.write_key, ""), timeout=10)
    try:
        assert client.post("/v1/track", json=_track("before")).status_code == 200
        client.close()
        server.stop()
        os.symlink("/dev/full", server.data_dir / "journal" / "000000000002.jrn")  # the server opens it at start
        restart(server)
        client = httpx.Client(base_url=server.url, auth=(source.write_key, ""), timeout=10)

        message_id = str(uuid.uuid4())
        _assert_unavailable(client.post("/v1/track", json=_track(message_id)))
        answers = []
        for _ in range(3):  # the SDK retries the same message; later callers are served too
            r = client.post("/v1/track", json=_track(message_id))
            answers.append(r.status_code)
            if r.status_code == 200:
                break
            _assert_unavailable(r)
        assert answers[-1] == 200, answers
        others = [str(uuid.uuid4()) for _ in range(5)]
        with httpx.Client(base_url=server.url, auth=(source.write_key, ""), timeout=10) as fresh:
            for other in others:
                assert fresh.post("/v1/track", json=_track(other)).status_code == 200
        expected = {"before": 1, message_id: 1} | dict.fromkeys(others, 1)
        assert stored_ids(server.admin, source.source_id) == expected

        server.kill9()
        restart(server)
        assert stored_ids(server.admin, source.source_id) == expected
        assert store_counts(server.admin) == (len(expected), len(expected))
    finally:
        client.close()
