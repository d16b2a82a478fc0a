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

CREATE TABLE IF NOT EXISTS imports (
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
    );

CREATE TABLE IF NOT EXISTS import_rejects (
        import_id VARCHAR NOT NULL,
        source_id VARCHAR NOT NULL,
        file VARCHAR NOT NULL,
        row_number BIGINT NOT NULL,
        column_name VARCHAR,
        reason VARCHAR NOT NULL,
        raw VARCHAR,
        rejected_at TIMESTAMPTZ NOT NULL
    );

CREATE TABLE IF NOT EXISTS _cdp_import_ids (import_id VARCHAR NOT NULL, message_id VARCHAR NOT NULL);

CREATE TABLE IF NOT EXISTS tracking_plans (
        source_id VARCHAR PRIMARY KEY,
        plan JSON NOT NULL,
        version BIGINT NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    );

CREATE TABLE IF NOT EXISTS violations (
        seq BIGINT NOT NULL,
        source_id VARCHAR NOT NULL,
        event VARCHAR,
        property VARCHAR,
        rule VARCHAR NOT NULL,
        detail VARCHAR,
        plan_version BIGINT,
        found_at TIMESTAMPTZ NOT NULL
    );

CREATE TABLE IF NOT EXISTS governance (
        seq BIGINT PRIMARY KEY,
        source_id VARCHAR NOT NULL,
        status VARCHAR NOT NULL,
        gseq BIGINT,
        governed_at TIMESTAMPTZ NOT NULL,
        released_at TIMESTAMPTZ
    );

ALTER TABLE governance ADD COLUMN IF NOT EXISTS type VARCHAR;

ALTER TABLE governance ADD COLUMN IF NOT EXISTS event VARCHAR;

ALTER TABLE governance ADD COLUMN IF NOT EXISTS message JSON;

CREATE TABLE IF NOT EXISTS transformations (
        rules JSON NOT NULL,
        version BIGINT NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    );

CREATE TABLE IF NOT EXISTS load_stats (
        loaded_at TIMESTAMPTZ NOT NULL,
        source_id VARCHAR NOT NULL,
        lines BIGINT NOT NULL,
        stored BIGINT NOT NULL
    );

CREATE TABLE IF NOT EXISTS quality_alerts (
        source_id VARCHAR NOT NULL,
        rule VARCHAR NOT NULL,
        day DATE NOT NULL,
        value DOUBLE,
        baseline DOUBLE,
        detail VARCHAR NOT NULL,
        raised_at TIMESTAMPTZ NOT NULL
    );

CREATE TABLE IF NOT EXISTS pii_policy (
        policy JSON NOT NULL,
        version BIGINT NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    );

CREATE TABLE IF NOT EXISTS pii_observations (
        source_id VARCHAR NOT NULL,
        container VARCHAR NOT NULL,
        field VARCHAR NOT NULL,
        class VARCHAR NOT NULL,
        detected_by VARCHAR NOT NULL,
        action VARCHAR NOT NULL,
        values_seen BIGINT NOT NULL,
        seen_at TIMESTAMPTZ NOT NULL
    );

CREATE TABLE IF NOT EXISTS _cdp_secrets (name VARCHAR PRIMARY KEY, value VARCHAR NOT NULL);

CREATE TABLE IF NOT EXISTS identity_nodes (
        node_id BIGINT PRIMARY KEY,
        id_type VARCHAR NOT NULL,
        id_value VARCHAR NOT NULL,
        first_seq BIGINT NOT NULL,
        first_seen TIMESTAMPTZ NOT NULL,
        last_seen TIMESTAMPTZ NOT NULL,
        messages BIGINT NOT NULL
    );

CREATE TABLE IF NOT EXISTS identity_edges (
        a BIGINT NOT NULL,
        b BIGINT NOT NULL,
        kind VARCHAR NOT NULL,
        seq BIGINT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL
    );

ALTER TABLE identity_nodes ADD COLUMN IF NOT EXISTS cluster BIGINT;

ALTER TABLE identity_nodes ADD COLUMN IF NOT EXISTS shared VARCHAR;

ALTER TABLE identity_nodes ADD COLUMN IF NOT EXISTS id_key UUID;

UPDATE identity_nodes SET id_key = CAST(md5(id_type || ':' || id_value) AS UUID) WHERE id_key IS NULL;

CREATE TABLE IF NOT EXISTS identity_conflicts (
        a BIGINT NOT NULL,
        b BIGINT NOT NULL,
        reason VARCHAR NOT NULL,
        found_at TIMESTAMPTZ NOT NULL
    );

CREATE TABLE IF NOT EXISTS identity_blocked (
        id_type VARCHAR NOT NULL,
        id_value VARCHAR NOT NULL,
        hits BIGINT NOT NULL,
        last_seen TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (id_type, id_value)
    );

CREATE TABLE IF NOT EXISTS identity_cannot_link (
        a BIGINT NOT NULL,
        b BIGINT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL
    );

CREATE TABLE IF NOT EXISTS message_identities (seq BIGINT NOT NULL, node_id BIGINT NOT NULL);

CREATE TABLE IF NOT EXISTS identity_membership (
        node_id BIGINT PRIMARY KEY,
        profile_id VARCHAR NOT NULL,
        since TIMESTAMPTZ NOT NULL
    );

CREATE TABLE IF NOT EXISTS profiles_index (
        profile_id VARCHAR PRIMARY KEY,
        first_seq BIGINT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL
    );

CREATE SEQUENCE IF NOT EXISTS profile_keys;

ALTER TABLE profiles_index ADD COLUMN IF NOT EXISTS profile_key BIGINT;

ALTER TABLE identity_membership ADD COLUMN IF NOT EXISTS profile_key BIGINT;

CREATE TABLE IF NOT EXISTS profile_aliases (
        alias VARCHAR PRIMARY KEY,
        profile_id VARCHAR NOT NULL,
        merged_at TIMESTAMPTZ NOT NULL
    );

CREATE TABLE IF NOT EXISTS identity_events (
        kind VARCHAR NOT NULL,
        profile_id VARCHAR NOT NULL,
        other_profile_id VARCHAR,
        happened_at TIMESTAMPTZ NOT NULL
    );

CREATE TABLE IF NOT EXISTS identity_match_records (
        match_id BIGINT PRIMARY KEY,
        match_key VARCHAR NOT NULL,
        node_id BIGINT NOT NULL,
        seq BIGINT NOT NULL,
        first_name VARCHAR,
        last_name VARCHAR,
        birth_date VARCHAR,
        house_number VARCHAR,
        street VARCHAR,
        city VARCHAR,
        postal_code VARCHAR,
        region VARCHAR,
        national_id VARCHAR,
        email VARCHAR,
        phone VARCHAR
    );

CREATE TABLE IF NOT EXISTS identity_matches (
        id_l BIGINT NOT NULL,
        id_r BIGINT NOT NULL,
        node_l BIGINT NOT NULL,
        node_r BIGINT NOT NULL,
        g_first_name SMALLINT,
        g_last_name SMALLINT,
        g_birth_date SMALLINT,
        g_house_number SMALLINT,
        g_street SMALLINT,
        g_city SMALLINT,
        g_postal_code SMALLINT,
        g_region SMALLINT,
        g_national_id SMALLINT,
        g_email SMALLINT,
        g_phone SMALLINT,
        match_weight DOUBLE NOT NULL,
        match_probability DOUBLE NOT NULL,
        status VARCHAR NOT NULL,
        decision VARCHAR,
        model_version BIGINT NOT NULL,
        scored_at TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (id_l, id_r)
    );

CREATE TABLE IF NOT EXISTS identity_match_model (
        model VARCHAR NOT NULL,
        version BIGINT NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    );

ALTER TABLE identity_cannot_link ADD COLUMN IF NOT EXISTS reason VARCHAR;

ALTER TABLE identity_edges ADD COLUMN IF NOT EXISTS probability DOUBLE;

CREATE TABLE IF NOT EXISTS trait_observations (
        seq BIGINT NOT NULL,
        node_id BIGINT NOT NULL,
        source_id VARCHAR NOT NULL,
        origin VARCHAR NOT NULL,
        trait VARCHAR NOT NULL,
        value VARCHAR NOT NULL,
        verified BOOLEAN NOT NULL,
        observed_at TIMESTAMPTZ NOT NULL
    );

CREATE TABLE IF NOT EXISTS activity (
        seq BIGINT NOT NULL,
        node_id BIGINT,
        anchor BIGINT,
        source_id VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,
        name VARCHAR,
        grain VARCHAR,
        ts TIMESTAMPTZ NOT NULL,
        item_key VARCHAR,
        order_id VARCHAR,
        amount DOUBLE,
        currency VARCHAR,
        props JSON
    );

CREATE TABLE IF NOT EXISTS profile_traits (
        profile_id VARCHAR NOT NULL,
        trait VARCHAR NOT NULL,
        value VARCHAR NOT NULL,
        source_id VARCHAR NOT NULL,
        origin VARCHAR NOT NULL,
        from_record BOOLEAN NOT NULL,
        seq BIGINT NOT NULL,
        observed_at TIMESTAMPTZ NOT NULL,
        rule VARCHAR NOT NULL
    );

CREATE TABLE IF NOT EXISTS profiles_dirty (profile_id VARCHAR NOT NULL);

CREATE TABLE IF NOT EXISTS profile_settings (
        settings VARCHAR NOT NULL,
        version BIGINT NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    );

CREATE TABLE IF NOT EXISTS trait_definitions (
        traits VARCHAR NOT NULL,
        version BIGINT NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    );

CREATE TABLE IF NOT EXISTS _cdp_profile_shape (shape VARCHAR NOT NULL);

CREATE TABLE IF NOT EXISTS profile_nodes (
        node_id BIGINT NOT NULL,
        profile_key BIGINT NOT NULL
    );

CREATE TABLE IF NOT EXISTS golden_columns_kept (since TIMESTAMPTZ NOT NULL);

CREATE TABLE IF NOT EXISTS activity_properties (
        path VARCHAR PRIMARY KEY,
        col VARCHAR NOT NULL,
        added_at TIMESTAMPTZ NOT NULL
    );

CREATE TABLE IF NOT EXISTS audiences (
        name VARCHAR PRIMARY KEY,
        definition VARCHAR NOT NULL,
        version BIGINT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL,
        evaluated_at TIMESTAMPTZ
    );

CREATE TABLE IF NOT EXISTS audience_members (
        audience VARCHAR NOT NULL,
        profile_id VARCHAR NOT NULL,
        since TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (audience, profile_id)
    );

ALTER TABLE audience_members ADD COLUMN IF NOT EXISTS profile_key BIGINT;

CREATE TABLE IF NOT EXISTS audience_changes (
        change_seq BIGINT NOT NULL,
        audience VARCHAR NOT NULL,
        profile_id VARCHAR NOT NULL,
        change VARCHAR NOT NULL,
        cause VARCHAR NOT NULL,
        happened_at TIMESTAMPTZ NOT NULL
    );

CREATE TABLE IF NOT EXISTS journeys (
        name VARCHAR PRIMARY KEY,
        definition VARCHAR NOT NULL,
        version BIGINT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    );

CREATE TABLE IF NOT EXISTS journey_states (
        journey VARCHAR NOT NULL,
        profile_id VARCHAR NOT NULL,
        entry BIGINT NOT NULL,
        step INTEGER NOT NULL,
        due_at TIMESTAMPTZ NOT NULL,
        status VARCHAR NOT NULL,
        entered_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    );

CREATE TABLE IF NOT EXISTS journey_events (
        journey VARCHAR NOT NULL,
        entry BIGINT NOT NULL,
        seq BIGINT NOT NULL,
        name VARCHAR NOT NULL,
        properties JSON,
        happened_at TIMESTAMPTZ NOT NULL
    );

CREATE TABLE IF NOT EXISTS journey_sends (
        send_seq BIGINT NOT NULL,
        journey VARCHAR NOT NULL,
        entry BIGINT NOT NULL,
        step INTEGER NOT NULL,
        profile_id VARCHAR NOT NULL,
        destination VARCHAR NOT NULL,
        payload JSON NOT NULL,
        created_at TIMESTAMPTZ NOT NULL
    );

CREATE TABLE IF NOT EXISTS consumer_offsets (
        consumer VARCHAR PRIMARY KEY,
        seq BIGINT NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    );

CREATE TABLE IF NOT EXISTS destinations (
        name VARCHAR PRIMARY KEY,
        kind VARCHAR NOT NULL,
        config VARCHAR NOT NULL,
        version BIGINT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    );

CREATE TABLE IF NOT EXISTS destination_offsets (
        destination VARCHAR NOT NULL,
        stream VARCHAR NOT NULL,
        upto BIGINT,
        PRIMARY KEY (destination, stream)
    );

CREATE TABLE IF NOT EXISTS outbox (
        delivery_id BIGINT PRIMARY KEY,
        destination VARCHAR NOT NULL,
        idempotency_key VARCHAR NOT NULL,
        kind VARCHAR NOT NULL,
        audience VARCHAR,
        change VARCHAR,
        cause VARCHAR,
        profile_id VARCHAR,
        gseq BIGINT,
        payload VARCHAR,
        happened_at TIMESTAMPTZ NOT NULL,
        state VARCHAR NOT NULL,
        attempts INTEGER NOT NULL,
        next_at TIMESTAMPTZ NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        delivered_at TIMESTAMPTZ,
        last_error VARCHAR,
        replays INTEGER NOT NULL,
        UNIQUE (destination, idempotency_key)
    );

CREATE TABLE IF NOT EXISTS delivery_attempts (
        delivery_id BIGINT NOT NULL,
        destination VARCHAR NOT NULL,
        attempt INTEGER NOT NULL,
        outcome VARCHAR NOT NULL,
        error VARCHAR,
        started_at TIMESTAMPTZ NOT NULL,
        took_ms DOUBLE NOT NULL
    );

CREATE INDEX IF NOT EXISTS profile_traits_profile ON profile_traits (profile_id);

CREATE INDEX IF NOT EXISTS audience_members_profile ON audience_members (profile_id);

CREATE INDEX IF NOT EXISTS profile_nodes_node ON profile_nodes (node_id);

CREATE OR REPLACE VIEW events AS
    SELECT seq, message_id, source_id, type, event, user_id, anonymous_id, timestamp, original_timestamp,
           sent_at, received_at,
           json_extract(message, '$.properties') AS properties,
           json_extract(message, '$.traits') AS traits,
           json_extract(message, '$.context') AS context,
           message
    FROM raw_events
    WHERE type <> 'record';

CREATE OR REPLACE VIEW records AS
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
    WHERE type = 'record';

CREATE OR REPLACE VIEW governed AS
    SELECT g.gseq, g.status, r.seq, r.source_id, r.message_id, coalesce(g.type, r.type) AS type,
           coalesce(g.event, r.event) AS event, r.user_id, r.anonymous_id, r.timestamp, r.original_timestamp,
           r.sent_at, r.received_at, coalesce(g.message, r.message) AS message
    FROM governance AS g JOIN raw_events AS r ON r.seq = g.seq
    WHERE g.gseq IS NOT NULL;

CREATE OR REPLACE VIEW quarantine AS
    SELECT r.seq, r.source_id, r.type, r.event, r.message_id, r.received_at,
           (SELECT string_agg(v.rule || CASE WHEN v.property IS NULL THEN '' ELSE ' ' || v.property END, ', ')
            FROM violations AS v WHERE v.seq = r.seq) AS reasons,
           r.message
    FROM governance AS g JOIN raw_events AS r ON r.seq = g.seq
    WHERE g.status = 'blocked';

CREATE OR REPLACE VIEW pii_fields AS
    SELECT source_id, container, field, class, detected_by, action, sum(values_seen) AS values_seen,
           max(seen_at) AS last_seen
    FROM pii_observations
    GROUP BY source_id, container, field, class, detected_by, action;

CREATE OR REPLACE VIEW record_profiles AS
    SELECT r.seq, r.source_id, CASE WHEN r.type = 'record' THEN r.event ELSE 'event' END AS kind,
           CASE WHEN r.type = 'record' THEN json_extract_string(r.message, '$.key') ELSE r.message_id END
               AS record_key,
           m.profile_id
    FROM raw_events AS r
    LEFT JOIN message_identities AS mi ON mi.seq = r.seq
    LEFT JOIN identity_membership AS m ON m.node_id = mi.node_id;

CREATE OR REPLACE VIEW rejects AS
    SELECT import_id, source_id, file, row_number, column_name, reason, raw, rejected_at
    FROM import_rejects;
