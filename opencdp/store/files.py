"""Reading import files (CSV, JSON Lines, Parquet) with DuckDB's own readers, in memory.

Whatever the configured engine, files are read by an in-memory DuckDB: it reads and types millions of rows
in C++ where a Python loop would crawl, and it never touches the data directory's database (which a running
server may hold). The importer (``opencdp.collect.imports``) runs its set-based SQL here, in DuckDB's dialect,
and hands the results on as Arrow.

Every file becomes the table ``src``: one row per data row, every column as text (types are the mapping's
business), plus ``_file`` (the file's name) and ``_row`` (1 = the first data row). Rows the reader cannot
split into the header's columns become ``src_rejects`` (file, row, column, reason, raw), never dropped.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import duckdb
import pyarrow as pa

from opencdp.errors import Rejected

FileFormat = Literal["csv", "jsonl", "parquet"]
FORMATS: dict[str, FileFormat] = {
    ".csv": "csv",
    ".tsv": "csv",
    ".txt": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
MAX_LINE_BYTES = 32 * 1024 * 1024


def file_format(path: Path) -> FileFormat:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise Rejected(
            f"{path.name}: unknown file type {path.suffix!r}; use .csv, .tsv, .jsonl, .ndjson or .parquet",
            code="unsupported_file_type",
        )
    return fmt


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class FileReader:
    """An in-memory DuckDB holding the rows of the files being imported."""

    def __init__(self, *, memory_limit: str = "2GB") -> None:
        self._con = duckdb.connect(":memory:")
        # One thread keeps the reader's row order (and so ``_row``) the file's order; the bounded memory makes
        # DuckDB spill to disk instead of holding a 2 GB file in RAM.
        self._q("SET threads = 1")
        self._q(f"SET memory_limit = '{memory_limit}'")
        self._spill = tempfile.mkdtemp(prefix="opencdp-import-")  # where DuckDB spills what exceeds the limit
        self._q("SET temp_directory = ?", [self._spill])
        self._q("SET TimeZone = 'UTC'")
        self._q("SET preserve_insertion_order = true")
        self.columns: list[str] = []

    def load(self, paths: Sequence[Path]) -> list[str]:
        """Read the files into ``src`` (and ``src_rejects``); returns the data columns, in the first file's order."""
        self._q("DROP TABLE IF EXISTS src")
        self._q(
            "CREATE OR REPLACE TABLE src_rejects "
            "(_file VARCHAR, _row BIGINT, column_name VARCHAR, reason VARCHAR, raw VARCHAR)"
        )
        for path in paths:
            self._load_one(path)
        if not self._has_table("src"):
            raise Rejected("no rows to import", code="empty_file")
        names = [str(r[0]) for r in self._q("SELECT name FROM pragma_table_info('src')")]
        self.columns = [c for c in names if c not in ("_file", "_row")]
        return self.columns

    def _has_table(self, name: str) -> bool:
        return self.count("SELECT count(*) FROM information_schema.tables WHERE table_name = ?", [name]) > 0

    def _load_one(self, path: Path) -> None:
        if not path.is_file():
            raise Rejected(f"{path}: no such file", code="file_not_found")
        if path.stat().st_size == 0:
            raise Rejected(f"{path.name}: the file is empty", code="empty_file")
        fmt = file_format(path)
        try:
            select = {"csv": self._csv, "jsonl": self._jsonl, "parquet": self._parquet}[fmt](path)
            if self._has_table("src"):  # files with other columns: the union of their columns, NULL where absent
                self._q(f"CREATE OR REPLACE TABLE src AS SELECT * FROM src UNION ALL BY NAME {select}")
            else:
                self._q(f"CREATE TABLE src AS {select}")
        except duckdb.Error as exc:
            first = str(exc).splitlines()[0]
            raise Rejected(f"{path.name}: cannot be read as {fmt}: {first}", code="unreadable_file") from exc

    def _csv(self, path: Path) -> str:
        # Every field as text; the delimiter and quoting are sniffed. Rows with too many or too few fields go to
        # DuckDB's reject tables, numbered by their line in the file.
        self._q("DROP TABLE IF EXISTS reject_errors")
        self._q("DROP TABLE IF EXISTS reject_scans")
        self._q(
            f"CREATE OR REPLACE TEMP TABLE _csv AS SELECT * FROM read_csv(?, header = true, all_varchar = true, "
            f"store_rejects = true, max_line_size = {MAX_LINE_BYTES}, encoding = 'utf-8')",
            [str(path)],
        )
        header_lines = 1
        self._q(
            "INSERT INTO src_rejects SELECT ?, line - ?, column_name, error_type || ': ' || error_message, csv_line "
            "FROM reject_errors",
            [path.name, header_lines],
        )
        # ``_row`` counts data rows, the rejected ones included: the k-th row read is row k plus the number of
        # rejected rows before it (a rejected row precedes it when fewer than k rows were read before that one).
        self._q("CREATE OR REPLACE TEMP TABLE _bad AS SELECT DISTINCT line - ? AS r FROM reject_errors", [header_lines])
        self._q(
            "CREATE OR REPLACE TEMP TABLE _bad_before AS "
            "SELECT r - row_number() OVER (ORDER BY r) AS read_before FROM _bad"
        )
        return (
            f"SELECT * EXCLUDE (_k), {_sql_string(path.name)} AS _file, "
            "_k + (SELECT count(*) FROM _bad_before WHERE read_before < _k) AS _row "
            "FROM (SELECT *, row_number() OVER () AS _k FROM _csv)"
        )

    def _jsonl(self, path: Path) -> str:
        # Read line by line as text, so that a malformed line is a reject with its number, not a failed file.
        self._q(
            "CREATE OR REPLACE TEMP TABLE _lines AS SELECT row_number() OVER () AS _row, line FROM read_csv(?, "
            "columns = {'line': 'VARCHAR'}, header = false, delim = chr(1), quote = '', escape = '', "
            f"max_line_size = {MAX_LINE_BYTES}, auto_detect = false)",
            [str(path)],
        )
        self._q(
            "INSERT INTO src_rejects SELECT ?, _row, NULL, 'not a JSON object', line FROM _lines "
            "WHERE line IS NOT NULL AND trim(line) <> '' AND (NOT json_valid(line) OR json_type(line) <> 'OBJECT')",
            [path.name],
        )
        keys = [
            r[0]
            for r in self._q(
                "SELECT DISTINCT unnest(json_keys(line)) FROM _lines "
                "WHERE json_valid(line) AND json_type(line) = 'OBJECT'"
            )
        ]
        if not keys:
            raise Rejected(f"{path.name}: no JSON objects in the file", code="empty_file")
        picks = ", ".join(
            f"CASE WHEN json_type(line -> {_sql_string('$.' + _json_path_key(k))}) IN ('OBJECT', 'ARRAY') "
            f"THEN CAST(line -> {_sql_string('$.' + _json_path_key(k))} AS VARCHAR) "
            f"ELSE line ->> {_sql_string('$.' + _json_path_key(k))} END AS {_quote(k)}"
            for k in keys
        )
        return (
            f"SELECT {picks}, {_sql_string(path.name)} AS _file, _row FROM _lines "
            "WHERE json_valid(line) AND json_type(line) = 'OBJECT'"
        )

    def _parquet(self, path: Path) -> str:
        source = f"read_parquet({_sql_string(str(path))}, file_row_number = true)"
        described = self._q(f"DESCRIBE SELECT * FROM {source}")
        picks = []
        for name, type_, *_ in described:
            if name == "file_row_number":
                continue
            nested = any(t in str(type_) for t in ("STRUCT", "[]", "MAP", "JSON"))
            value = f"to_json({_quote(name)})" if nested else _quote(name)
            picks.append(f"CAST({value} AS VARCHAR) AS {_quote(name)}")
        return (
            f"SELECT {', '.join(picks)}, {_sql_string(path.name)} AS _file, file_row_number + 1 AS _row FROM {source}"
        )

    # -- running SQL ------------------------------------------------------------------------------------------
    def _q(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        # DuckDB keeps a statement's result open until it is read to the end: always read it.
        rows: list[tuple[Any, ...]] = self._con.execute(sql, list(params)).fetchall()
        return rows

    def execute(self, sql: str, params: Sequence[object] = ()) -> None:
        self._q(sql, params)

    def arrow(self, sql: str, params: Sequence[object] = ()) -> pa.Table:
        result: pa.Table = self._con.sql(sql, params=list(params) or None).to_arrow_table()
        return result

    def count(self, sql: str, params: Sequence[object] = ()) -> int:
        """The integer a ``SELECT count(*) ...`` returns."""
        rows = self._q(sql, params)
        return int(rows[0][0]) if rows and rows[0][0] is not None else 0

    def register(self, name: str, table: pa.Table) -> None:
        self._con.register(name, table)

    def close(self) -> None:
        self._con.close()
        shutil.rmtree(self._spill, ignore_errors=True)


def _sql_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _json_path_key(key: str) -> str:
    return '"' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'
