CREATE TABLE IF NOT EXISTS _cdp_schema_version (version BIGINT NOT NULL);

CREATE TABLE IF NOT EXISTS sources (source_id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, kind TEXT NOT NULL, write_key TEXT NOT NULL UNIQUE, enabled BOOLEAN NOT NULL, limits JSON NOT NULL, created_at TIMESTAMPTZ NOT NULL, updated_at TIMESTAMPTZ NOT NULL);

CREATE TABLE IF NOT EXISTS raw_events (seq BIGINT NOT NULL, source_id TEXT NOT NULL, message_id TEXT NOT NULL, type TEXT NOT NULL, event TEXT, user_id TEXT, anonymous_id TEXT, timestamp TIMESTAMPTZ, original_timestamp TIMESTAMPTZ, sent_at TIMESTAMPTZ, received_at TIMESTAMPTZ NOT NULL, message JSON NOT NULL);

CREATE TABLE IF NOT EXISTS rejected_messages (seq BIGINT NOT NULL, source_id TEXT NOT NULL, received_at TIMESTAMPTZ NOT NULL, code TEXT NOT NULL, reason TEXT NOT NULL, payload TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS _cdp_journal_position (segment BIGINT NOT NULL, byte_offset BIGINT NOT NULL);

CREATE TABLE IF NOT EXISTS imports (import_id TEXT PRIMARY KEY, source_id TEXT NOT NULL, kind TEXT NOT NULL, files TEXT NOT NULL, started_at TIMESTAMPTZ NOT NULL, finished_at TIMESTAMPTZ NOT NULL, rows_read BIGINT NOT NULL, accepted BIGINT NOT NULL, rejected BIGINT NOT NULL, duplicates BIGINT NOT NULL, summary JSON NOT NULL);

CREATE TABLE IF NOT EXISTS import_rejects (import_id TEXT NOT NULL, source_id TEXT NOT NULL, file TEXT NOT NULL, row_number BIGINT NOT NULL, column_name TEXT, reason TEXT NOT NULL, raw TEXT, rejected_at TIMESTAMPTZ NOT NULL);

CREATE TABLE IF NOT EXISTS _cdp_import_ids (import_id TEXT NOT NULL, message_id TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS tracking_plans (source_id TEXT PRIMARY KEY, plan JSON NOT NULL, version BIGINT NOT NULL, updated_at TIMESTAMPTZ NOT NULL);

CREATE TABLE IF NOT EXISTS violations (seq BIGINT NOT NULL, source_id TEXT NOT NULL, event TEXT, property TEXT, rule TEXT NOT NULL, detail TEXT, plan_version BIGINT, found_at TIMESTAMPTZ NOT NULL);

CREATE TABLE IF NOT EXISTS governance (seq BIGINT PRIMARY KEY, source_id TEXT NOT NULL, status TEXT NOT NULL, gseq BIGINT, governed_at TIMESTAMPTZ NOT NULL, released_at TIMESTAMPTZ);

ALTER TABLE governance ADD COLUMN IF NOT EXISTS type TEXT;

ALTER TABLE governance ADD COLUMN IF NOT EXISTS event TEXT;

ALTER TABLE governance ADD COLUMN IF NOT EXISTS message JSON;

CREATE TABLE IF NOT EXISTS transformations (rules JSON NOT NULL, version BIGINT NOT NULL, updated_at TIMESTAMPTZ NOT NULL);

CREATE TABLE IF NOT EXISTS load_stats (loaded_at TIMESTAMPTZ NOT NULL, source_id TEXT NOT NULL, lines BIGINT NOT NULL, stored BIGINT NOT NULL);

CREATE TABLE IF NOT EXISTS quality_alerts (source_id TEXT NOT NULL, rule TEXT NOT NULL, day DATE NOT NULL, value DOUBLE PRECISION, baseline DOUBLE PRECISION, detail TEXT NOT NULL, raised_at TIMESTAMPTZ NOT NULL);

CREATE TABLE IF NOT EXISTS pii_policy (policy JSON NOT NULL, version BIGINT NOT NULL, updated_at TIMESTAMPTZ NOT NULL);

CREATE TABLE IF NOT EXISTS pii_observations (source_id TEXT NOT NULL, container TEXT NOT NULL, field TEXT NOT NULL, class TEXT NOT NULL, detected_by TEXT NOT NULL, action TEXT NOT NULL, values_seen BIGINT NOT NULL, seen_at TIMESTAMPTZ NOT NULL);

CREATE TABLE IF NOT EXISTS _cdp_secrets (name TEXT PRIMARY KEY, value TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS identity_nodes (node_id BIGINT PRIMARY KEY, id_type TEXT NOT NULL, id_value TEXT NOT NULL, first_seq BIGINT NOT NULL, first_seen TIMESTAMPTZ NOT NULL, last_seen TIMESTAMPTZ NOT NULL, messages BIGINT NOT NULL);

CREATE TABLE IF NOT EXISTS identity_edges (a BIGINT NOT NULL, b BIGINT NOT NULL, kind TEXT NOT NULL, seq BIGINT NOT NULL, created_at TIMESTAMPTZ NOT NULL);

ALTER TABLE identity_nodes ADD COLUMN IF NOT EXISTS cluster BIGINT;

ALTER TABLE identity_nodes ADD COLUMN IF NOT EXISTS shared TEXT;

ALTER TABLE identity_nodes ADD COLUMN IF NOT EXISTS id_key UUID;

UPDATE identity_nodes SET id_key = CAST(MD5(id_type || ':' || id_value) AS UUID) WHERE id_key IS NULL;

CREATE TABLE IF NOT EXISTS identity_conflicts (a BIGINT NOT NULL, b BIGINT NOT NULL, reason TEXT NOT NULL, found_at TIMESTAMPTZ NOT NULL);

CREATE TABLE IF NOT EXISTS identity_blocked (id_type TEXT NOT NULL, id_value TEXT NOT NULL, hits BIGINT NOT NULL, last_seen TIMESTAMPTZ NOT NULL, PRIMARY KEY (id_type, id_value));

CREATE TABLE IF NOT EXISTS identity_cannot_link (a BIGINT NOT NULL, b BIGINT NOT NULL, created_at TIMESTAMPTZ NOT NULL);

CREATE TABLE IF NOT EXISTS message_identities (seq BIGINT NOT NULL, node_id BIGINT NOT NULL);

CREATE TABLE IF NOT EXISTS identity_membership (node_id BIGINT PRIMARY KEY, profile_id TEXT NOT NULL, since TIMESTAMPTZ NOT NULL);

CREATE TABLE IF NOT EXISTS profiles_index (profile_id TEXT PRIMARY KEY, first_seq BIGINT NOT NULL, created_at TIMESTAMPTZ NOT NULL);

CREATE SEQUENCE IF NOT EXISTS profile_keys;

ALTER TABLE profiles_index ADD COLUMN IF NOT EXISTS profile_key BIGINT;

ALTER TABLE identity_membership ADD COLUMN IF NOT EXISTS profile_key BIGINT;

CREATE TABLE IF NOT EXISTS profile_aliases (alias TEXT PRIMARY KEY, profile_id TEXT NOT NULL, merged_at TIMESTAMPTZ NOT NULL);

CREATE TABLE IF NOT EXISTS identity_events (kind TEXT NOT NULL, profile_id TEXT NOT NULL, other_profile_id TEXT, happened_at TIMESTAMPTZ NOT NULL);

CREATE TABLE IF NOT EXISTS identity_match_records (match_id BIGINT PRIMARY KEY, match_key TEXT NOT NULL, node_id BIGINT NOT NULL, seq BIGINT NOT NULL, first_name TEXT, last_name TEXT, birth_date TEXT, house_number TEXT, street TEXT, city TEXT, postal_code TEXT, region TEXT, national_id TEXT, email TEXT, phone TEXT);

CREATE TABLE IF NOT EXISTS identity_matches (id_l BIGINT NOT NULL, id_r BIGINT NOT NULL, node_l BIGINT NOT NULL, node_r BIGINT NOT NULL, g_first_name SMALLINT, g_last_name SMALLINT, g_birth_date SMALLINT, g_house_number SMALLINT, g_street SMALLINT, g_city SMALLINT, g_postal_code SMALLINT, g_region SMALLINT, g_national_id SMALLINT, g_email SMALLINT, g_phone SMALLINT, match_weight DOUBLE PRECISION NOT NULL, match_probability DOUBLE PRECISION NOT NULL, status TEXT NOT NULL, decision TEXT, model_version BIGINT NOT NULL, scored_at TIMESTAMPTZ NOT NULL, PRIMARY KEY (id_l, id_r));

CREATE TABLE IF NOT EXISTS identity_match_model (model TEXT NOT NULL, version BIGINT NOT NULL, updated_at TIMESTAMPTZ NOT NULL);

ALTER TABLE identity_cannot_link ADD COLUMN IF NOT EXISTS reason TEXT;

ALTER TABLE identity_edges ADD COLUMN IF NOT EXISTS probability DOUBLE PRECISION;

CREATE TABLE IF NOT EXISTS trait_observations (seq BIGINT NOT NULL, node_id BIGINT NOT NULL, source_id TEXT NOT NULL, origin TEXT NOT NULL, trait TEXT NOT NULL, value TEXT NOT NULL, verified BOOLEAN NOT NULL, observed_at TIMESTAMPTZ NOT NULL);

CREATE TABLE IF NOT EXISTS activity (seq BIGINT NOT NULL, node_id BIGINT, anchor BIGINT, source_id TEXT NOT NULL, kind TEXT NOT NULL, name TEXT, grain TEXT, ts TIMESTAMPTZ NOT NULL, item_key TEXT, order_id TEXT, amount DOUBLE PRECISION, currency TEXT, props JSON);

CREATE TABLE IF NOT EXISTS profile_traits (profile_id TEXT NOT NULL, trait TEXT NOT NULL, value TEXT NOT NULL, source_id TEXT NOT NULL, origin TEXT NOT NULL, from_record BOOLEAN NOT NULL, seq BIGINT NOT NULL, observed_at TIMESTAMPTZ NOT NULL, rule TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS profiles_dirty (profile_id TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS profile_settings (settings TEXT NOT NULL, version BIGINT NOT NULL, updated_at TIMESTAMPTZ NOT NULL);

CREATE TABLE IF NOT EXISTS trait_definitions (traits TEXT NOT NULL, version BIGINT NOT NULL, updated_at TIMESTAMPTZ NOT NULL);

CREATE TABLE IF NOT EXISTS _cdp_profile_shape (shape TEXT NOT NULL);

CREATE TABLE IF NOT EXISTS profile_nodes (node_id BIGINT NOT NULL, profile_key BIGINT NOT NULL);

CREATE TABLE IF NOT EXISTS golden_columns_kept (since TIMESTAMPTZ NOT NULL);

CREATE TABLE IF NOT EXISTS activity_properties (path TEXT PRIMARY KEY, col TEXT NOT NULL, added_at TIMESTAMPTZ NOT NULL);

CREATE TABLE IF NOT EXISTS audiences (name TEXT PRIMARY KEY, definition TEXT NOT NULL, version BIGINT NOT NULL, created_at TIMESTAMPTZ NOT NULL, updated_at TIMESTAMPTZ NOT NULL, evaluated_at TIMESTAMPTZ);

CREATE TABLE IF NOT EXISTS audience_members (audience TEXT NOT NULL, profile_id TEXT NOT NULL, since TIMESTAMPTZ NOT NULL, PRIMARY KEY (audience, profile_id));

ALTER TABLE audience_members ADD COLUMN IF NOT EXISTS profile_key BIGINT;

CREATE TABLE IF NOT EXISTS audience_changes (change_seq BIGINT NOT NULL, audience TEXT NOT NULL, profile_id TEXT NOT NULL, change TEXT NOT NULL, cause TEXT NOT NULL, happened_at TIMESTAMPTZ NOT NULL);

CREATE TABLE IF NOT EXISTS journeys (name TEXT PRIMARY KEY, definition TEXT NOT NULL, version BIGINT NOT NULL, created_at TIMESTAMPTZ NOT NULL, updated_at TIMESTAMPTZ NOT NULL);

CREATE TABLE IF NOT EXISTS journey_states (journey TEXT NOT NULL, profile_id TEXT NOT NULL, entry BIGINT NOT NULL, step INT NOT NULL, due_at TIMESTAMPTZ NOT NULL, status TEXT NOT NULL, entered_at TIMESTAMPTZ NOT NULL, updated_at TIMESTAMPTZ NOT NULL);

CREATE TABLE IF NOT EXISTS journey_events (journey TEXT NOT NULL, entry BIGINT NOT NULL, seq BIGINT NOT NULL, name TEXT NOT NULL, properties JSON, happened_at TIMESTAMPTZ NOT NULL);

CREATE TABLE IF NOT EXISTS journey_sends (send_seq BIGINT NOT NULL, journey TEXT NOT NULL, entry BIGINT NOT NULL, step INT NOT NULL, profile_id TEXT NOT NULL, destination TEXT NOT NULL, payload JSON NOT NULL, created_at TIMESTAMPTZ NOT NULL);

CREATE TABLE IF NOT EXISTS consumer_offsets (consumer TEXT PRIMARY KEY, seq BIGINT NOT NULL, updated_at TIMESTAMPTZ NOT NULL);

CREATE TABLE IF NOT EXISTS destinations (name TEXT PRIMARY KEY, kind TEXT NOT NULL, config TEXT NOT NULL, version BIGINT NOT NULL, created_at TIMESTAMPTZ NOT NULL, updated_at TIMESTAMPTZ NOT NULL);

CREATE TABLE IF NOT EXISTS destination_offsets (destination TEXT NOT NULL, stream TEXT NOT NULL, upto BIGINT, PRIMARY KEY (destination, stream));

CREATE TABLE IF NOT EXISTS outbox (delivery_id BIGINT PRIMARY KEY, destination TEXT NOT NULL, idempotency_key TEXT NOT NULL, kind TEXT NOT NULL, audience TEXT, change TEXT, cause TEXT, profile_id TEXT, gseq BIGINT, payload TEXT, happened_at TIMESTAMPTZ NOT NULL, state TEXT NOT NULL, attempts INT NOT NULL, next_at TIMESTAMPTZ NOT NULL, created_at TIMESTAMPTZ NOT NULL, delivered_at TIMESTAMPTZ, last_error TEXT, replays INT NOT NULL, UNIQUE (destination, idempotency_key));

CREATE TABLE IF NOT EXISTS delivery_attempts (delivery_id BIGINT NOT NULL, destination TEXT NOT NULL, attempt INT NOT NULL, outcome TEXT NOT NULL, error TEXT, started_at TIMESTAMPTZ NOT NULL, took_ms DOUBLE PRECISION NOT NULL);

CREATE UNIQUE INDEX IF NOT EXISTS raw_events_seq ON raw_events(seq);

CREATE INDEX IF NOT EXISTS raw_events_message ON raw_events(source_id, message_id);

CREATE INDEX IF NOT EXISTS raw_events_received ON raw_events(received_at);

CREATE INDEX IF NOT EXISTS violations_seq ON violations(seq);

CREATE UNIQUE INDEX IF NOT EXISTS identity_nodes_value ON identity_nodes(id_type, id_value);

CREATE INDEX IF NOT EXISTS identity_edges_ab ON identity_edges(a, b);

CREATE INDEX IF NOT EXISTS message_identities_seq ON message_identities(seq);

CREATE INDEX IF NOT EXISTS identity_membership_profile ON identity_membership(profile_id);

CREATE INDEX IF NOT EXISTS identity_nodes_cluster ON identity_nodes(cluster);

CREATE INDEX IF NOT EXISTS identity_nodes_key ON identity_nodes(id_key);

CREATE UNIQUE INDEX IF NOT EXISTS identity_match_records_key ON identity_match_records(match_key);

CREATE INDEX IF NOT EXISTS governance_blocked ON governance(status) WHERE status = 'blocked';

CREATE INDEX IF NOT EXISTS outbox_due ON outbox(state, next_at);

CREATE INDEX IF NOT EXISTS outbox_profile ON outbox(destination, profile_id);

CREATE INDEX IF NOT EXISTS profile_traits_profile ON profile_traits(profile_id);

CREATE INDEX IF NOT EXISTS audience_members_profile ON audience_members(profile_id);

CREATE INDEX IF NOT EXISTS profile_nodes_node ON profile_nodes(node_id);

CREATE OR REPLACE VIEW events AS SELECT seq, message_id, source_id, type, event, user_id, anonymous_id, timestamp, original_timestamp, sent_at, received_at, JSON_EXTRACT_PATH(message, 'properties') AS properties, JSON_EXTRACT_PATH(message, 'traits') AS traits, JSON_EXTRACT_PATH(message, 'context') AS context, message FROM raw_events WHERE type <> 'record';

CREATE OR REPLACE VIEW records AS SELECT seq, source_id, event AS kind, message_id AS record_id, JSON_EXTRACT_PATH_TEXT(message, 'key') AS record_key, JSON_EXTRACT_PATH(message, 'fields') AS fields, JSON_EXTRACT_PATH(message, 'attributes') AS attributes, JSON_EXTRACT_PATH(message, 'flags') AS flags, JSON_EXTRACT_PATH_TEXT(message, 'import', 'id') AS import_id, JSON_EXTRACT_PATH_TEXT(message, 'import', 'file') AS file, CAST(JSON_EXTRACT_PATH_TEXT(message, 'import', 'row') AS BIGINT) AS row_number, original_timestamp AS record_time, received_at FROM raw_events WHERE type = 'record';

CREATE OR REPLACE VIEW governed AS SELECT g.gseq, g.status, r.seq, r.source_id, r.message_id, COALESCE(g.type, r.type) AS type, COALESCE(g.event, r.event) AS event, r.user_id, r.anonymous_id, r.timestamp, r.original_timestamp, r.sent_at, r.received_at, COALESCE(g.message, r.message) AS message FROM governance AS g JOIN raw_events AS r ON r.seq = g.seq WHERE NOT g.gseq IS NULL;

CREATE OR REPLACE VIEW quarantine AS SELECT r.seq, r.source_id, r.type, r.event, r.message_id, r.received_at, (SELECT STRING_AGG(v.rule || CASE WHEN v.property IS NULL THEN '' ELSE ' ' || v.property END, ', ') FROM violations AS v WHERE v.seq = r.seq) AS reasons, r.message FROM governance AS g JOIN raw_events AS r ON r.seq = g.seq WHERE g.status = 'blocked';

CREATE OR REPLACE VIEW pii_fields AS SELECT source_id, container, field, class, detected_by, action, SUM(values_seen) AS values_seen, MAX(seen_at) AS last_seen FROM pii_observations GROUP BY source_id, container, field, class, detected_by, action;

CREATE OR REPLACE VIEW record_profiles AS SELECT r.seq, r.source_id, CASE WHEN r.type = 'record' THEN r.event ELSE 'event' END AS kind, CASE WHEN r.type = 'record' THEN JSON_EXTRACT_PATH_TEXT(r.message, 'key') ELSE r.message_id END AS record_key, m.profile_id FROM raw_events AS r LEFT JOIN message_identities AS mi ON mi.seq = r.seq LEFT JOIN identity_membership AS m ON m.node_id = mi.node_id;

CREATE OR REPLACE VIEW rejects AS SELECT import_id, source_id, file, row_number, column_name, reason, raw, rejected_at FROM import_rejects;
