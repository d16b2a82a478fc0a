"""The storage-engine interface.

Every other package hands SQL (authored in the DuckDB dialect) to an :class:`Engine`; only this package knows
which engine runs it. The base class owns the shared flow (transpile once per statement, log, run, wrap
errors together with the SQL); a backend supplies a connection per thread and a bulk ``append``.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, final

import pyarrow as pa
import sqlglot
from sqlglot import exp

from opencdp.errors import EngineError, UnreadableInput

log = logging.getLogger("opencdp.store")


@dataclass(frozen=True)
class Capabilities:
    """What an engine can do, so callers ask "can you?" instead of "are you Postgres?"."""

    dialect: str
    """sqlglot dialect name the engine speaks."""
    secondary_indexes: bool
    """Whether B-tree indexes help point and range look-ups (DuckDB relies on zone maps instead)."""
    max_identifier_length: int
    concurrent_processes: bool
    """Whether several OS processes may write at once (PostgreSQL yes, embedded DuckDB no)."""
    deleted_rows_estimated: bool = False
    """Whether the planner counts a table's deleted rows in its size estimate until the table is dropped (DuckDB
    does): a working table emptied after a backfill's batch would be planned as that big in every later
    micro-batch (the profiles stage's activity copy then built its join on the activity: 120 ms instead of 20)."""


def _percent_escaped(node: exp.Expr) -> exp.Expr:
    """A string literal with ``%`` doubled: psycopg reads ``%`` as the start of a placeholder in any statement
    run with parameters (and the engine always passes them), so a literal ``%`` must reach it as ``%%``."""
    if isinstance(node, exp.Literal) and node.is_string and "%" in node.this:
        return exp.Literal.string(node.this.replace("%", "%%"))
    return node


@lru_cache(maxsize=4096)
def _transpile(sql: str, dialect: str) -> str:
    if dialect == "duckdb":
        return sql
    trees = sqlglot.parse(sql, read="duckdb")
    return ";\n".join(t.transform(_percent_escaped).sql(dialect=dialect) for t in trees if t is not None)


SCRATCH_ESTIMATE_ROWS = 10_000
"""An engine that counts deleted rows in its estimates (``Capabilities.deleted_rows_estimated``) gets a working
table made again once this many rows were deleted from it: a micro-batch's working tables hold a few thousand
rows, the tables they are joined with hundreds of thousands and more; making one again costs a quarter of a
millisecond more than emptying it."""


class Engine(ABC):
    """A SQL engine holding OpenCDP's tables. Thread-safe: each thread gets its own connection."""

    capabilities: Capabilities
    data_errors: tuple[type[Exception], ...] = ()
    """Driver exceptions that mean "the data is malformed" (retrying the same input cannot help)."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._conns: list[Any] = []
        self._conns_lock = threading.Lock()
        self._serial_locks: dict[str, threading.Lock] = {}

    # -- what a backend supplies ------------------------------------------------------------------------------
    @abstractmethod
    def _connect(self) -> Any:
        """A new DB-API connection for the calling thread."""

    @abstractmethod
    def _append(self, conn: Any, table: str, rows: pa.Table) -> None:
        """Bulk-insert an Arrow table whose column names match ``table``'s."""

    @abstractmethod
    def _fetch_arrow(self, conn: Any, sql: str, params: Sequence[object]) -> pa.Table: ...

    @abstractmethod
    def _changed(self, cursor: Any) -> int:
        """How many rows the data-changing statement just run on ``cursor`` inserted, updated or deleted."""

    @abstractmethod
    def _copy_tsv(self, conn: Any, table: str, path: Path, columns: Sequence[tuple[str, str]]) -> None:
        """Bulk-insert a tab-separated file (no header, no quoting or escaping, empty field = NULL)."""

    def _begin(self, conn: Any) -> None:
        conn.execute("BEGIN")

    def _commit(self, conn: Any) -> None:
        conn.execute("COMMIT")

    def _rollback(self, conn: Any) -> None:
        conn.execute("ROLLBACK")

    @abstractmethod
    def _serialize(self, conn: Any, serial: str) -> None:
        """In a transaction that just began: wait for other processes' transactions on ``serial``, and hold the
        turn until this one ends (the turn among this process's threads is already taken)."""

    # -- the shared flow ----------------------------------------------------------------------------------------
    @final
    def render(self, sql: str) -> str:
        """The statement as this engine will run it (authored in DuckDB's dialect)."""
        return _transpile(sql, self.capabilities.dialect)

    @final
    def _conn(self) -> Any:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            self._local.conn = conn
            self._local.depth = 0
            self._local.scratch = set()
            self._local.emptied = {}
            self._local.serials = frozenset()
            with self._conns_lock:
                self._conns.append(conn)
        return conn

    @final
    def execute(self, sql: str, params: Sequence[object] = ()) -> None:
        rendered = self.render(sql)
        log.debug("sql: %s", rendered)
        try:
            self._conn().execute(rendered, params)
        except Exception as exc:
            raise EngineError(f"{type(exc).__name__}: {exc}", sql=rendered) from exc

    @final
    def execute_native(self, sql: str) -> None:
        """Run a statement written in this engine's own dialect, as is (DDL that cannot be transpiled)."""
        log.debug("sql: %s", sql)
        try:
            self._conn().execute(sql)
        except Exception as exc:
            raise EngineError(f"{type(exc).__name__}: {exc}", sql=sql) from exc

    @final
    def execute_changed(self, sql: str, params: Sequence[object] = ()) -> int:
        """Run an INSERT, UPDATE or DELETE; returns how many rows it changed (a loop that repeats a relaxation
        until nothing changes needs no extra statement to find out)."""
        rendered = self.render(sql)
        log.debug("sql: %s", rendered)
        try:
            return self._changed(self._conn().execute(rendered, params))
        except Exception as exc:
            raise EngineError(f"{type(exc).__name__}: {exc}", sql=rendered) from exc

    @final
    def fetch_all(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        rendered = self.render(sql)
        log.debug("sql: %s", rendered)
        try:
            cur = self._conn().execute(rendered, params)
            return [tuple(r) for r in cur.fetchall()]
        except Exception as exc:
            raise EngineError(f"{type(exc).__name__}: {exc}", sql=rendered) from exc

    @final
    def fetch_one(self, sql: str, params: Sequence[object] = ()) -> tuple[Any, ...] | None:
        rows = self.fetch_all(sql, params)
        return rows[0] if rows else None

    @final
    def fetch_arrow(self, sql: str, params: Sequence[object] = ()) -> pa.Table:
        rendered = self.render(sql)
        log.debug("sql: %s", rendered)
        try:
            return self._fetch_arrow(self._conn(), rendered, params)
        except Exception as exc:
            raise EngineError(f"{type(exc).__name__}: {exc}", sql=rendered) from exc

    @final
    def append(self, table: str, rows: pa.Table) -> int:
        """Bulk-insert ``rows`` (Arrow) into ``table``; returns the number of rows."""
        try:
            self._append(self._conn(), table, rows)
        except Exception as exc:
            raise EngineError(f"{type(exc).__name__}: {exc}", sql=f"-- append {rows.num_rows} rows to {table}") from exc
        return int(rows.num_rows)

    @final
    def copy_tsv(self, table: str, path: Path, columns: Sequence[tuple[str, str]]) -> None:
        """Bulk-insert a tab-separated file into ``table`` with the engine's own reader (no Python per row).

        ``columns`` names the file's fields in order, with their SQL types; the file has no header, no quoting
        and no escaping, and an empty field is NULL (the ingest journal's format).
        """
        try:
            self._copy_tsv(self._conn(), table, path, columns)
        except self.data_errors as exc:
            raise UnreadableInput(f"{path.name}: {type(exc).__name__}: {str(exc).splitlines()[0]}") from exc
        except Exception as exc:
            raise EngineError(f"{type(exc).__name__}: {exc}", sql=f"-- bulk read of {path.name} into {table}") from exc

    @final
    def scratch(self, tables: Mapping[str, str]) -> None:
        """Empty this connection's temporary working tables (``name: column definitions``), creating those it
        does not have yet. Each is created once per connection (the statements a stage runs per batch are
        counted: each costs planning time) and again after a rollback (which may have taken its creation
        along) or, on an engine that counts deleted rows in its estimates, once it has held
        :data:`SCRATCH_ESTIMATE_ROWS` rows since."""
        self._conn()
        made: set[str] = self._local.scratch
        emptied: dict[str, int] = self._local.emptied
        for table, columns in tables.items():
            if table in made:
                emptied[table] += self.execute_changed(f"DELETE FROM {table}")
                if not (self.capabilities.deleted_rows_estimated and emptied[table] > SCRATCH_ESTIMATE_ROWS):
                    continue
            # first use on this connection, after a rollback, or planned too big: a new table
            self.execute(f"DROP TABLE IF EXISTS {table}")
            self.execute(f"CREATE TEMP TABLE {table} ({columns})")
            made.add(table)
            emptied[table] = 0

    @final
    @contextmanager
    def transaction(self, *, serial: str | None = None) -> Iterator[None]:
        """All statements of this thread inside the block commit together or not at all (nesting joins).

        ``serial`` names a stream the transaction numbers rows of (``max(n) + 1``, e.g. the governed stream's
        ``gseq``): transactions naming the same stream take turns, across threads and, on an engine several
        processes write to, across processes. Snapshot isolation alone would let two of them read the same
        maximum and commit the same numbers (a consumer past those numbers would never see the second set). The
        turn is taken before the transaction begins, so it must be named on the outermost one."""
        conn = self._conn()
        if self._local.depth:
            if serial is not None and serial not in self._local.serials:
                raise RuntimeError(f"the turn on {serial!r} must be taken by the outermost transaction")
            self._local.depth += 1
            try:
                yield
            finally:
                self._local.depth -= 1
            return
        with self._turn(serial):
            try:
                self._begin(conn)
            except Exception as exc:
                raise EngineError(f"{type(exc).__name__}: {exc}", sql="BEGIN") from exc
            if serial is not None:
                try:
                    self._serialize(conn, serial)
                except Exception as exc:
                    self._rollback(conn)  # the transaction began: it must not stay open on this connection
                    raise EngineError(f"{type(exc).__name__}: {exc}", sql=f"(the turn on {serial})") from exc
            self._local.depth = 1
            self._local.serials = frozenset(() if serial is None else (serial,))
            try:
                yield
            except BaseException:
                self._local.depth = 0
                self._local.scratch = set()  # temporary tables created in the transaction may be gone with it
                self._rollback(conn)
                raise
            finally:
                self._local.serials = frozenset()
            self._local.depth = 0
            try:
                self._commit(conn)
            except Exception as exc:
                raise EngineError(f"{type(exc).__name__}: {exc}", sql="COMMIT") from exc

    @contextmanager
    def _turn(self, serial: str | None) -> Iterator[None]:
        """This process's turn on ``serial`` (nothing to wait for without one)."""
        if serial is None:
            yield
            return
        with self._conns_lock:
            lock = self._serial_locks.setdefault(serial, threading.Lock())
        with lock:
            yield

    def checkpoint(self, min_log_bytes: int) -> bool:
        """Write what the engine's log holds into the database file, if the log holds at least
        ``min_log_bytes``; on the calling thread, outside any transaction. Returns whether it did (not when
        another transaction is running, nor on an engine that manages this itself)."""
        return False

    def close(self) -> None:
        with self._conns_lock:
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(Exception):  # closing is best effort at shutdown
                conn.close()
        self._local = threading.local()
