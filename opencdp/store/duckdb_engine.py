"""Embedded DuckDB: the default engine, one file in the data directory, no server."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from opencdp.errors import Transient
from opencdp.store.engine import Capabilities, Engine

MAX_LINE_BYTES = 32 * 1024 * 1024
"""Longest line the bulk reader accepts (DuckDB's default is 2 MB; a journal line holds a message of up to
the largest per-source limit, 16 MiB, plus the server's fields)."""


log = logging.getLogger("opencdp.store")
CHECKPOINT_THRESHOLD = "256MB"
JOIN_KEYS_PUSHED = 500


class DuckDBEngine(Engine):
    data_errors = (duckdb.InvalidInputException, duckdb.ConversionException)
    capabilities = Capabilities(
        dialect="duckdb",
        secondary_indexes=False,
        max_identifier_length=255,
        concurrent_processes=False,
        deleted_rows_estimated=True,
    )

    def __init__(self, path: Path | str, *, read_only: bool = False, threads: int | None = None) -> None:
        super().__init__()
        self.path = str(path)
        self.read_only = read_only
        try:
            self._root = duckdb.connect(self.path, read_only=read_only)
        except duckdb.IOException as exc:
            # Another process (a running ``opencdp serve``) holds DuckDB's single-writer lock.
            raise Transient(f"the DuckDB file {self.path} is in use by another process", code="engine_locked") from exc
        if threads is not None:
            self._root.execute(f"SET threads = {int(threads)}")
        if not read_only:
            # DuckDB checkpoints (rewrites the changed row groups into the file) whenever its WAL passes 16 MB;
            # with loads every fraction of a second that was a third of the loader's time. 256 MB makes a load of
            # 1,500 rows ~1.5x cheaper, at the price of replaying up to that much WAL after a crash. Under light
            # traffic the server's loader checkpoints sooner, between loads (checkpoint()): one inside a load's
            # commit at 256 MB stalled it for seconds.
            self._root.execute(f"SET checkpoint_threshold = '{CHECKPOINT_THRESHOLD}'")
        self._root_lock = threading.Lock()

    def _connect(self) -> Any:
        with self._root_lock:
            conn = self._root.cursor()
        conn.execute("SET TimeZone = 'UTC'")  # timestamps come back in UTC, and interval arithmetic is exact
        # A hash join whose build side has at most this many distinct keys hands them to the other side's scan as
        # an IN filter, which on a primary key is an index lookup: the identity stage joins a few hundred touched
        # nodes to the whole membership and profile index every micro-batch (DuckDB's default of 50 left those as
        # full scans; 1,000 events on a 1M-event graph: ~170 -> ~155 ms).
        conn.execute(f"SET dynamic_or_filter_threshold = {JOIN_KEYS_PUSHED}")
        return conn

    def _append(self, conn: Any, table: str, rows: pa.Table) -> None:
        conn.register("_cdp_append_src", rows)
        try:
            cols = ", ".join(f'"{c}"' for c in rows.column_names)
            conn.execute(f'INSERT INTO "{table}" ({cols}) SELECT {cols} FROM _cdp_append_src')
        finally:
            conn.unregister("_cdp_append_src")

    def _copy_tsv(self, conn: Any, table: str, path: Path, columns: Sequence[tuple[str, str]]) -> None:
        names = ", ".join(f'"{name}"' for name, _ in columns)
        spec = ", ".join(f"'{name}': '{type_}'" for name, type_ in columns)
        # \x01 never occurs in the file (JSON escapes control characters), so it stands for "no quoting".
        conn.execute(
            f"INSERT INTO \"{table}\" ({names}) SELECT {names} FROM read_csv(?, delim = '\t', quote = '\x01', "
            f"escape = '\x01', header = false, auto_detect = false, nullstr = '', max_line_size = {MAX_LINE_BYTES}, "
            f"buffer_size = {2 * MAX_LINE_BYTES}, columns = {{{spec}}})",
            [str(path)],
        )

    def _serialize(self, conn: Any, serial: str) -> None:
        """Nothing more to wait for: one process holds a DuckDB file, and its threads took turns already."""

    def _changed(self, cursor: Any) -> int:
        row = cursor.fetchone()  # DuckDB answers a data-changing statement with one row: the count
        return int(row[0]) if row else 0

    def _fetch_arrow(self, conn: Any, sql: str, params: Sequence[object]) -> pa.Table:
        result: pa.Table = conn.sql(sql, params=list(params) or None).to_arrow_table()
        return result

    def checkpoint(self, min_log_bytes: int) -> bool:
        """A ``CHECKPOINT`` once the write-ahead log holds ``min_log_bytes``. Should DuckDB refuse (older versions
        did while another connection had a transaction open), it is skipped and the next call tries again."""
        try:
            wal = Path(self.path + ".wal").stat().st_size
        except FileNotFoundError:
            return False
        if wal < min_log_bytes or self.read_only:
            return False
        try:
            self._conn().execute("CHECKPOINT")
        except duckdb.Error as exc:
            log.debug("checkpoint skipped: %s", exc)
            return False
        return True

    def close(self) -> None:
        super().close()
        self._root.close()
