"""PostgreSQL: the second engine, running the same SQL (transpiled from DuckDB's dialect by sqlglot)."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg import sql as pgsql
from psycopg.types.string import TextLoader

from opencdp.errors import Transient
from opencdp.store.engine import Capabilities, Engine


class PostgresEngine(Engine):
    data_errors = (psycopg.DataError,)
    capabilities = Capabilities(
        dialect="postgres", secondary_indexes=True, max_identifier_length=63, concurrent_processes=True
    )

    def __init__(self, dsn: str, *, schema: str = "opencdp") -> None:
        super().__init__()
        self.dsn = dsn
        self.schema = schema
        conn = self._open()  # fail early, with a clear message, when the server cannot be reached
        with conn:
            conn.execute(pgsql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(pgsql.Identifier(schema)))
        self.extensions = self._fuzzystrmatch()

    def _fuzzystrmatch(self) -> str:
        """The schema holding the ``fuzzystrmatch`` extension (Levenshtein distance for matching), installed
        once per database (it is one of PostgreSQL's trusted contrib extensions); it joins the search path."""
        for _ in range(3):
            with self._open() as conn:
                row = conn.execute(
                    "SELECT n.nspname FROM pg_extension AS e JOIN pg_namespace AS n ON n.oid = e.extnamespace "
                    "WHERE e.extname = 'fuzzystrmatch'"
                ).fetchone()
                if row:
                    return str(row[0])
                try:
                    conn.execute("CREATE SCHEMA IF NOT EXISTS opencdp_extensions")
                    conn.execute("CREATE EXTENSION IF NOT EXISTS fuzzystrmatch SCHEMA opencdp_extensions")
                except psycopg.errors.UniqueViolation:  # another process created it first: read it again
                    continue
        raise Transient("cannot install the fuzzystrmatch extension", code="engine_extension")

    def _open(self) -> psycopg.Connection[Any]:
        try:
            return psycopg.connect(self.dsn, connect_timeout=5)
        except psycopg.OperationalError as exc:
            raise Transient(f"cannot reach PostgreSQL ({exc})", code="engine_unreachable") from exc

    def _connect(self) -> Any:
        conn = self._open()
        # JSON comes back as text, as from DuckDB, so callers see one shape whatever the engine.
        for json_type in ("json", "jsonb"):
            conn.adapters.register_loader(json_type, TextLoader)
        conn.execute(
            pgsql.SQL("SET search_path TO {}, {}").format(
                pgsql.Identifier(self.schema), pgsql.Identifier(self.extensions)
            )
        )
        conn.execute("SET TIME ZONE 'UTC'")  # as on DuckDB: timestamps in UTC, exact interval arithmetic
        conn.commit()
        conn.autocommit = True
        return conn

    def _serialize(self, conn: Any, serial: str) -> None:
        # A transaction-level advisory lock: released by COMMIT or ROLLBACK. Under READ COMMITTED every
        # statement after it sees what the previous holder committed.
        key = int.from_bytes(hashlib.sha256(f"opencdp:{serial}".encode()).digest()[:8], "big", signed=True)
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (key,))

    def _changed(self, cursor: Any) -> int:
        return int(cursor.rowcount)

    def _append(self, conn: Any, table: str, rows: pa.Table) -> None:
        # Arrow -> CSV (in C++) -> COPY: no Python loop per row. Strings are always quoted, so an empty
        # string stays an empty string while a null (written bare) stays NULL.
        buf = io.BytesIO()
        pacsv.write_csv(rows, buf, pacsv.WriteOptions(include_header=False, quoting_style="needed"))
        stmt = pgsql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
            pgsql.Identifier(table), pgsql.SQL(", ").join(pgsql.Identifier(c) for c in rows.column_names)
        )
        with conn.cursor() as cur, cur.copy(stmt) as copy:
            copy.write(buf.getvalue())

    def _copy_tsv(self, conn: Any, table: str, path: Path, columns: Sequence[tuple[str, str]]) -> None:
        # CSV mode treats backslashes literally (text mode would unescape JSON's); \x01 never occurs in the
        # file, so quoting is off in effect, and an unquoted empty field is NULL.
        stmt = pgsql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv, DELIMITER E'\\t', QUOTE E'\\x01', NULL '')").format(
            pgsql.Identifier(table), pgsql.SQL(", ").join(pgsql.Identifier(name) for name, _ in columns)
        )
        with conn.cursor() as cur, cur.copy(stmt) as copy, path.open("rb") as f:
            while chunk := f.read(1 << 20):
                copy.write(chunk)

    def _fetch_arrow(self, conn: Any, sql: str, params: Sequence[object]) -> pa.Table:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            if cur.description is None:
                return pa.table({})
            names = [d.name for d in cur.description]
            rows = cur.fetchall()
        return pa.table({n: pa.array([r[i] for r in rows]) for i, n in enumerate(names)})

    def drop_schema(self) -> None:
        """Remove the schema and everything in it (tests use one schema each)."""
        with self._open() as conn:
            conn.execute(pgsql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(pgsql.Identifier(self.schema)))
