"""The tables and views OpenCDP keeps, as DDL authored once in DuckDB's dialect.

``migrate`` applies them idempotently; the rest of the code relies on these names. The documented, stable
SQL surface is the ``events`` view (see docs/architecture.md); tables prefixed ``_cdp_`` are internal.
"""

from __future__ import annotations

import secrets

from opencdp.model.identity import NODE_KEY
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
    # Governance (the first stage over the raw log): one tracking plan per source, versioned.
    """CREATE TABLE IF NOT EXISTS tracking_plans (
        source_id VARCHAR PRIMARY KEY,
        plan JSON NOT NULL,
        version BIGINT NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    )""",
    # Every rule a message broke, with the plan version that judged it (kept when the message is released).
    """CREATE TABLE IF NOT EXISTS violations (
        seq BIGINT NOT NULL,
        source_id VARCHAR NOT NULL,
        event VARCHAR,
        property VARCHAR,
        rule VARCHAR NOT NULL,
        detail VARCHAR,
        plan_version BIGINT,
        found_at TIMESTAMPTZ NOT NULL
    )""",
    # One row per governed raw-log row: passed, flagged, blocked (held) or released; ``gseq`` orders the governed
    # stream (a released message enters it when released, after what passed before).
    """CREATE TABLE IF NOT EXISTS governance (
        seq BIGINT PRIMARY KEY,
        source_id VARCHAR NOT NULL,
        status VARCHAR NOT NULL,
        gseq BIGINT,
        governed_at TIMESTAMPTZ NOT NULL,
        released_at TIMESTAMPTZ
    )""",
    # What transformations made of the row, where it differs from the raw log (NULL: as in the raw log).
    "ALTER TABLE governance ADD COLUMN IF NOT EXISTS type VARCHAR",
    "ALTER TABLE governance ADD COLUMN IF NOT EXISTS event VARCHAR",
    "ALTER TABLE governance ADD COLUMN IF NOT EXISTS message JSON",
    # The transformation rules (one set, each rule optionally scoped to a source), versioned.
    """CREATE TABLE IF NOT EXISTS transformations (
        rules JSON NOT NULL,
        version BIGINT NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    )""",
    # What each load staged and stored, per source (duplicates = lines - stored), for data quality.
    """CREATE TABLE IF NOT EXISTS load_stats (
        loaded_at TIMESTAMPTZ NOT NULL,
        source_id VARCHAR NOT NULL,
        lines BIGINT NOT NULL,
        stored BIGINT NOT NULL
    )""",
    # Quality alerts raised (a source's volume dropped, its violation rate jumped), one per source, rule and day.
    """CREATE TABLE IF NOT EXISTS quality_alerts (
        source_id VARCHAR NOT NULL,
        rule VARCHAR NOT NULL,
        day DATE NOT NULL,
        value DOUBLE,
        baseline DOUBLE,
        detail VARCHAR NOT NULL,
        raised_at TIMESTAMPTZ NOT NULL
    )""",
    # PII: the policy (one document for the workspace, versioned), and what governance classified, per batch.
    """CREATE TABLE IF NOT EXISTS pii_policy (
        policy JSON NOT NULL,
        version BIGINT NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS pii_observations (
        source_id VARCHAR NOT NULL,
        container VARCHAR NOT NULL,
        field VARCHAR NOT NULL,
        class VARCHAR NOT NULL,
        detected_by VARCHAR NOT NULL,
        action VARCHAR NOT NULL,
        values_seen BIGINT NOT NULL,
        seen_at TIMESTAMPTZ NOT NULL
    )""",
    # Secrets the workspace generates for itself (the salt of hashed PII), created once.
    """CREATE TABLE IF NOT EXISTS _cdp_secrets (name VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)""",
    # Identity: one node per identifier (type, value), the edges that join them, the profile each belongs to.
    """CREATE TABLE IF NOT EXISTS identity_nodes (
        node_id BIGINT PRIMARY KEY,
        id_type VARCHAR NOT NULL,
        id_value VARCHAR NOT NULL,
        first_seq BIGINT NOT NULL,
        first_seen TIMESTAMPTZ NOT NULL,
        last_seen TIMESTAMPTZ NOT NULL,
        messages BIGINT NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS identity_edges (
        a BIGINT NOT NULL,
        b BIGINT NOT NULL,
        kind VARCHAR NOT NULL,
        seq BIGINT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL
    )""",
    # The raw component (every edge counts) of each node: the smallest node id in it. Limits split a cluster.
    "ALTER TABLE identity_nodes ADD COLUMN IF NOT EXISTS cluster BIGINT",
    # Why the guard holds an identifier to be shared by many people (NULL: it is not), so it joins nobody.
    "ALTER TABLE identity_nodes ADD COLUMN IF NOT EXISTS shared VARCHAR",
    # Each identifier's lookup key (model/identity.py), filled in for stores made before it existed.
    "ALTER TABLE identity_nodes ADD COLUMN IF NOT EXISTS id_key UUID",
    f"UPDATE identity_nodes SET id_key = {NODE_KEY} WHERE id_key IS NULL",
    # Edges a limit refused: the two identifiers stay in different profiles, and why.
    """CREATE TABLE IF NOT EXISTS identity_conflicts (
        a BIGINT NOT NULL,
        b BIGINT NOT NULL,
        reason VARCHAR NOT NULL,
        found_at TIMESTAMPTZ NOT NULL
    )""",
    # Placeholder values (test@test.com, N/A, ...) that were sent as identifiers: never nodes, but counted.
    """CREATE TABLE IF NOT EXISTS identity_blocked (
        id_type VARCHAR NOT NULL,
        id_value VARCHAR NOT NULL,
        hits BIGINT NOT NULL,
        last_seen TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (id_type, id_value)
    )""",
    # What an operator said is separate: two identifiers that are never one profile until this is removed.
    """CREATE TABLE IF NOT EXISTS identity_cannot_link (
        a BIGINT NOT NULL,
        b BIGINT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL
    )""",
    # Each governed message's anchor: its strongest identifier, through which it resolves to a profile.
    """CREATE TABLE IF NOT EXISTS message_identities (seq BIGINT NOT NULL, node_id BIGINT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS identity_membership (
        node_id BIGINT PRIMARY KEY,
        profile_id VARCHAR NOT NULL,
        since TIMESTAMPTZ NOT NULL
    )""",
    # Live profiles, with the sequence number of their first identifier (the oldest survives a merge).
    """CREATE TABLE IF NOT EXISTS profiles_index (
        profile_id VARCHAR PRIMARY KEY,
        first_seq BIGINT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL
    )""",
    # Each profile's integer key (model/profiles.py PROFILE_KEY): drawn from this sequence when the identity stage
    # creates the profile, never changed or reused, and carried by the rows that name the profile where joins on
    # it are hot (identity_membership, profile_computed, profile_nodes, audience_members). Stores made before it
    # are keyed by migrate().
    "CREATE SEQUENCE IF NOT EXISTS profile_keys",
    "ALTER TABLE profiles_index ADD COLUMN IF NOT EXISTS profile_key BIGINT",
    "ALTER TABLE identity_membership ADD COLUMN IF NOT EXISTS profile_key BIGINT",
    # A profile absorbed by a merge keeps resolving to the one that absorbed it.
    """CREATE TABLE IF NOT EXISTS profile_aliases (
        alias VARCHAR PRIMARY KEY,
        profile_id VARCHAR NOT NULL,
        merged_at TIMESTAMPTZ NOT NULL
    )""",
    # Every profile created and merged, in order, for the stages after identity.
    """CREATE TABLE IF NOT EXISTS identity_events (
        kind VARCHAR NOT NULL,
        profile_id VARCHAR NOT NULL,
        other_profile_id VARCHAR,
        happened_at TIMESTAMPTZ NOT NULL
    )""",
    # Probabilistic matching (identity/train.py, identity/score.py): what each record, or an identifier's latest
    # traits, says about a person (``match_key``: source and record key, or ``node:`` and the identifier).
    """CREATE TABLE IF NOT EXISTS identity_match_records (
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
    )""",
    # Scored pairs of match records at or above the review threshold (or once there): the level each comparison
    # took, the weight and probability, what became of it, and an operator's decision (which sticks).
    """CREATE TABLE IF NOT EXISTS identity_matches (
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
    )""",
    # The trained match model (Splink's settings document) and the thresholds, one versioned document.
    """CREATE TABLE IF NOT EXISTS identity_match_model (
        model VARCHAR NOT NULL,
        version BIGINT NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    )""",
    # Why two identifiers cannot be linked: 'review' (an operator rejected a scored pair), NULL (a split).
    "ALTER TABLE identity_cannot_link ADD COLUMN IF NOT EXISTS reason VARCHAR",
    # A probabilistic edge's match probability (NULL for deterministic edges).
    "ALTER TABLE identity_edges ADD COLUMN IF NOT EXISTS probability DOUBLE",
    # Profiles (opencdp/profiles/): what each message or record reported about its person, keyed by its anchor
    # identifier (so merges and splits need no rewrite), and typed activity for computed traits and timelines.
    """CREATE TABLE IF NOT EXISTS trait_observations (
        seq BIGINT NOT NULL,
        node_id BIGINT NOT NULL,
        source_id VARCHAR NOT NULL,
        origin VARCHAR NOT NULL,
        trait VARCHAR NOT NULL,
        value VARCHAR NOT NULL,
        verified BOOLEAN NOT NULL,
        observed_at TIMESTAMPTZ NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS activity (
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
    )""",
    # The golden record: one surviving value per (profile, trait), with its lineage and the rule that chose it.
    """CREATE TABLE IF NOT EXISTS profile_traits (
        profile_id VARCHAR NOT NULL,
        trait VARCHAR NOT NULL,
        value VARCHAR NOT NULL,
        source_id VARCHAR NOT NULL,
        origin VARCHAR NOT NULL,
        from_record BOOLEAN NOT NULL,
        seq BIGINT NOT NULL,
        observed_at TIMESTAMPTZ NOT NULL,
        rule VARCHAR NOT NULL
    )""",
    # Profiles whose identifiers changed (identity writes them; the profiles stage computes them again).
    "CREATE TABLE IF NOT EXISTS profiles_dirty (profile_id VARCHAR NOT NULL)",
    """CREATE TABLE IF NOT EXISTS profile_settings (
        settings VARCHAR NOT NULL,
        version BIGINT NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS trait_definitions (
        traits VARCHAR NOT NULL,
        version BIGINT NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    )""",
    # The columns profile_computed was built with (the profiles stage rebuilds it when the definitions change).
    "CREATE TABLE IF NOT EXISTS _cdp_profile_shape (shape VARCHAR NOT NULL)",
    # Every identifier of every computed profile with that profile's integer key (profile_computed.profile_key),
    # kept by the profiles stage with profile_computed: audiences count activity per profile through it.
    """CREATE TABLE IF NOT EXISTS profile_nodes (
        node_id BIGINT NOT NULL,
        profile_key BIGINT NOT NULL
    )""",
    # A row once the golden columns of profile_computed are kept current (an audience definition read a golden
    # trait; until then they are NULL and cost the profiles stage nothing): opencdp/profiles/stage.py.
    "CREATE TABLE IF NOT EXISTS golden_columns_kept (since TIMESTAMPTZ NOT NULL)",
    # Property paths of activity kept as text columns of ``activity`` (``col``), filled when a row is written
    # and for every earlier row when a definition first reads the path (opencdp/profiles/stage.py).
    """CREATE TABLE IF NOT EXISTS activity_properties (
        path VARCHAR PRIMARY KEY,
        col VARCHAR NOT NULL,
        added_at TIMESTAMPTZ NOT NULL
    )""",
    # Segments (opencdp/segments/): saved audience definitions, who is in each now, and every entry and exit in
    # order (``change_seq``), which activation consumes by offset like a log.
    """CREATE TABLE IF NOT EXISTS audiences (
        name VARCHAR PRIMARY KEY,
        definition VARCHAR NOT NULL,
        version BIGINT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL,
        evaluated_at TIMESTAMPTZ
    )""",
    """CREATE TABLE IF NOT EXISTS audience_members (
        audience VARCHAR NOT NULL,
        profile_id VARCHAR NOT NULL,
        since TIMESTAMPTZ NOT NULL,
        PRIMARY KEY (audience, profile_id)
    )""",
    "ALTER TABLE audience_members ADD COLUMN IF NOT EXISTS profile_key BIGINT",
    """CREATE TABLE IF NOT EXISTS audience_changes (
        change_seq BIGINT NOT NULL,
        audience VARCHAR NOT NULL,
        profile_id VARCHAR NOT NULL,
        change VARCHAR NOT NULL,
        cause VARCHAR NOT NULL,
        happened_at TIMESTAMPTZ NOT NULL
    )""",
    # Journeys (opencdp/segments/journeys.py): saved definitions, each profile's entries with the step they are at
    # and when it is due, the events that triggered each entry, and the messages sends wrote (for activation).
    """CREATE TABLE IF NOT EXISTS journeys (
        name VARCHAR PRIMARY KEY,
        definition VARCHAR NOT NULL,
        version BIGINT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS journey_states (
        journey VARCHAR NOT NULL,
        profile_id VARCHAR NOT NULL,
        entry BIGINT NOT NULL,
        step INTEGER NOT NULL,
        due_at TIMESTAMPTZ NOT NULL,
        status VARCHAR NOT NULL,
        entered_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS journey_events (
        journey VARCHAR NOT NULL,
        entry BIGINT NOT NULL,
        seq BIGINT NOT NULL,
        name VARCHAR NOT NULL,
        properties JSON,
        happened_at TIMESTAMPTZ NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS journey_sends (
        send_seq BIGINT NOT NULL,
        journey VARCHAR NOT NULL,
        entry BIGINT NOT NULL,
        step INTEGER NOT NULL,
        profile_id VARCHAR NOT NULL,
        destination VARCHAR NOT NULL,
        payload JSON NOT NULL,
        created_at TIMESTAMPTZ NOT NULL
    )""",
    # Where each consumer of the raw log has got to.
    """CREATE TABLE IF NOT EXISTS consumer_offsets (
        consumer VARCHAR PRIMARY KEY,
        seq BIGINT NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    )""",
    # Activation (opencdp/activation/): destinations (one JSON document each), how far each has read the
    # audience changes and the governed stream, its outbox (one row per delivery, ``state`` pending, held, done
    # or dead) and every delivery attempt.
    """CREATE TABLE IF NOT EXISTS destinations (
        name VARCHAR PRIMARY KEY,
        kind VARCHAR NOT NULL,
        config VARCHAR NOT NULL,
        version BIGINT NOT NULL,
        created_at TIMESTAMPTZ NOT NULL,
        updated_at TIMESTAMPTZ NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS destination_offsets (
        destination VARCHAR NOT NULL,
        stream VARCHAR NOT NULL,
        upto BIGINT,
        PRIMARY KEY (destination, stream)
    )""",
    """CREATE TABLE IF NOT EXISTS outbox (
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
    )""",
    """CREATE TABLE IF NOT EXISTS delivery_attempts (
        delivery_id BIGINT NOT NULL,
        destination VARCHAR NOT NULL,
        attempt INTEGER NOT NULL,
        outcome VARCHAR NOT NULL,
        error VARCHAR,
        started_at TIMESTAMPTZ NOT NULL,
        took_ms DOUBLE NOT NULL
    )""",
)

INDEXES: tuple[str, ...] = (
    "CREATE UNIQUE INDEX IF NOT EXISTS raw_events_seq ON raw_events (seq)",
    "CREATE INDEX IF NOT EXISTS raw_events_message ON raw_events (source_id, message_id)",
    "CREATE INDEX IF NOT EXISTS raw_events_received ON raw_events (received_at)",
    "CREATE INDEX IF NOT EXISTS violations_seq ON violations (seq)",
    "CREATE UNIQUE INDEX IF NOT EXISTS identity_nodes_value ON identity_nodes (id_type, id_value)",
    "CREATE INDEX IF NOT EXISTS identity_edges_ab ON identity_edges (a, b)",
    "CREATE INDEX IF NOT EXISTS message_identities_seq ON message_identities (seq)",
    "CREATE INDEX IF NOT EXISTS identity_membership_profile ON identity_membership (profile_id)",
    "CREATE INDEX IF NOT EXISTS identity_nodes_cluster ON identity_nodes (cluster)",
    "CREATE INDEX IF NOT EXISTS identity_nodes_key ON identity_nodes (id_key)",
    "CREATE UNIQUE INDEX IF NOT EXISTS identity_match_records_key ON identity_match_records (match_key)",
    "CREATE INDEX IF NOT EXISTS governance_blocked ON governance (status) WHERE status = 'blocked'",
    "CREATE INDEX IF NOT EXISTS outbox_due ON outbox (state, next_at)",
    "CREATE INDEX IF NOT EXISTS outbox_profile ON outbox (destination, profile_id)",
)

LOOKUP_INDEXES: tuple[str, ...] = (
    "CREATE INDEX IF NOT EXISTS profile_traits_profile ON profile_traits (profile_id)",
    "CREATE INDEX IF NOT EXISTS audience_members_profile ON audience_members (profile_id)",
    "CREATE INDEX IF NOT EXISTS profile_nodes_node ON profile_nodes (node_id)",
)
"""Indexes created on every engine, DuckDB included: the stages look up a micro-batch's few hundred profiles in
these tables by profile id every cycle. On DuckDB a join whose other side has few keys pushes them into the scan
as an IN filter (``dynamic_or_filter_threshold``), which an ART index answers without reading the table (200
profiles' rows of 1M: ~7 ms against ~40 ms scanned, each). Each costs a little on every write of its table; an
index on ``activity`` (10M rows) was measured and not kept, and the one on ``identity_membership`` stays with
the other engines' (INDEXES): on DuckDB its upkeep slowed the identity stage, which rewrites membership rows in
every batch, by a fifth to three quarters (train_matching's profiles 2.4 → 4.3 s, docs/performance.md), while
the segments stage reads the micro-batch's identifiers from what the profiles stage hands over. The profiles
stage rewrites the ``profile_nodes`` rows of the identifiers of the profiles it computes by ``node_id`` (200
profiles' rows of 1M: 2.4 ms with the index against 6.7 ms scanned)."""

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
    # The governed stream: what passed governance (or was released from the quarantine), in ``gseq`` order.
    """CREATE OR REPLACE VIEW governed AS
    SELECT g.gseq, g.status, r.seq, r.source_id, r.message_id, coalesce(g.type, r.type) AS type,
           coalesce(g.event, r.event) AS event, r.user_id, r.anonymous_id, r.timestamp, r.original_timestamp,
           r.sent_at, r.received_at, coalesce(g.message, r.message) AS message
    FROM governance AS g JOIN raw_events AS r ON r.seq = g.seq
    WHERE g.gseq IS NOT NULL""",
    """CREATE OR REPLACE VIEW quarantine AS
    SELECT r.seq, r.source_id, r.type, r.event, r.message_id, r.received_at,
           (SELECT string_agg(v.rule || CASE WHEN v.property IS NULL THEN '' ELSE ' ' || v.property END, ', ')
            FROM violations AS v WHERE v.seq = r.seq) AS reasons,
           r.message
    FROM governance AS g JOIN raw_events AS r ON r.seq = g.seq
    WHERE g.status = 'blocked'""",
    # How each field of each source is classified (by declaration, name or value), and what the policy did.
    """CREATE OR REPLACE VIEW pii_fields AS
    SELECT source_id, container, field, class, detected_by, action, sum(values_seen) AS values_seen,
           max(seen_at) AS last_seen
    FROM pii_observations
    GROUP BY source_id, container, field, class, detected_by, action""",
    # Every raw message and imported record, and the profile it belongs to now (NULL: nothing identified it, or
    # identity has not reached it yet).
    """CREATE OR REPLACE VIEW record_profiles AS
    SELECT r.seq, r.source_id, CASE WHEN r.type = 'record' THEN r.event ELSE 'event' END AS kind,
           CASE WHEN r.type = 'record' THEN json_extract_string(r.message, '$.key') ELSE r.message_id END
               AS record_key,
           m.profile_id
    FROM raw_events AS r
    LEFT JOIN message_identities AS mi ON mi.seq = r.seq
    LEFT JOIN identity_membership AS m ON m.node_id = mi.node_id""",
    """CREATE OR REPLACE VIEW rejects AS
    SELECT import_id, source_id, file, row_number, column_name, reason, raw, rejected_at
    FROM import_rejects""",
)


# Helpers whose SQL differs by engine, so that stage SQL (authored once) can call them by name.
FUNCTIONS: dict[str, tuple[str, ...]] = {
    "duckdb": (
        # A JSON value's type, as JSON Schema names it (DuckDB's json_type says VARCHAR, BIGINT, DOUBLE, ...).
        """CREATE OR REPLACE MACRO cdp_json_type(j) AS CASE json_type(j)
            WHEN 'VARCHAR' THEN 'string' WHEN 'BIGINT' THEN 'integer' WHEN 'UBIGINT' THEN 'integer'
            WHEN 'HUGEINT' THEN 'integer' WHEN 'DOUBLE' THEN 'number' WHEN 'BOOLEAN' THEN 'boolean'
            WHEN 'NULL' THEN 'null' WHEN 'OBJECT' THEN 'object' WHEN 'ARRAY' THEN 'array' END""",
        # The keys of a JSON object (an empty list for anything else), and the value at one key.
        "CREATE OR REPLACE MACRO cdp_json_keys(j) AS CASE WHEN json_type(j) = 'OBJECT' THEN json_keys(j) ELSE [] END",
        """CREATE OR REPLACE MACRO cdp_json_get(j, k) AS
            json_extract(j, '$."' || replace(replace(k, '\\', '\\\\'), '"', '\\"') || '"')""",
        # Set (replace) or remove one key, at the top level (parent '') or inside a top-level object.
        """CREATE OR REPLACE MACRO cdp_json_drop(j, parent, k) AS CASE WHEN parent = ''
            THEN json_merge_patch(j, json_object(k::VARCHAR, NULL::JSON))
            ELSE json_merge_patch(j, json_object(parent::VARCHAR, json_object(k::VARCHAR, NULL::JSON))) END""",
        """CREATE OR REPLACE MACRO cdp_json_put(j, parent, k, v) AS CASE WHEN parent = ''
            THEN json_merge_patch(cdp_json_drop(j, parent, k), json_object(k::VARCHAR, v))
            ELSE json_merge_patch(cdp_json_drop(j, parent, k), json_object(parent::VARCHAR, json_object(k::VARCHAR, v)))
            END""",
        # The values of a JSON object, in the order of cdp_json_keys (an empty list for anything else).
        """CREATE OR REPLACE MACRO cdp_json_values(j) AS
            CASE WHEN json_type(j) = 'OBJECT' THEN json_extract(j, '$.*') ELSE [] END""",
        # A JSON scalar's text (a string unquoted, a number or boolean as written).
        "CREATE OR REPLACE MACRO cdp_json_text(v) AS json_extract_string(v, '$')",
        # Merge a JSON patch into a document (RFC 7396: objects merge, null removes a key).
        "CREATE OR REPLACE MACRO cdp_json_merge_patch(j, patch) AS json_merge_patch(j, patch)",
        # Luhn check of a string of digits; mod-97 check of an IBAN (letters count as 10..35); SHA-256 in hex.
        """CREATE OR REPLACE MACRO cdp_luhn(d) AS list_reduce(
            list_transform(range(length(d)), lambda i: CASE WHEN i % 2 = 0 THEN ascii(d[length(d) - i]) - 48
                ELSE ((ascii(d[length(d) - i]) - 48) * 2) % 10 + (ascii(d[length(d) - i]) - 48) // 5 END),
            lambda a, x: a + x, 0) % 10 = 0""",
        """CREATE OR REPLACE MACRO cdp_iban_ok(c) AS list_reduce(
            list_transform(string_split(c[5:] || c[1:4], ''), lambda ch: ascii(ch)),
            lambda a, x: CASE WHEN x < 65 THEN (a * 10 + x - 48) % 97 ELSE (a * 100 + x - 55) % 97 END, 0) = 1""",
        "CREATE OR REPLACE MACRO cdp_sha256(t) AS sha256(t)",
        # The keys of a JSON object that are not in ``allowed``, comma-separated in key order; NULL when none.
        """CREATE OR REPLACE MACRO cdp_json_extra_keys(j, allowed) AS
            nullif(array_to_string(list_sort(list_filter(json_keys(j), lambda k: NOT list_contains(allowed, k))), ','),
                   '')""",
    ),
    "postgres": (
        """CREATE OR REPLACE FUNCTION cdp_json_type(j json) RETURNS text LANGUAGE sql IMMUTABLE AS $$
            SELECT CASE json_typeof(j) WHEN 'number' THEN
                CASE WHEN j::text ~ '^-?[0-9]+$' THEN 'integer' ELSE 'number' END ELSE json_typeof(j) END
        $$""",
        """CREATE OR REPLACE FUNCTION cdp_json_keys(j json) RETURNS text[] LANGUAGE sql IMMUTABLE AS $$
            SELECT CASE WHEN json_typeof(j) = 'object' THEN ARRAY(SELECT json_object_keys(j)) ELSE ARRAY[]::text[] END
        $$""",
        """CREATE OR REPLACE FUNCTION cdp_json_get(j json, k text) RETURNS json LANGUAGE sql IMMUTABLE AS $$
            SELECT j -> k
        $$""",
        """CREATE OR REPLACE FUNCTION cdp_json_drop(j json, parent text, k text) RETURNS json LANGUAGE sql
            IMMUTABLE AS $$
            SELECT (CASE WHEN parent = '' THEN j::jsonb - k ELSE j::jsonb #- ARRAY[parent, k] END)::json
        $$""",
        """CREATE OR REPLACE FUNCTION cdp_json_put(j json, parent text, k text, v json) RETURNS json LANGUAGE sql
            IMMUTABLE AS $$
            SELECT (CASE WHEN parent = '' THEN jsonb_set(j::jsonb, ARRAY[k], v::jsonb)
                         ELSE jsonb_set(j::jsonb, ARRAY[parent, k], v::jsonb) END)::json
        $$""",
        """CREATE OR REPLACE FUNCTION cdp_json_values(j json) RETURNS json[] LANGUAGE sql IMMUTABLE AS $$
            SELECT CASE WHEN json_typeof(j) = 'object' THEN ARRAY(SELECT value FROM json_each(j))
                        ELSE ARRAY[]::json[] END
        $$""",
        """CREATE OR REPLACE FUNCTION cdp_json_text(v json) RETURNS text LANGUAGE sql IMMUTABLE AS $$
            SELECT v #>> '{}'
        $$""",
        """CREATE OR REPLACE FUNCTION cdp_json_merge_patch(target json, patch json) RETURNS json LANGUAGE plpgsql
            IMMUTABLE AS $$
            DECLARE result jsonb; k text; v jsonb;
            BEGIN
                IF patch IS NULL OR json_typeof(patch) <> 'object' THEN RETURN patch; END IF;
                result := CASE WHEN json_typeof(target) = 'object' THEN target::jsonb ELSE '{}'::jsonb END;
                FOR k, v IN SELECT * FROM jsonb_each(patch::jsonb) LOOP
                    IF jsonb_typeof(v) = 'null' THEN
                        result := result - k;
                    ELSE
                        result := jsonb_set(result, ARRAY[k],
                                            cdp_json_merge_patch((result -> k)::json, v::json)::jsonb);
                    END IF;
                END LOOP;
                RETURN result::json;
            END
        $$""",
        # DuckDB's jaro_winkler_similarity (which Splink's name comparisons use), under the name sqlglot gives
        # it for PostgreSQL: Jaro, plus the common prefix (up to 4) weighted 0.1 when Jaro is above 0.7.
        """CREATE OR REPLACE FUNCTION jarowinkler_similarity(s1 text, s2 text) RETURNS double precision
        LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
        DECLARE
            l1 int := length(s1); l2 int := length(s2); win int; m int := 0; t int := 0; k int := 1;
            i int; j int; p int := 0; f1 boolean[]; f2 boolean[]; sim double precision;
        BEGIN
            IF s1 IS NULL OR s2 IS NULL THEN RETURN NULL; END IF;
            IF l1 = 0 OR l2 = 0 THEN RETURN 0.0; END IF;
            win := greatest(greatest(l1, l2) / 2 - 1, 0);
            f1 := array_fill(false, ARRAY[l1]); f2 := array_fill(false, ARRAY[l2]);
            FOR i IN 1..l1 LOOP
                FOR j IN greatest(1, i - win)..least(l2, i + win) LOOP
                    IF NOT f2[j] AND substr(s1, i, 1) = substr(s2, j, 1) THEN
                        f1[i] := true; f2[j] := true; m := m + 1; EXIT;
                    END IF;
                END LOOP;
            END LOOP;
            IF m = 0 THEN RETURN 0.0; END IF;
            FOR i IN 1..l1 LOOP
                IF f1[i] THEN
                    WHILE NOT f2[k] LOOP k := k + 1; END LOOP;
                    IF substr(s1, i, 1) <> substr(s2, k, 1) THEN t := t + 1; END IF;
                    k := k + 1;
                END IF;
            END LOOP;
            sim := (m::float8 / l1 + m::float8 / l2 + (m - t / 2)::float8 / m) / 3;
            IF sim > 0.7 THEN
                WHILE p < least(4, l1, l2) AND substr(s1, p + 1, 1) = substr(s2, p + 1, 1) LOOP p := p + 1; END LOOP;
                sim := sim + p * 0.1 * (1 - sim);
            END IF;
            RETURN sim;
        END $$""",
        """CREATE OR REPLACE FUNCTION cdp_luhn(d text) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
            SELECT coalesce(sum(CASE WHEN i % 2 = 0 THEN x ELSE (x * 2) % 10 + x / 5 END), 0) % 10 = 0
            FROM (SELECT i, ascii(substr(d, length(d) - i, 1)) - 48 AS x FROM generate_series(0, length(d) - 1) AS i) s
        $$""",
        """CREATE OR REPLACE FUNCTION cdp_iban_ok(c text) RETURNS boolean LANGUAGE sql IMMUTABLE AS $$
            SELECT string_agg(CASE WHEN ch ~ '[0-9]' THEN ch ELSE (ascii(ch) - 55)::text END, '' ORDER BY i)::numeric
                   % 97 = 1
            FROM (SELECT i, substr(substr(c, 5) || substr(c, 1, 4), i, 1) AS ch
                  FROM generate_series(1, length(c)) AS i) s
        $$""",
        """CREATE OR REPLACE FUNCTION cdp_sha256(t text) RETURNS text LANGUAGE sql IMMUTABLE AS $$
            SELECT encode(sha256(convert_to(t, 'UTF8')), 'hex')
        $$""",
        """CREATE OR REPLACE FUNCTION cdp_json_extra_keys(j json, allowed text[]) RETURNS text LANGUAGE sql
            IMMUTABLE AS $$
            SELECT nullif(string_agg(k, ',' ORDER BY k), '') FROM json_object_keys(
                CASE WHEN json_typeof(j) = 'object' THEN j ELSE '{}'::json END) AS k
            WHERE NOT (k = ANY(allowed))
        $$""",
    ),
}


def migrate(engine: Engine) -> None:
    """Create every table, index and view that is missing. Safe to run at every start."""
    with engine.transaction():
        for ddl in TABLES:
            engine.execute(ddl)
        if engine.capabilities.secondary_indexes:
            for ddl in INDEXES:
                engine.execute(ddl)
        for ddl in LOOKUP_INDEXES:
            engine.execute(ddl)
        for ddl in FUNCTIONS[engine.capabilities.dialect]:
            engine.execute_native(ddl)
        for ddl in VIEWS:
            engine.execute(ddl)
        if engine.fetch_one("SELECT count(*) FROM _cdp_schema_version") == (0,):
            engine.execute("INSERT INTO _cdp_schema_version VALUES (?)", (SCHEMA_VERSION,))
        if engine.fetch_one("SELECT count(*) FROM _cdp_secrets WHERE name = 'pii_salt'") == (0,):
            engine.execute("INSERT INTO _cdp_secrets VALUES ('pii_salt', ?)", (secrets.token_hex(16),))
        if engine.fetch_one("SELECT count(*) FROM _cdp_journal_position") == (0,):
            engine.execute("INSERT INTO _cdp_journal_position VALUES (0, 0)")
        if engine.fetch_one("SELECT 1 FROM profiles_index WHERE profile_key IS NULL LIMIT 1"):
            _key_profiles(engine)


def _key_profiles(engine: Engine) -> None:
    """Key every profile of a store made before profile keys, and the rows that carry the key. The profiles
    stage builds ``profile_computed`` and ``profile_nodes`` again (they held the smallest identifier's id): its
    recorded shape goes. A saved member whose profile is gone gets a key of its own, so that its audience's next
    evaluation records its exit."""
    engine.execute("UPDATE profiles_index SET profile_key = nextval('profile_keys') WHERE profile_key IS NULL")
    for table in ("identity_membership", "audience_members"):
        engine.execute(
            f"UPDATE {table} SET profile_key = x.profile_key FROM profiles_index AS x "
            f"WHERE x.profile_id = {table}.profile_id"
        )
    engine.execute("UPDATE audience_members SET profile_key = nextval('profile_keys') WHERE profile_key IS NULL")
    engine.execute("DELETE FROM _cdp_profile_shape")
