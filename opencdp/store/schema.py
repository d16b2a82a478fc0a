"""The tables and views OpenCDP keeps, as DDL authored once in DuckDB's dialect.

``migrate`` applies them idempotently; the rest of the code relies on these names. The documented, stable
SQL surface is the ``events`` view (see docs/architecture.md); tables prefixed ``_cdp_`` are internal.
"""

from __future__ import annotations

from opencdp.store.engine import Engine

SCHEMA_VERSION = 1

TABLES: tuple[str, ...] = (
    """CREATE TABLE IF NOT EXISTS _cdp_schema_version (version BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS sources (
        source_id VARCHAR PRIMARY KEY,
        name VARCHAR NOT NULL UNIQUE,
        kind VARCHAR NOT NULL,
        write_key VARCHAR NOT NULL UNIQUE,
        enabled BOOLEAN NOT NULL,
        limits JSON NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    )""",
    # The raw log: one row per accepted message, append-only, ordered by ``seq``.
    """CREATE TABLE IF NOT EXISTS raw_events (
        seq BIGINT NOT NULL,
        source_id VARCHAR NOT NULL,
        message_id VARCHAR NOT NULL,
        type VARCHAR NOT NULL,
        event VARCHAR,
        user_id VARCHAR,
        anonymous_id VARCHAR,
        timestamp TIMESTAMPTZ,
        original_timestamp TIMESTAMPTZ,
        sent_at TIMESTAMPTZ,
        received_at TIMESTAMPTZ NOT NULL,
        message JSON NOT NULL
    )""",
    # Items that failed validation, kept (not dropped) with the reason, for an operator to see and fix.
    """CREATE TABLE IF NOT EXISTS rejected_messages (
        seq BIGINT NOT NULL,
        source_id VARCHAR NOT NULL,
        received_at TIMESTAMPTZ NOT NULL,
        code VARCHAR NOT NULL,
        reason VARCHAR NOT NULL,
        payload VARCHAR NOT NULL
    )""",
    # The last journal segment loaded into the tables, and its size (one row, updated in the load transaction).
    """CREATE TABLE IF NOT EXISTS _cdp_journal_position (
        segment BIGINT NOT NULL,
        byte_offset BIGINT NOT NULL
    )""",
    # One row per import run (``opencdp import``, ``POST /admin/v1/imports``).
    """CREATE TABLE IF NOT EXISTS imports (
        import_id VARCHAR PRIMARY KEY,
        source_id VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,
        files VARCHAR NOT NULL,
        started_at TIMESTAMPTZ NOT NULL,
        finished_at TIMESTAMPTZ NOT NULL,
        rows_read BIGINT NOT NULL,
        accepted BIGINT NOT NULL,
        rejected BIGINT NOT NULL,
        duplicates BIGINT NOT NULL,
        summary JSON NOT NULL
    )""",
    # Imported rows that could not be read or lacked a required field: kept with where and why.
    """CREATE TABLE IF NOT EXISTS import_rejects (
        import_id VARCHAR NOT NULL,
        source_id VARCHAR NOT NULL,
        file VARCHAR NOT NULL,
        row_number BIGINT NOT NULL,
        column_name VARCHAR,
        reason VARCHAR NOT NULL,
        raw VARCHAR,
        rejected_at TIMESTAMPTZ NOT NULL
    )""",
    # The message ids an import wrote, while its results are counted (internal, emptied after each import).
    """CREATE TABLE IF NOT EXISTS _cdp_import_ids (import_id VARCHAR NOT NULL, message_id VARCHAR NOT NULL)""",
    # Where each consumer of the raw log has got to.
    """CREATE TABLE IF NOT EXISTS consumer_offsets (
        consumer VARCHAR PRIMARY KEY,
        seq BIGINT NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    )""",
)

INDEXES: tuple[str, ...] = (
    "CREATE UNIQUE INDEX IF NOT EXISTS raw_events_seq ON raw_events (seq)",
    "CREATE INDEX IF NOT EXISTS raw_events_message ON raw_events (source_id, message_id)",
    "CREATE INDEX IF NOT EXISTS raw_events_received ON raw_events (received_at)",
)

VIEWS: tuple[str, ...] = (
    """CREATE OR REPLACE VIEW events AS
    SELECT seq, message_id, source_id, type, event, user_id, anonymous_id, timestamp, original_timestamp,
           sent_at, received_at,
           json_extract(message, '$.properties') AS properties,
           json_extract(message, '$.traits') AS traits,
           json_extract(message, '$.context') AS context,
           message
    FROM raw_events
    WHERE type <> 'record'""",
    # Imported records (customers, orders, returns, tickets): one row per stored version of a record.
    """CREATE OR REPLACE VIEW records AS
    SELECT seq, source_id, event AS kind, message_id AS record_id,
           json_extract_string(message, '$.key') AS record_key,
           json_extract(message, '$.fields') AS fields,
           json_extract(message, '$.attributes') AS attributes,
           json_extract(message, '$.flags') AS flags,
           json_extract_string(message, '$.import.id') AS import_id,
           json_extract_string(message, '$.import.file') AS file,
           CAST(json_extract_string(message, '$.import.row') AS BIGINT) AS row_number,
           original_timestamp AS record_time,
           received_at
    FROM raw_events
    WHERE type = 'record'""",
    """CREATE OR REPLACE VIEW rejects AS
    SELECT import_id, source_id, file, row_number, column_name, reason, raw, rejected_at
    FROM import_rejects""",
)


def migrate(engine: Engine) -> None:
    """Create every table, index and view that is missing. Safe to run at every start."""
    with engine.transaction():
        for ddl in TABLES:
            engine.execute(ddl)
        if engine.capabilities.secondary_indexes:
            for ddl in INDEXES:
                engine.execute(ddl)
        for ddl in VIEWS:
            engine.execute(ddl)
        if engine.fetch_one("SELECT count(*) FROM _cdp_schema_version") == (0,):
            engine.execute("INSERT INTO _cdp_schema_version VALUES (?)", (SCHEMA_VERSION,))
        if engine.fetch_one("SELECT count(*) FROM _cdp_journal_position") == (0,):
            engine.execute("INSERT INTO _cdp_journal_position VALUES (0, 0)")
