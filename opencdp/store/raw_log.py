"""The raw log in the engine: bulk loading from the journal, deduplication, and consumer offsets.

``load`` moves journalled lines into ``raw_events`` (accepted messages) and ``rejected_messages`` (items that
failed validation) in one transaction together with the journal position, so re-running after a crash
is idempotent. Duplicates by (source_id, messageId) within the dedup window are dropped here, set-based.
Consumers (the processor of later stages) read ``raw_events`` by ``seq`` and commit their own offsets.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.csv as pacsv

from opencdp.store.engine import Engine
from opencdp.store.journal import Journal, Position

STAGE = "_cdp_stage_journal"

_COLUMNS = ["kind", "source_id", "doc"]
_PARSE = pacsv.ParseOptions(delimiter="\t", quote_char=False, escape_char=False, newlines_in_values=False)
_CONVERT = pacsv.ConvertOptions(column_types={c: pa.string() for c in _COLUMNS}, strings_can_be_null=False)
_READ = pacsv.ReadOptions(column_names=_COLUMNS, use_threads=True, block_size=16 * 1024 * 1024)

INSERT_ACCEPTED = """
INSERT INTO raw_events (seq, source_id, message_id, type, event, user_id, anonymous_id, timestamp,
                        original_timestamp, sent_at, received_at, message)
SELECT (SELECT coalesce(max(seq), 0) FROM raw_events) + row_number() OVER (ORDER BY pos),
       source_id, message_id, type, event, user_id, anonymous_id, ts, ots, sat, rat, j
FROM (
    SELECT pos, source_id, j, message_id, type, event, user_id, anonymous_id, ts, ots, sat, rat,
           row_number() OVER (PARTITION BY source_id, message_id ORDER BY pos) AS copy_no
    FROM (
        SELECT pos, source_id, j,
               json_extract_string(j, '$.messageId') AS message_id,
               json_extract_string(j, '$.type') AS type,
               json_extract_string(j, '$.event') AS event,
               json_extract_string(j, '$.userId') AS user_id,
               json_extract_string(j, '$.anonymousId') AS anonymous_id,
               CAST(json_extract_string(j, '$.timestamp') AS TIMESTAMPTZ) AS ts,
               CAST(json_extract_string(j, '$.originalTimestamp') AS TIMESTAMPTZ) AS ots,
               CAST(json_extract_string(j, '$.sentAt') AS TIMESTAMPTZ) AS sat,
               CAST(json_extract_string(j, '$.receivedAt') AS TIMESTAMPTZ) AS rat
        FROM (SELECT pos, source_id, CAST(doc AS JSON) AS j FROM _cdp_stage_journal WHERE kind = 'A') AS s
    ) AS e
) AS x
WHERE copy_no = 1
  AND NOT EXISTS (
      SELECT 1 FROM raw_events AS r
      WHERE r.source_id = x.source_id AND r.message_id = x.message_id AND r.received_at >= ?
  )
"""

# DuckDB parses the JSON text again for every ``json_extract_string`` call; given a list of paths it parses it
# once for all of them, which makes load_all ~1.4x faster (benchmarks/load_bench.py). The same statement as
# INSERT_ACCEPTED otherwise; PostgreSQL keeps the portable form.
INSERT_ACCEPTED_DUCKDB = INSERT_ACCEPTED.replace(
    """        SELECT pos, source_id, j,
               json_extract_string(j, '$.messageId') AS message_id,
               json_extract_string(j, '$.type') AS type,
               json_extract_string(j, '$.event') AS event,
               json_extract_string(j, '$.userId') AS user_id,
               json_extract_string(j, '$.anonymousId') AS anonymous_id,
               CAST(json_extract_string(j, '$.timestamp') AS TIMESTAMPTZ) AS ts,
               CAST(json_extract_string(j, '$.originalTimestamp') AS TIMESTAMPTZ) AS ots,
               CAST(json_extract_string(j, '$.sentAt') AS TIMESTAMPTZ) AS sat,
               CAST(json_extract_string(j, '$.receivedAt') AS TIMESTAMPTZ) AS rat
        FROM (SELECT pos, source_id, CAST(doc AS JSON) AS j FROM _cdp_stage_journal WHERE kind = 'A') AS s
""",
    """        SELECT pos, source_id, j, f[1] AS message_id, f[2] AS type, f[3] AS event, f[4] AS user_id,
               f[5] AS anonymous_id, CAST(f[6] AS TIMESTAMPTZ) AS ts, CAST(f[7] AS TIMESTAMPTZ) AS ots,
               CAST(f[8] AS TIMESTAMPTZ) AS sat, CAST(f[9] AS TIMESTAMPTZ) AS rat
        FROM (
            SELECT pos, source_id, j,
                   json_extract_string(j, ['$.messageId', '$.type', '$.event', '$.userId', '$.anonymousId',
                                           '$.timestamp', '$.originalTimestamp', '$.sentAt', '$.receivedAt']) AS f
            FROM (SELECT pos, source_id, CAST(doc AS JSON) AS j FROM _cdp_stage_journal WHERE kind = 'A') AS s0
        ) AS s
""",
)
assert INSERT_ACCEPTED_DUCKDB != INSERT_ACCEPTED, "INSERT_ACCEPTED changed: update INSERT_ACCEPTED_DUCKDB too"

INSERT_REJECTED = """
INSERT INTO rejected_messages (seq, source_id, received_at, code, reason, payload)
SELECT (SELECT coalesce(max(seq), 0) FROM rejected_messages) + row_number() OVER (ORDER BY pos),
       source_id,
       CAST(json_extract_string(j, '$.receivedAt') AS TIMESTAMPTZ),
       json_extract_string(j, '$.code'),
       json_extract_string(j, '$.reason'),
       json_extract_string(j, '$.payload')
FROM (SELECT pos, source_id, CAST(doc AS JSON) AS j FROM _cdp_stage_journal WHERE kind = 'R') AS s
"""


@dataclass(frozen=True)
class LoadResult:
    lines: int
    accepted: int
    rejected: int
    position: Position

    @property
    def duplicates(self) -> int:
        return self.lines - self.accepted - self.rejected


def parse_lines(data: bytes) -> pa.Table:
    """Journal lines -> Arrow (kind, source_id, doc, pos), parsed in C++ without a Python loop."""
    table = pacsv.read_csv(io.BytesIO(data), read_options=_READ, parse_options=_PARSE, convert_options=_CONVERT)
    return table.append_column("pos", pa.array(range(table.num_rows), type=pa.int64()))


class RawLog:
    """Reads and writes the raw log tables of one engine."""

    def __init__(self, engine: Engine, *, dedup_window: timedelta = timedelta(days=7)) -> None:
        self.engine = engine
        self.dedup_window = dedup_window

    def position(self) -> Position:
        row = self.engine.fetch_one("SELECT segment, byte_offset FROM _cdp_journal_position")
        return Position(int(row[0]), int(row[1])) if row else Position(0, 0)

    def load(self, journal: Journal, *, max_bytes: int = 64 * 1024 * 1024) -> LoadResult:
        """Move the next journalled lines into the tables (one transaction). Returns what was loaded."""
        start = self.position()
        data, end = journal.read(start, max_bytes)
        if not data:
            if end != start:
                self._set_position(end)
            return LoadResult(0, 0, 0, end)
        stage = parse_lines(data)
        since = datetime.now(UTC) - self.dedup_window
        with self.engine.transaction():
            self.engine.execute(f"DELETE FROM {STAGE}")
            self.engine.append(STAGE, stage)
            before = self._counts()
            duckdb = self.engine.capabilities.dialect == "duckdb"
            self.engine.execute(INSERT_ACCEPTED_DUCKDB if duckdb else INSERT_ACCEPTED, (since,))
            self.engine.execute(INSERT_REJECTED)
            after = self._counts()
            self.engine.execute(f"DELETE FROM {STAGE}")
            self._set_position(end)
        return LoadResult(stage.num_rows, after[0] - before[0], after[1] - before[1], end)

    def load_all(self, journal: Journal, *, max_bytes: int = 64 * 1024 * 1024) -> LoadResult:
        """Load until the journal's durable end, as it was when called, is reached.

        Stopping at the end seen on entry (not the moving end) matters under sustained traffic: chasing the
        moving end turned the loader into a busy loop of tiny loads, each paying the fixed cost of a
        transaction, which took half of the server's CPU (benchmarks/, docs/performance.md).
        """
        target = journal.committed
        lines = accepted = rejected = 0
        while True:
            result = self.load(journal, max_bytes=max_bytes)
            lines, accepted, rejected = lines + result.lines, accepted + result.accepted, rejected + result.rejected
            if result.position >= target:
                return LoadResult(lines, accepted, rejected, result.position)

    def _counts(self) -> tuple[int, int]:
        row = self.engine.fetch_one(
            "SELECT (SELECT coalesce(max(seq), 0) FROM raw_events),"
            " (SELECT coalesce(max(seq), 0) FROM rejected_messages)"
        )
        assert row is not None
        return int(row[0]), int(row[1])

    def _set_position(self, pos: Position) -> None:
        self.engine.execute("UPDATE _cdp_journal_position SET segment = ?, byte_offset = ?", (pos.segment, pos.offset))

    def rejected(self, source_id: str | None, limit: int) -> pa.Table:
        """The newest ``limit`` rejected items (of one source, or all), newest first."""
        where, params = ("WHERE source_id = ?", (source_id, limit)) if source_id else ("", (limit,))
        return self.engine.fetch_arrow(
            "SELECT seq, source_id, received_at, code, reason, payload FROM rejected_messages "
            f"{where} ORDER BY seq DESC LIMIT ?",
            params,
        )

    # -- consumers ------------------------------------------------------------------------------------------
    def offset(self, consumer: str) -> int:
        row = self.engine.fetch_one("SELECT seq FROM consumer_offsets WHERE consumer = ?", (consumer,))
        return int(row[0]) if row else 0

    def read(self, consumer: str, *, limit: int = 10_000) -> pa.Table:
        """The next ``limit`` messages after the consumer's committed offset, in ``seq`` order."""
        return self.engine.fetch_arrow(
            "SELECT * FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (self.offset(consumer), limit)
        )

    def commit(self, consumer: str, seq: int) -> None:
        """Record that ``consumer`` has processed everything up to and including ``seq``."""
        self.engine.execute(
            "INSERT INTO consumer_offsets (consumer, seq, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (consumer) DO UPDATE SET seq = excluded.seq, updated_at = excluded.updated_at",
            (consumer, seq, datetime.now(UTC)),
        )
