"""The raw log in the engine: bulk loading from the journal, deduplication, and consumer offsets.

``load`` moves journalled lines into ``raw_events`` (accepted messages) and ``rejected_messages`` (items that
failed validation) in one transaction together with the journal position, so re-running after a crash
is idempotent. Duplicates by (source_id, messageId) within the dedup window are dropped here, set-based.
Consumers (the processor of later stages) read ``raw_events`` by ``seq`` and commit their own offsets.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa

from opencdp.errors import UnreadableInput
from opencdp.store.engine import Engine
from opencdp.store.journal import COLUMNS, HELD_DIR, Journal, Position

log = logging.getLogger("opencdp.loader")

STAGE = "_cdp_load_stage"
MAX_LOAD_BYTES = 256 * 1024 * 1024
"""Journal bytes loaded in one transaction at most (the staged rows are held by the engine until commit)."""

# One load's staging area: the journal's columns plus ``pos``, numbered by a sequence in the order the engine's
# bulk reader inserts the file's lines. Temporary (per connection, never written to the engine's WAL: the staged
# rows would otherwise be logged twice, inserted and deleted, on every load).
STAGE_DDL = (
    "CREATE TEMP SEQUENCE IF NOT EXISTS _cdp_load_pos",
    f"""CREATE TEMP TABLE IF NOT EXISTS {STAGE} (
        {", ".join(f"{name} {type_}" for name, type_ in COLUMNS)},
        pos BIGINT DEFAULT nextval('_cdp_load_pos')
    )""",
)


def _client_field(column: str, path: str) -> str:
    # ``X`` lines carry no client-supplied header fields (one held a tab or newline): read those from the JSON.
    return f"CASE WHEN kind = 'X' THEN json_extract_string(CAST(doc AS JSON), '{path}') ELSE {column} END AS {column}"


_RESOLVED = f"""
    SELECT pos, source_id, timestamp, original_timestamp, sent_at, received_at, doc,
           {_client_field("message_id", "$.messageId")},
           {_client_field("type", "$.type")},
           {_client_field("event", "$.event")},
           {_client_field("user_id", "$.userId")},
           {_client_field("anonymous_id", "$.anonymousId")}
    FROM {STAGE}
    WHERE kind IN ('A', 'X')"""

# Which staged lines to keep is decided on narrow rows (position, source, messageId): the first copy of each
# message in the load, unless the raw log has it within the dedup window; each kept line gets the next ``seq``
# in journal order. Only then are the kept lines joined back to their wide columns (the JSON), so the message
# bodies never pass through a sort or a hash aggregate.
# ``timestamp`` follows Segment's clock-skew rule, receivedAt - (sentAt - originalTimestamp), computed here for a
# whole load rather than per message on the collection path; a message without a device time happened when it
# arrived. Sessions run in UTC (both engines), so the interval arithmetic is exact.
INSERT_ACCEPTED = f"""
INSERT INTO raw_events (seq, source_id, message_id, type, event, user_id, anonymous_id, timestamp,
                        original_timestamp, sent_at, received_at, message)
SELECT base.n + keep.rn, s.source_id, s.message_id, s.type, s.event, s.user_id, s.anonymous_id,
       coalesce(s.timestamp, CASE WHEN s.sent_at IS NULL OR s.original_timestamp IS NULL
                                  THEN coalesce(s.original_timestamp, s.received_at)
                                  ELSE s.received_at - (s.sent_at - s.original_timestamp) END),
       coalesce(s.original_timestamp, s.received_at), s.sent_at, s.received_at, CAST(s.doc AS JSON)
FROM (
    SELECT pos, row_number() OVER (ORDER BY pos) AS rn
    FROM (
        SELECT min(pos) AS pos, source_id, message_id
        FROM ({_RESOLVED}) AS narrow
        GROUP BY source_id, message_id
    ) AS firsts
    WHERE NOT EXISTS (
        SELECT 1 FROM raw_events AS r
        WHERE r.source_id = firsts.source_id AND r.message_id = firsts.message_id
          -- An imported record's id is a hash of its content: the same record is never stored twice, however old.
          AND (r.received_at >= ? OR r.type = 'record')
    )
) AS keep
JOIN ({_RESOLVED}) AS s ON s.pos = keep.pos
CROSS JOIN (SELECT coalesce(max(seq), 0) AS n FROM raw_events) AS base
"""

# Per load and source: the accepted lines staged and the rows stored; the difference is the duplicates dropped.
INSERT_LOAD_STATS = f"""
INSERT INTO load_stats (loaded_at, source_id, lines, stored)
SELECT ?, s.source_id, s.n, coalesce(r.n, 0)
FROM (SELECT source_id, count(*) AS n FROM {STAGE} WHERE kind IN ('A', 'X') GROUP BY source_id) AS s
LEFT JOIN (SELECT source_id, count(*) AS n FROM raw_events WHERE seq > ? GROUP BY source_id) AS r
  ON r.source_id = s.source_id
"""

INSERT_REJECTED = f"""
INSERT INTO rejected_messages (seq, source_id, received_at, code, reason, payload)
SELECT (SELECT coalesce(max(seq), 0) FROM rejected_messages) + row_number() OVER (ORDER BY pos),
       source_id, received_at,
       json_extract_string(j, '$.code'),
       json_extract_string(j, '$.reason'),
       json_extract_string(j, '$.payload')
FROM (SELECT pos, source_id, received_at, CAST(doc AS JSON) AS j FROM {STAGE} WHERE kind = 'R') AS s
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

    def __add__(self, other: LoadResult) -> LoadResult:
        return LoadResult(
            self.lines + other.lines, self.accepted + other.accepted, self.rejected + other.rejected, other.position
        )


class RawLog:
    """Reads and writes the raw log tables of one engine."""

    def __init__(self, engine: Engine, *, dedup_window: timedelta = timedelta(days=7)) -> None:
        self.engine = engine
        self.dedup_window = dedup_window

    def position(self) -> Position:
        """The last journal segment loaded, and its size (``(0, 0)``: none yet)."""
        row = self.engine.fetch_one("SELECT segment, byte_offset FROM _cdp_journal_position")
        return Position(int(row[0]), int(row[1])) if row else Position(0, 0)

    def load(self, journal: Journal) -> LoadResult:
        """Load the oldest journal segment not loaded yet (sealing the active one), in one transaction."""
        pending = journal.segments_to_load(self.position(), journal.seal())
        if not pending:
            return LoadResult(0, 0, 0, self.position())
        return self._load_or_hold(journal, *pending[0])

    def load_all(self, journal: Journal) -> LoadResult:
        """Load every segment up to the journal's end as it is when called.

        Segments are loaded together, up to :data:`MAX_LOAD_BYTES` per transaction: one large insert is much
        cheaper per row than several small ones (DuckDB writes a large insert straight into its file instead
        of logging it and rewriting it at the next checkpoint). Stopping at the end seen on entry (not the
        moving end) matters under sustained traffic: chasing it would turn the loader into a busy loop of tiny
        loads, each paying a transaction's fixed cost.
        """
        total = LoadResult(0, 0, 0, self.position())
        group: list[tuple[int, Path]] = []
        size = 0
        for segment, path in journal.segments_to_load(total.position, journal.seal()):
            segment_size = path.stat().st_size
            if group and size + segment_size > MAX_LOAD_BYTES:
                total = total + self._load_group(journal, group)
                group, size = [], 0
            group.append((segment, path))
            size += segment_size
        if group:
            total = total + self._load_group(journal, group)
        return total

    def _load_group(self, journal: Journal, group: list[tuple[int, Path]]) -> LoadResult:
        """Load segments in one transaction; when the engine cannot read one, load them one by one."""
        if len(group) == 1:
            return self._load_or_hold(journal, *group[0])
        try:
            return self._load_segments(group)
        except UnreadableInput:
            total = LoadResult(0, 0, 0, self.position())
            for segment, path in group:
                total = total + self._load_or_hold(journal, segment, path)
            return total

    def _load_or_hold(self, journal: Journal, segment: int, path: Path) -> LoadResult:
        """Load a segment; one the engine cannot read is set aside (kept, not lost) so the rest still loads."""
        try:
            return self._load_segments([(segment, path)])
        except UnreadableInput as exc:
            log.error("loader: %s; the segment is set aside in %s for an operator", exc.message, HELD_DIR)
            journal.hold(segment)
            end = Position(segment, 0)
            self._set_position(end)
            return LoadResult(0, 0, 0, end)

    def _load_segments(self, segments: list[tuple[int, Path]]) -> LoadResult:
        """Stage the segments' lines, then insert them into the raw log, all in one transaction."""
        paths = [path for _, path in segments if path.stat().st_size]
        end = Position(segments[-1][0], segments[-1][1].stat().st_size)
        if not paths:
            self._set_position(end)
            return LoadResult(0, 0, 0, end)
        since = datetime.now(UTC) - self.dedup_window
        with self.engine.transaction():
            for ddl in STAGE_DDL:
                self.engine.execute(ddl)
            self.engine.execute(f"DELETE FROM {STAGE}")
            for path in paths:
                self.engine.copy_tsv(STAGE, path, COLUMNS)
            staged = self.engine.fetch_one(f"SELECT count(*) FROM {STAGE}")
            before = self._counts()
            self.engine.execute(INSERT_ACCEPTED, (since,))
            self.engine.execute(INSERT_REJECTED)
            after = self._counts()
            self.engine.execute(INSERT_LOAD_STATS, (datetime.now(UTC), before[0]))
            self.engine.execute(f"DELETE FROM {STAGE}")
            self._set_position(end)
        lines = int(staged[0]) if staged else 0
        return LoadResult(lines, after[0] - before[0], after[1] - before[1], end)

    def _counts(self) -> tuple[int, int]:
        row = self.engine.fetch_one(
            "SELECT (SELECT coalesce(max(seq), 0) FROM raw_events),"
            " (SELECT coalesce(max(seq), 0) FROM rejected_messages)"
        )
        assert row is not None
        return int(row[0]), int(row[1])

    def _set_position(self, pos: Position) -> None:
        self.engine.execute("UPDATE _cdp_journal_position SET segment = ?, byte_offset = ?", (pos.segment, pos.offset))

    def last_seq(self) -> int:
        row = self.engine.fetch_one("SELECT coalesce(max(seq), 0) FROM raw_events")
        return int(row[0]) if row else 0

    def count_stored(self, import_id: str, source_id: str, message_ids: pa.ChunkedArray, after_seq: int) -> int:
        """How many of ``message_ids`` the raw log stored (for ``source_id``) after ``after_seq``: an import's new
        rows, the rest being duplicates of what it already held."""
        ids = pa.table({"import_id": pa.array([import_id] * len(message_ids), pa.string()), "message_id": message_ids})
        with self.engine.transaction():
            self.engine.append("_cdp_import_ids", ids)
            row = self.engine.fetch_one(
                "SELECT count(*) FROM raw_events AS r JOIN _cdp_import_ids AS i ON i.message_id = r.message_id "
                "WHERE i.import_id = ? AND r.source_id = ? AND r.seq > ?",
                (import_id, source_id, after_seq),
            )
            self.engine.execute("DELETE FROM _cdp_import_ids WHERE import_id = ?", (import_id,))
        return int(row[0]) if row else 0

    def record_import(self, summary: dict[str, Any], rejects: pa.Table | None, at: datetime) -> None:
        """Keep an import's summary (``imports``) and its rejected rows (``import_rejects``)."""
        import_id, source_id = summary["import_id"], summary["source_id"]
        with self.engine.transaction():
            self.engine.execute(
                "INSERT INTO imports (import_id, source_id, kind, files, started_at, finished_at, rows_read, accepted,"
                " rejected, duplicates, summary) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    import_id,
                    source_id,
                    summary["kind"],
                    ", ".join(summary["files"]),
                    at,
                    datetime.now(UTC),
                    summary["rows"],
                    summary["accepted"] or 0,
                    summary["rejected"],
                    summary["duplicates"] or 0,
                    json.dumps(summary),
                ),
            )
            if rejects is not None and rejects.num_rows:
                n = rejects.num_rows
                self.engine.append(
                    "import_rejects",
                    rejects.append_column("import_id", pa.array([import_id] * n, pa.string()))
                    .append_column("source_id", pa.array([source_id] * n, pa.string()))
                    .append_column("rejected_at", pa.array([at] * n, pa.timestamp("us", tz="UTC"))),
                )

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
