"""The ingest journal: group commit, rotation, reading back, recovery and failure handling."""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from opencdp.errors import Transient
from opencdp.store.journal import Journal, Position, list_segments, segment_path


def line(i: int) -> bytes:
    return f'A\tsrc\t{{"messageId":"m{i}"}}\n'.encode()


def read_all(journal: Journal) -> bytes:
    out, pos = b"", Position(0, 0)
    while True:
        data, pos = journal.read(pos, 1000)
        if not data:
            return out
        out += data


def test_concurrent_appends_share_group_commits(tmp_path: Path) -> None:
    journal = Journal(tmp_path)

    async def main() -> None:
        await asyncio.gather(*(journal.append(line(i)) for i in range(500)))

    asyncio.run(main())
    assert journal.groups < 500  # many requests, fewer fsyncs
    data = read_all(journal)
    assert sorted(data.splitlines(keepends=True)) == sorted(line(i) for i in range(500))
    journal.close()


def test_rotation_and_reads_across_segments(tmp_path: Path) -> None:
    journal = Journal(tmp_path, segment_bytes=200)
    for i in range(50):
        journal.write_sync(line(i))
    assert len(list_segments(tmp_path)) > 5
    assert read_all(journal) == b"".join(line(i) for i in range(50))
    journal.close()


def test_reads_return_complete_lines_only(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.write_sync(b"".join(line(i) for i in range(10)))
    data, pos = journal.read(Position(0, 0), 30)  # smaller than two lines
    assert data.endswith(b"\n") and data.count(b"\n") == 1
    rest, end = journal.read(pos, 10_000)
    assert data + rest == b"".join(line(i) for i in range(10))
    assert end == journal.committed
    journal.close()


def test_recovery_truncates_a_torn_tail_and_keeps_appending(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.write_sync(line(1) + line(2))
    journal.close()
    path = segment_path(tmp_path, list_segments(tmp_path)[-1])
    with path.open("ab") as f:
        f.write(b'A\tsrc\t{"messageId":"torn')
    reopened = Journal(tmp_path)
    assert path.read_bytes() == line(1) + line(2)
    reopened.write_sync(line(3))
    assert read_all(reopened) == line(1) + line(2) + line(3)
    reopened.close()


class DiskFull:
    """Fault injection for ``os.write``: writes half of the buffer, then fails as a full disk does."""

    def __init__(self, real: Callable[[int, Any], int]) -> None:
        self.real = real
        self.failures = 0

    def __call__(self, fd: int, data: Any) -> int:
        self.real(fd, bytes(data)[: len(data) // 2])
        self.failures += 1
        raise OSError(errno.ENOSPC, "No space left on device")


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    journal = Journal(tmp_path)
    journal.write_sync(line(1))
    with monkeypatch.context() as m:
        m.setattr(os, "write", DiskFull(os.write))
        with pytest.raises(Transient) as info:
            journal.write_sync(line(2))
    assert info.value.code == "storage_unavailable"
    journal.write_sync(line(3))
    assert read_all(journal) == line(1) + line(3)  # the half-written line was rolled back
    journal.close()
    assert Journal(tmp_path).committed == Position(1, len(line(1) + line(3)))


def test_async_append_failure_raises_transient_for_every_waiter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal = Journal(tmp_path)

    async def main() -> list[BaseException | None]:
        return await asyncio.gather(*(journal.append(line(i)) for i in range(20)), return_exceptions=True)

    with monkeypatch.context() as m:
        m.setattr(os, "write", DiskFull(os.write))
        results = asyncio.run(main())
    assert results and all(isinstance(r, Transient) for r in results)
    assert read_all(journal) == b""
    asyncio.run(main())  # the disk has room again: the same appends succeed
    assert sorted(read_all(journal).splitlines(keepends=True)) == sorted(line(i) for i in range(20))
    journal.close()


def test_prune_keeps_unloaded_segments(tmp_path: Path) -> None:
    journal = Journal(tmp_path, segment_bytes=100)
    for i in range(30):
        journal.write_sync(line(i))
    segments = list_segments(tmp_path)
    loaded = Position(segments[5], 0)
    journal.prune(loaded, keep=2)
    left = list_segments(tmp_path)
    assert left[0] == segments[3]  # segments 3 and 4 kept for inspection, 5+ not yet loaded
    assert left[-1] == segments[-1]
    journal.close()
