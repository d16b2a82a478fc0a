"""Storage: the engine interface, the ingest journal and the raw log tables. Only this package talks to an engine."""

from __future__ import annotations

from opencdp.config import Settings
from opencdp.store.engine import Capabilities, Engine
from opencdp.store.schema import migrate


def open_engine(settings: Settings, *, read_only: bool = False) -> Engine:
    """Open the configured engine (creating the data directory and tables as needed)."""
    if settings.engine == "postgres":
        from opencdp.store.postgres_engine import PostgresEngine

        engine: Engine = PostgresEngine(settings.postgres_dsn, schema=settings.postgres_schema)
    else:
        from opencdp.store.duckdb_engine import DuckDBEngine

        settings.data_dir.mkdir(parents=True, exist_ok=True)
        if read_only and not settings.duckdb_path.exists():
            engine = DuckDBEngine(settings.duckdb_path, threads=settings.engine_threads)
            migrate(engine)
            engine.close()
        engine = DuckDBEngine(settings.duckdb_path, read_only=read_only, threads=settings.engine_threads)
    if not read_only:
        migrate(engine)
    return engine


__all__ = ["Capabilities", "Engine", "migrate", "open_engine"]
