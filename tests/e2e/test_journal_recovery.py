"""Recovery of the journal and the loader after crashes, on the real files and a DuckDB engine.

A torn tail (a write the process died in) is cut back to the last complete line; a loader that dies inside
its transaction leaves the position where it was, so loading again neither loses nor doubles a message.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from opencdp.config import Settings
from opencdp.errors import Transient
from opencdp.store import Engine, open_engine
from opencdp.store.journal import Journal, Position, accepted_line, segment_path
from opencdp.store.raw_log import RawLog

SOURCE = "src_recovery"


def line(message_id: str, **extra: object) -> bytes:
    """One accepted-message journal line as collection writes it."""
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    doc = {
        "type": "track",
        "event": "Recovered",
        "userId": "u1",
        "messageId": message_id,
        "properties": {"id": message_id, **extra},
        "receivedAt": now,
        "timestamp": now,
        "originalTimestamp": now,
    }
    encoded = json.dumps(doc, separators=(",", ":")).encode()
    return accepted_line(SOURCE, (message_id, "track", "Recovered", "u1", None), (now, now, None, now), encoded)


def lines(ids: list[str]) -> bytes:
    return b"".join(line(m) for m in ids)


def loaded(engine: Engine) -> list[str]:
    return [r[0] for r in engine.fetch_all("SELECT message_id FROM events ORDER BY seq")]


def counts(engine: Engine) -> tuple[int, int]:
    row = engine.fetch_one("SELECT count(*), count(DISTINCT (source_id, message_id)) FROM events")
    assert row is not None
    return int(row[0]), int(row[1])


@pytest.fixture
def engine(duck_settings: Settings) -> Iterator[Engine]:
    eng = open_engine(duck_settings)
    yield eng
    eng.close()


@pytest.mark.parametrize("torn_bytes", [40, 1536 * 1024], ids=["short", "longer-than-the-1MiB-tail-scan"])
def test_a_torn_tail_is_cut_back_and_the_complete_lines_load(
    duck_settings: Settings, engine: Engine, torn_bytes: int
) -> None:
    directory = duck_settings.journal_dir
    ids = [f"m{i}" for i in range(5)]
    journal = Journal(directory)
    journal.write_sync(lines(ids[:2]))
    journal.write_sync(lines(ids[2:]))
    journal.close()
    path = segment_path(directory, 1)
    good = path.read_bytes()
    # The process died inside a write: part of a line (no newline) is on disk; its sender never got an answer.
    torn = line("torn", pad="x" * torn_bytes)[:torn_bytes]
    with path.open("ab") as f:
        f.write(torn)

    journal = Journal(directory)
    assert path.read_bytes() == good, "the torn bytes were not truncated"
    assert journal.committed == Position(1, len(good))
    raw_log = RawLog(engine)
    assert raw_log.load_all(journal).accepted == 5
    assert loaded(engine) == ids

    # Writing goes on in a new segment (the old one may be loaded already), and nothing torn ever loads.
    after = line("after")
    journal.write_sync(after)
    raw_log.load_all(journal)
    journal.close()
    assert path.read_bytes() == good
    assert segment_path(directory, 2).read_bytes() == after
    assert loaded(engine) == [*ids, "after"]
    assert counts(engine) == (6, 6)


def test_a_last_segment_holding_only_a_torn_write_is_emptied(duck_settings: Settings, engine: Engine) -> None:
    directory = duck_settings.journal_dir
    journal = Journal(directory)
    journal.write_sync(lines(["a", "b"]))
    journal.close()
    segment_path(directory, 2).write_bytes(line("torn")[:-10])  # died in the first write after a rotation

    journal = Journal(directory)
    assert segment_path(directory, 2).stat().st_size == 0
    assert journal.committed == Position(2, 0)
    journal.write_sync(line("c"))
    RawLog(engine).load_all(journal)
    journal.close()
    assert loaded(engine) == ["a", "b", "c"]


def test_a_torn_tail_left_in_a_finished_segment_is_skipped_not_looped_on(
    duck_settings: Settings, engine: Engine
) -> None:
    """A write that failed and could not be rolled back (ftruncate failed too) leaves its bytes in the old
    segment and the journal moves on to a new one; the loader cuts them off, it does not spin on them."""
    directory = duck_settings.journal_dir
    journal = Journal(directory)
    journal.write_sync(lines(["a", "b"]))
    journal.close()
    with segment_path(directory, 1).open("ab") as f:
        f.write(line("never-acknowledged")[:-7])
    segment_path(directory, 2).write_bytes(lines(["c", "d"]))  # what the journal wrote after rotating

    journal = Journal(directory)  # recovery only trims the last segment
    raw_log = RawLog(engine)
    for _ in range(10):  # bounded: before the fix ``load`` returned no progress forever and ``load_all`` spun
        if raw_log.load(journal).position >= journal.committed:
            break
    else:
        pytest.fail("the loader made no progress past the torn bytes of segment 1")
    journal.close()
    assert loaded(engine) == ["a", "b", "c", "d"]


def test_a_write_that_cannot_be_rolled_back_moves_to_a_new_segment(duck_settings: Settings, engine: Engine) -> None:
    """The active segment is a device that is always full: the write fails (ENOSPC) and so does the rollback
    (ftruncate: EINVAL). The journal must answer Transient and continue in a new segment, never keep writing
    through a closed descriptor (whose number the OS hands to the next file or socket opened)."""
    directory = duck_settings.journal_dir
    journal = Journal(directory)
    journal.write_sync(line("a"))
    journal.close()
    os.symlink("/dev/full", segment_path(directory, 2))

    journal = Journal(directory)
    with pytest.raises(Transient) as failed:
        journal.write_sync(line("lost"))
    assert failed.value.code == "storage_unavailable"
    neighbour = os.open(os.devnull, os.O_RDONLY)  # would take the number of a descriptor closed and kept
    try:
        journal.write_sync(b := line("b"))  # the retry lands in segment 3
    finally:
        os.close(neighbour)
    assert journal.committed.segment == 3
    RawLog(engine).load_all(journal)
    journal.close()
    assert loaded(engine) == ["a", "b"]
    assert segment_path(directory, 3).read_bytes() == b


def test_a_load_that_dies_before_commit_is_redone_exactly_once(duck_settings: Settings, engine: Engine) -> None:
    """The crash lands between the journal write and the loader's commit: the loader's transaction (inserts and
    position together) rolls back, and the next ``load_all`` moves everything exactly once."""
    journal = Journal(duck_settings.journal_dir)
    first = lines([f"a{i}" for i in range(10)])
    journal.write_sync(first)
    journal.seal()  # a load came by here: the a's are one segment, the rest the next one
    journal.write_sync(lines([f"b{i}" for i in range(10)] + ["a3"]))  # a3: a retry whose first answer was lost
    journal.write_sync(lines([f"c{i}" for i in range(10)] + ["b7", "c2"]))
    raw_log = RawLog(engine)

    raw_log.load(journal)  # the first segment
    assert raw_log.position() == Position(1, len(first))
    assert len(loaded(engine)) == 10

    class Crash(Exception):
        pass

    with pytest.raises(Crash), engine.transaction():
        result = raw_log.load(journal)  # joins the enclosing transaction
        assert result.accepted == 20 and result.duplicates == 3  # inserted, position moved ...
        assert raw_log.position() == result.position
        raise Crash  # ... and the process dies before COMMIT
    assert raw_log.position() == Position(1, len(first))
    assert len(loaded(engine)) == 10

    total = raw_log.load_all(journal)
    assert total.accepted == 20 and total.duplicates == 3
    assert sorted(loaded(engine)) == sorted([f"{p}{i}" for p in "abc" for i in range(10)])
    assert counts(engine) == (30, 30)
    assert raw_log.load_all(journal).lines == 0  # loading again is a no-op
    journal.close()


LOADER_CRASH = """
import os, signal, sys
from pathlib import Path
from opencdp.config import Settings
from opencdp.store import open_engine
from opencdp.store.journal import Journal
from opencdp.store.raw_log import RawLog

settings = Settings(data_dir=Path(sys.argv[1]))
engine = open_engine(settings)
raw_log = RawLog(engine)
journal = Journal(settings.journal_dir)
if sys.argv[2] == "inside":
    with engine.transaction():
        raw_log.load(journal)
        os.kill(os.getpid(), signal.SIGKILL)  # dies with the inserts done and the position moved, not committed
else:
    raw_log.load(journal)  # the oldest segment
    os.kill(os.getpid(), signal.SIGKILL)  # dies after a commit, without closing anything
"""


def _loader_killed(data_dir: Path, *args: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", LOADER_CRASH, str(data_dir), *args], capture_output=True, timeout=60, check=False
    )
    assert proc.returncode == -9, proc.stderr.decode()


def test_a_loader_process_killed_mid_load_leaves_nothing_lost_or_doubled(duck_settings: Settings) -> None:
    """The same with a real ``kill -9`` of a loader process on the DuckDB file, after and inside a commit."""
    journal = Journal(duck_settings.journal_dir)
    first = lines([f"a{i}" for i in range(10)])
    journal.write_sync(first)
    journal.seal()
    journal.write_sync(lines([f"b{i}" for i in range(10)] + ["a1"]))
    journal.close()
    open_engine(duck_settings).close()

    _loader_killed(duck_settings.data_dir, "after")  # loads the a's (segment 1), commits, dies
    _loader_killed(duck_settings.data_dir, "inside")  # loads the b's, dies before COMMIT

    engine = open_engine(duck_settings)
    try:
        raw_log = RawLog(engine)
        assert raw_log.position() == Position(1, len(first)), "the committed load was lost or the other kept"
        assert sorted(loaded(engine)) == [f"a{i}" for i in range(10)]
        journal = Journal(duck_settings.journal_dir)
        raw_log.load_all(journal)
        journal.close()
        assert sorted(loaded(engine)) == sorted([f"{p}{i}" for p in "ab" for i in range(10)])
        assert counts(engine) == (20, 20)
    finally:
        engine.close()
