CREATE TABLE IF NOT EXISTS _cdp_schema_version (version BIGINT NOT NULL);

CREATE TABLE IF NOT EXISTS sources (
        source_id VARCHAR PRIMARY KEY,
        name VARCHAR NOT NULL UNIQUE,
        kind VARCHAR NOT NULL,
        write_key VARCHAR NOT NULL UNIQUE,
        enabled BOOLEAN NOT NULL,
        limits JSON NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    );

CREATE TABLE IF NOT EXISTS raw_events (
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
    );

CREATE TABLE IF NOT EXISTS rejected_messages (
        seq BIGINT NOT NULL,
        source_id VARCHAR NOT NULL,
        received_at TIMESTAMPTZ NOT NULL,
        code VARCHAR NOT NULL,
        reason VARCHAR NOT NULL,
        payload VARCHAR NOT NULL
    );

CREATE TABLE IF NOT EXISTS _cdp_journal_position (
        segment BIGINT NOT NULL,
        byte_offset BIGINT NOT NULL
    );

CREATE TABLE IF NOT EXISTS consumer_offsets (
        consumer VARCHAR PRIMARY KEY,
        seq BIGINT NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    );

CREATE OR REPLACE VIEW events AS
    SELECT seq, message_id, source_id, type, event, user_id, anonymous_id, timestamp, original_timestamp,
           sent_at, received_at,
           json_extract(message, '$.properties') AS properties,
           json_extract(message, '$.traits') AS traits,
           json_extract(message, '$.context') AS context,
           message
    FROM raw_events;
