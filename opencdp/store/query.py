"""Read-only SQL for people and tools (``opencdp query``, the admin query endpoint).

A query reads OpenCDP's tables and views and nothing else: no files, no settings or environment, no internal
tables holding secrets, no other schema (DuckDB reads any file it is pointed at; PostgreSQL's catalogs and
administrative functions are a superuser's). Checked on the parsed statement, before anything runs.
"""

from __future__ import annotations

import re

import pyarrow as pa
import sqlglot
from sqlglot import exp

from opencdp.errors import EngineError, Rejected
from opencdp.store.engine import Engine

_READ_ONLY = (exp.Select, exp.SetOperation, exp.Describe, exp.Show)
_FORBIDDEN = (exp.Insert, exp.Update, exp.Delete, exp.Create, exp.Drop, exp.Alter, exp.Command, exp.Copy)
_TABLE_FUNCTIONS = (exp.GenerateSeries, exp.Unnest)
"""The only functions a query may read rows from: everything else in ``FROM`` (``read_csv``, ``glob``, a quoted
file path DuckDB would scan) reaches outside the database."""
_HIDDEN_TABLES = ("_cdp_", "pg_", "destinations")
"""Internal tables (the PII salt is in ``_cdp_secrets``), PostgreSQL's catalogs (``pg_authid``) and destination
configurations (their secrets; ``opencdp destinations list`` shows them redacted)."""
_SCHEMAS = ("", "main", "information_schema")
_SYSTEM_FUNCTIONS = (
    "read_", "glob", "getenv", "query", "sniff_", "parquet_", "pg_", "lo_", "dblink", "set_config",
    "current_setting", "duckdb_", "sqlite_", "postgres_", "mysql_", "iceberg_", "delta_", "http",
)  # fmt: skip
"""Name prefixes of functions that read files, settings or the environment, or act on the server."""
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _outside(stmt: exp.Expr) -> str | None:
    """What in ``stmt`` reaches beyond OpenCDP's tables, if anything."""
    for table in stmt.find_all(exp.Table):
        if isinstance(table.this, exp.Func):
            if not isinstance(table.this, _TABLE_FUNCTIONS):
                return f"the table function {_name(table.this)}"
        elif not _PLAIN_NAME.fullmatch(table.name) or table.name.lower().startswith(_HIDDEN_TABLES):
            return f"the relation {table.name!r}"
        elif table.db.lower() not in _SCHEMAS or table.catalog:
            return f"the schema {table.db or table.catalog!r}"
    for func in stmt.find_all(exp.Func):
        if _name(func).startswith(_SYSTEM_FUNCTIONS):
            return f"the function {_name(func)}"
    return None


def _name(func: exp.Func) -> str:
    return (func.name if isinstance(func, exp.Anonymous) else func.sql_name()).lower()


def check_read_only(sql: str) -> str:
    """Accept one SELECT-like statement (authored in DuckDB's dialect); :class:`Rejected` otherwise."""
    try:
        statements = [s for s in sqlglot.parse(sql, read="duckdb") if s is not None]
    except sqlglot.errors.ParseError as exc:
        raise Rejected(f"cannot parse the query: {str(exc).splitlines()[0]}", code="invalid_query") from exc
    if len(statements) != 1:
        raise Rejected("send exactly one statement", code="invalid_query")
    stmt = statements[0]
    if not isinstance(stmt, _READ_ONLY) or any(stmt.find_all(*_FORBIDDEN)):
        raise Rejected("only read-only queries (SELECT, WITH ... SELECT, DESCRIBE, SHOW) are allowed", code="read_only")
    outside = _outside(stmt)
    if outside is not None:
        raise Rejected(f"queries read OpenCDP's tables and views only, not {outside}", code="outside_the_data")
    return sql


def run_read_only(engine: Engine, sql: str) -> pa.Table:
    """Run a checked read-only query inside a transaction that is always rolled back."""
    check_read_only(sql)
    result: pa.Table | None = None

    class _Rollback(Exception):
        pass

    try:
        with engine.transaction():
            if engine.capabilities.concurrent_processes:
                engine.execute("SET TRANSACTION READ ONLY")
            try:
                result = engine.fetch_arrow(sql)
            except EngineError as exc:  # a wrong query is the caller's to fix, not a reason to retry
                raise Rejected(exc.message.split("\n-- while running:")[0], code="query_failed") from exc
            raise _Rollback
    except _Rollback:
        pass
    assert result is not None
    return result
