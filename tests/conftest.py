"""Shared fixtures: real engines (a DuckDB file, the PostgreSQL server on loopback) and real servers."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from opencdp.config import Settings
from opencdp.store import Engine, open_engine
from tests.helpers import ServerProcess, ThreadedServer

PG_DSN = os.environ.get("OPENCDP_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")


def _require_postgres() -> None:
    try:
        psycopg.connect(PG_DSN, connect_timeout=5).close()
    except psycopg.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is not reachable at {PG_DSN} ({exc}). The store contract tests need it: start it with "
            "`pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` "
            "or set OPENCDP_TEST_POSTGRES_DSN.",
            pytrace=False,
        )


def make_settings(tmp_path: Path, engine: str, **overrides: object) -> Settings:
    schema = "t_" + uuid.uuid4().hex[:12]
    return Settings(
        data_dir=tmp_path / "data",
        engine=engine,
        postgres_dsn=PG_DSN,
        postgres_schema=schema,
        admin_token="test-admin-token",
        **overrides,
    )  # type: ignore[arg-type]


@pytest.fixture(params=["duckdb", "postgres"])
def engine_name(request: pytest.FixtureRequest) -> str:
    if request.param == "postgres":
        _require_postgres()
    return str(request.param)


@pytest.fixture
def settings(tmp_path: Path, engine_name: str) -> Iterator[Settings]:
    s = make_settings(tmp_path, engine_name)
    yield s
    if engine_name == "postgres":
        from opencdp.store.postgres_engine import PostgresEngine

        PostgresEngine(s.postgres_dsn, schema=s.postgres_schema).drop_schema()


@pytest.fixture
def engine(settings: Settings) -> Iterator[Engine]:
    eng = open_engine(settings)
    yield eng
    eng.close()


@pytest.fixture
def duck_settings(tmp_path: Path) -> Settings:
    return make_settings(tmp_path, "duckdb")


@pytest.fixture
def server(duck_settings: Settings) -> Iterator[ThreadedServer]:
    """A real OpenCDP server (uvicorn) in this process, on a free loopback port, over a DuckDB file."""
    with ThreadedServer(duck_settings) as srv:
        yield srv


@pytest.fixture
def pg_server(tmp_path: Path) -> Iterator[ThreadedServer]:
    _require_postgres()
    s = make_settings(tmp_path, "postgres")
    with ThreadedServer(s) as srv:
        yield srv
    from opencdp.store.postgres_engine import PostgresEngine

    PostgresEngine(s.postgres_dsn, schema=s.postgres_schema).drop_schema()


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[ServerProcess]:
    """``opencdp serve`` as a separate OS process (for SDKs, browsers and kill -9)."""
    proc = ServerProcess(tmp_path / "data")
    yield proc
    proc.stop()


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--update-golden", action="store_true", help="Rewrite tests/golden/ from the current output.")


@pytest.fixture
def update_golden(request: pytest.FixtureRequest) -> bool:
    return bool(request.config.getoption("--update-golden"))
