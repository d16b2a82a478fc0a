"""Read-only SQL for people and tools (``opencdp query``, the admin query endpoint)."""

from __future__ import annotations

import pyarrow as pa
import sqlglot
from sqlglot import exp

from opencdp.errors import EngineError, Rejected
from opencdp.store.engine import Engine

_READ_ONLY = (exp.Select, exp.SetOperation, exp.Describe, exp.Show)
_FORBIDDEN = (exp.Insert, exp.Update, exp.Delete, exp.Create, exp.Drop, exp.Alter, exp.Command, exp.Copy)


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
