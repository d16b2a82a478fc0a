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
    """Everything durable in the journal, segment after segment, as the loader would see it."""
    return b"".join(path.read_bytes() for _, path in journal.segments_to_load(Position(0, 0), journal.seal()))


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


def test_sealing_closes_the_active_segment_to_writes(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.write_sync(line(1))
    end = journal.seal()
    assert end == Position(1, len(line(1)))
    assert [s for s, _ in journal.segments_to_load(Position(0, 0), end)] == [1]
    journal.write_sync(line(2))  # goes to a new segment: segment 1 stays as it was when sealed
    assert segment_path(tmp_path, 1).read_bytes() == line(1)
    assert segment_path(tmp_path, 2).read_bytes() == line(2)
    assert [s for s, _ in journal.segments_to_load(end, journal.seal())] == [2]
    journal.close()


def test_a_reopened_journal_never_appends_to_an_old_segment(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.write_sync(line(1))
    journal.close()
    reopened = Journal(tmp_path)
    reopened.write_sync(line(2))
    assert list_segments(tmp_path) == [1, 2]
    reopened.close()


def test_recovery_truncates_a_torn_tail_and_keeps_appending(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.write_sync(line(1) + line(2))
    journal.close()
    path = segment_path(tmp_path, list_segments(tmp_path)[-1])
    with path.open("ab") as f:
        f.write(b'A\tsrc\t{"messageId":"torn')
    reopened = Journal(tmp_path)
    assert path.read_bytes() == line(1) + line(2)
    reopened.write_sync(line(3))  # in a new segment
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
    reopened = Journal(tmp_path)
    assert reopened.committed == Position(1, len(line(1) + line(3)))
    reopened.close()


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


def test_mark_loaded_prunes_but_keeps_unloaded_segments(tmp_path: Path) -> None:
    journal = Journal(tmp_path, segment_bytes=100)
    for i in range(30):
        journal.write_sync(line(i))
    segments = list_segments(tmp_path)
    loaded = Position(segments[5], 0)
    journal.mark_loaded(loaded, keep=2)
    left = list_segments(tmp_path)
    assert left[0] == segments[3]  # segments 3 and 4 kept for inspection, 5+ not yet loaded
    assert left[-1] == segments[-1]
    journal.close()


def test_an_empty_active_segment_is_never_offered_for_loading(tmp_path: Path) -> None:
    """Sealing an empty active segment must not let the loader mark it loaded while writes still go to it."""
    journal = Journal(tmp_path)
    end = journal.seal()
    assert journal.segments_to_load(Position(0, 0), end) == []
    journal.write_sync(line(1))  # lands in that same segment
    end = journal.seal()
    assert [s for s, _ in journal.segments_to_load(Position(0, 0), end)] == [1]
    journal.close()


def test_one_process_at_a_time_owns_the_journal(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.write_sync(line(1))
    with pytest.raises(Transient) as info:
        Journal(tmp_path)  # another owner would cut the live segment's tail and load it while it grows
    assert info.value.code == "journal_locked"
    journal.close()
    again = Journal(tmp_path)  # released on close (and by the OS when a process dies)
    again.close()


def test_a_killed_owner_releases_the_journal(tmp_path: Path) -> None:
    import subprocess
    import sys

    code = (
        "import os, signal, sys; from pathlib import Path; from opencdp.store.journal import Journal; "
        "Journal(Path(sys.argv[1])); print('locked', flush=True); signal.pause()"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        with pytest.raises(Transient):
            Journal(tmp_path)
    finally:
        proc.kill()
        proc.communicate(timeout=10)
    Journal(tmp_path).close()


def test_unloaded_bytes_track_the_loader_backlog(tmp_path: Path) -> None:
    journal = Journal(tmp_path)
    journal.write_sync(line(1))
    journal.write_sync(line(2))
    assert journal.unloaded_bytes == len(line(1) + line(2))
    end = journal.seal()
    journal.write_sync(line(3))  # a new segment
    journal.mark_loaded(end, keep=2)
    assert journal.unloaded_bytes == len(line(3))
    journal.close()
    reopened = Journal(tmp_path)
    assert reopened.unloaded_bytes == len(line(1) + line(2) + line(3))  # unknown until the loader reports
    reopened.close()
