"""Settings: one typed tree, read from ``OPENCDP_*`` environment variables (and passed down explicitly)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything OpenCDP can be configured with. Each field is also ``OPENCDP_<NAME>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="OPENCDP_", extra="ignore")

    data_dir: Path = Field(default=Path("opencdp-data"))
    """Directory holding the DuckDB file, the ingest journal, the admin token and the server's address file."""

    engine: Literal["duckdb", "postgres"] = "duckdb"
    """Storage engine: embedded DuckDB (one file in ``data_dir``) or PostgreSQL (``postgres_dsn``)."""

    engine_threads: int = Field(default_factory=lambda: max(1, len(os.sched_getaffinity(0)) - 1), gt=0)
    """Threads the embedded engine (DuckDB) may use. By default one fewer than the cores this process may run
    on, at least one: collection keeps a core to itself, and on a one- or two-core machine all of DuckDB's work
    runs on the loader's own thread, whose lower CPU priority then holds for it too."""

    postgres_dsn: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    """libpq connection string used when ``engine`` is ``postgres``."""

    postgres_schema: str = "opencdp"
    """Schema that holds OpenCDP's tables in PostgreSQL."""

    admin_token: SecretStr | None = None
    """Bearer token for the admin API. When unset, one is generated at first start and kept in
    ``data_dir/admin_token`` (mode 0600), where the CLI on the same machine finds it."""

    read_token: SecretStr | None = None
    """Bearer token for the real-time profile API (``/v1/profiles``): it reads profiles and nothing else, and is
    neither a write key nor the admin token. When unset, one is generated at first start and kept in
    ``data_dir/read_token`` (mode 0600)."""

    secrets_key: SecretStr | None = None
    """The key that seals destinations' secrets in the engine (a Fernet key). When unset, one is generated at
    first start and kept in ``data_dir/secrets_key`` (mode 0600): back it up with the data; every process that
    opens the same database needs the same key."""

    dedup_window_days: float = 7.0
    """A message whose (source, messageId) was stored within this many days is acknowledged but not stored again."""

    journal_segment_bytes: int = 64 * 1024 * 1024
    """Size at which the ingest journal starts a new segment file."""

    group_commit_max_bytes: int = 8 * 1024 * 1024
    """Upper bound on the bytes one group commit (one write + fsync) carries."""

    load_interval_seconds: float = 0.2
    """How often the loader moves journalled messages into the engine's ``raw_events`` table."""

    audience_refresh_minutes: float = Field(default=15.0, gt=0)
    """How often audiences that can change with time alone ("in the last 30 days") are evaluated in full again
    (every other audience changes only when a profile's data does, and is evaluated for it at once)."""

    outbox_retention_days: float = Field(default=30.0, ge=0)
    """Delivered rows are kept in the outboxes (with their attempts) this long after delivery, as the record a
    time-range replay and ``destinations deliveries`` read; 0 keeps them for ever. Dead letters and undelivered
    rows are never removed by age: an operator replays or discards them."""

    max_unloaded_bytes: int = 2 * 1024 * 1024 * 1024
    """Collection answers 503 + Retry-After while the loader is this far behind (journalled, not yet in the engine):
    the disk does not fill up while the engine is down or slower than the traffic."""

    checkpoint_log_bytes: int = Field(default=16 * 1024 * 1024, ge=0)
    """Under light traffic, the loader has the engine write its log into the database file (a DuckDB
    checkpoint) between two loads once the log holds this much, instead of DuckDB doing it inside a load's
    commit at 256 MB (which stalled a load for seconds). Heavy traffic still leaves it to DuckDB."""

    journal_retention_segments: int = 2
    """Fully loaded journal segments kept on disk (older ones are deleted)."""

    trusted_proxies: list[str] = Field(default_factory=list)
    """Peer addresses whose ``X-Forwarded-For`` header is believed when filling ``context.ip``."""

    fsync: bool = True
    """fsync the journal before acknowledging. Turn off only for throwaway demos: acknowledged events may
    then be lost if the machine (not just the process) crashes."""

    @property
    def duckdb_path(self) -> Path:
        return self.data_dir / "opencdp.duckdb"

    @property
    def journal_dir(self) -> Path:
        return self.data_dir / "journal"
