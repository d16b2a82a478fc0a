"""Loading the journal into the raw log, deduplication and consumer offsets, on both engines."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from opencdp.collect import timestamps
from opencdp.store import Engine
from opencdp.store import journal as journal_format
from opencdp.store.journal import Journal
from opencdp.store.raw_log import RawLog


def accepted(source: str, message_id: str, received: datetime | None = None, **fields: Any) -> bytes:
    received = received or datetime.now(UTC)
    at = received.isoformat()
    doc = {
        "type": "track",
        "event": "E",
        "userId": "u",
        "messageId": message_id,
        "receivedAt": at,
        "timestamp": at,
        **fields,
    }
    client = (message_id, "track", "E", "u", fields.get("anonymousId"))
    return journal_format.accepted_line(source, client, (at, at, None, at), msgspec.json.encode(doc))


def rejected_line(source: str, code: str) -> bytes:
    doc = {"code": code, "reason": "why", "payload": '{"x":1}'}
    return journal_format.rejected_line(source, datetime.now(UTC).isoformat(), msgspec.json.encode(doc))


def stored_ids(engine: Engine) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in engine.fetch_all("SELECT source_id, message_id FROM events ORDER BY seq")]


@pytest.fixture
def journal(tmp_path: Path) -> Journal:
    return Journal(tmp_path / "journal", segment_bytes=4096)


def test_load_moves_lines_in_order_with_columns(engine: Engine, journal: Journal) -> None:
    journal.write_sync(
        accepted("s1", "m1", properties={"p": 1}, anonymousId="a1")
        + rejected_line("s1", "missing_event")
        + accepted("s1", "m2", traits={"email": "x@example.com"})
    )
    result = RawLog(engine).load_all(journal)
    assert (result.lines, result.accepted, result.rejected, result.duplicates) == (3, 2, 1, 0)
    rows = engine.fetch_all(
        "SELECT seq, message_id, type, event, user_id, anonymous_id, properties, traits FROM events ORDER BY seq"
    )
    assert [r[0] for r in rows] == [1, 2]
    assert rows[0][1:6] == ("m1", "track", "E", "u", "a1")
    assert json.loads(rows[0][6]) == {"p": 1}
    assert json.loads(rows[1][7]) == {"email": "x@example.com"}
    assert engine.fetch_all("SELECT source_id, code, payload FROM rejected_messages") == [
        ("s1", "missing_event", '{"x":1}')
    ]


def test_duplicates_within_and_across_loads_are_stored_once(engine: Engine, journal: Journal) -> None:
    log = RawLog(engine)
    journal.write_sync(accepted("s1", "m1") + accepted("s1", "m1") + accepted("s2", "m1"))
    log.load_all(journal)
    journal.write_sync(accepted("s1", "m1") + accepted("s1", "m2"))
    result = log.load_all(journal)
    assert result.accepted == 1 and result.duplicates == 1
    assert stored_ids(engine) == [("s1", "m1"), ("s2", "m1"), ("s1", "m2")]


def test_dedup_window(engine: Engine, journal: Journal) -> None:
    old = datetime.now(UTC) - timedelta(days=10)
    log = RawLog(engine, dedup_window=timedelta(days=7))
    journal.write_sync(accepted("s1", "m1", received=old))
    log.load_all(journal)
    journal.write_sync(accepted("s1", "m1"))  # same id, but the first copy is outside the window
    log.load_all(journal)
    assert stored_ids(engine) == [("s1", "m1"), ("s1", "m1")]


def test_loading_is_idempotent_after_a_crash_before_commit(engine: Engine, journal: Journal) -> None:
    log = RawLog(engine)
    journal.write_sync(b"".join(accepted("s1", f"m{i}") for i in range(100)))

    class Crash(Exception):
        pass

    with pytest.raises(Crash), engine.transaction():
        log.load(journal)
        raise Crash  # the process dies before the load transaction commits
    assert stored_ids(engine) == []
    log.load_all(journal)
    log.load_all(journal)
    assert stored_ids(engine) == [("s1", f"m{i}") for i in range(100)]


def test_consumer_offsets(engine: Engine, journal: Journal) -> None:
    log = RawLog(engine)
    journal.write_sync(b"".join(accepted("s1", f"m{i}") for i in range(10)))
    log.load_all(journal)
    first = log.read("identity", limit=4)
    assert first.column("message_id").to_pylist() == ["m0", "m1", "m2", "m3"]
    log.commit("identity", first.column("seq").to_pylist()[-1])
    assert log.read("identity", limit=100).column("message_id").to_pylist() == [f"m{i}" for i in range(4, 10)]
    assert log.read("other", limit=1).column("message_id").to_pylist() == ["m0"]  # consumers are independent
    log.commit("identity", 10)
    assert log.read("identity").num_rows == 0
    assert log.offset("identity") == 10


def test_unsafe_client_fields_load_from_the_json(engine: Engine, journal: Journal) -> None:
    doc = {
        "type": "identify",
        "userId": "tab\there",
        "anonymousId": "nl\nhere",
        "messageId": "m\t1",
        "receivedAt": "2026-01-01T00:00:00.000Z",
        "timestamp": "2026-01-01T00:00:00.000Z",
    }
    at = doc["receivedAt"]
    line = journal_format.accepted_line(
        "s1", ("m\t1", "identify", None, "tab\there", "nl\nhere"), (at, at, None, at), msgspec.json.encode(doc)
    )
    assert line.startswith(b"X\t")
    journal.write_sync(line)
    RawLog(engine).load_all(journal)
    assert engine.fetch_all("SELECT message_id, type, event, user_id, anonymous_id FROM events") == [
        ("m\t1", "identify", None, "tab\there", "nl\nhere")
    ]


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    ids=st.lists(st.sampled_from([f"m{i}" for i in range(12)]), min_size=1, max_size=40),
    cuts=st.lists(st.integers(min_value=1, max_value=40), max_size=5),
)
def test_stored_once_whatever_the_load_batching(
    tmp_path_factory: pytest.TempPathFactory, ids: list[str], cuts: list[int]
) -> None:
    """Whatever the duplicates and however the journal is cut into loads: each id once, in first-seen order."""
    from opencdp.store.duckdb_engine import DuckDBEngine
    from opencdp.store.schema import migrate

    d = tmp_path_factory.mktemp("prop")
    engine = DuckDBEngine(d / "db.duckdb")
    migrate(engine)
    journal = Journal(d / "journal")
    log = RawLog(engine)
    start = 0
    for cut in [*sorted(set(cuts)), len(ids)]:
        if cut > start:
            journal.write_sync(b"".join(accepted("s", i) for i in ids[start:cut]))
            log.load_all(journal)
            start = cut
    expected = list(dict.fromkeys(ids))
    assert [m for _, m in stored_ids(engine)] == expected
    journal.close()
    engine.close()


def test_a_segment_the_engine_cannot_read_is_set_aside_and_the_rest_loads(engine: Engine, journal: Journal) -> None:
    """A malformed line (here: a corrupted one, too few fields) must not stop the raw log for good."""
    log = RawLog(engine)
    journal.write_sync(accepted("s1", "before"))
    journal.seal()
    journal.write_sync(accepted("s1", "in-bad-segment") + b"A\tcorrupted-line\n")
    bad = journal.seal()
    journal.write_sync(accepted("s1", "after"))
    log.load_all(journal)
    assert stored_ids(engine) == [("s1", "before"), ("s1", "after")]
    assert journal.held() == [f"{bad.segment:012d}.jrn"]
    held = journal.directory / "held" / journal.held()[0]
    assert b"in-bad-segment" in held.read_bytes()  # kept on disk for an operator, not lost
    log.load_all(journal)
    assert stored_ids(engine) == [("s1", "before"), ("s1", "after")]


def test_timestamp_is_corrected_for_clock_skew_when_loaded(engine: Engine, journal: Journal) -> None:
    """Segment's rule, computed by the engine at load, against the same rule computed in Python."""
    received = datetime(2026, 3, 29, 1, 30, 0, 123000, tzinfo=UTC)
    cases = {  # message_id: (originalTimestamp, sentAt)
        "skewed": (datetime(2026, 3, 30, 2, 0, tzinfo=UTC), datetime(2026, 3, 30, 2, 0, 5, tzinfo=UTC)),
        "behind": (datetime(2019, 1, 1, tzinfo=UTC), datetime(2019, 1, 1, 0, 0, 1, 500000, tzinfo=UTC)),
        "no_sent_at": (datetime(2026, 1, 1, tzinfo=UTC), None),
        "no_device_time": (None, datetime(2026, 1, 1, tzinfo=UTC)),
    }
    lines = b""
    for mid, (original, sent) in cases.items():
        times = (None, original and original.isoformat(), sent and sent.isoformat(), received.isoformat())
        doc = msgspec.json.encode({"type": "track", "event": "E", "userId": "u", "messageId": mid})
        lines += journal_format.accepted_line("s1", (mid, "track", "E", "u", None), times, doc)
    journal.write_sync(lines)
    RawLog(engine).load_all(journal)
    query = "SELECT message_id, timestamp, original_timestamp FROM events"
    rows = {r[0]: (r[1], r[2]) for r in engine.fetch_all(query)}
    for mid, (original, sent) in cases.items():
        expected = received if original is None else timestamps.corrected(received, original, sent)
        assert rows[mid] == (expected, original or received), mid
