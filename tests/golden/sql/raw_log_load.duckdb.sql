CREATE TEMP SEQUENCE IF NOT EXISTS _cdp_load_pos;

CREATE TEMP TABLE IF NOT EXISTS _cdp_load_stage (
        kind VARCHAR, source_id VARCHAR, message_id VARCHAR, type VARCHAR, event VARCHAR, user_id VARCHAR, anonymous_id VARCHAR, timestamp TIMESTAMPTZ, original_timestamp TIMESTAMPTZ, sent_at TIMESTAMPTZ, received_at TIMESTAMPTZ, doc VARCHAR,
        pos BIGINT DEFAULT nextval('_cdp_load_pos')
    );

INSERT INTO raw_events (seq, source_id, message_id, type, event, user_id, anonymous_id, timestamp,
                        original_timestamp, sent_at, received_at, message)
SELECT base.n + keep.rn, s.source_id, s.message_id, s.type, s.event, s.user_id, s.anonymous_id,
       coalesce(s.timestamp, CASE WHEN s.sent_at IS NULL OR s.original_timestamp IS NULL
                                  THEN coalesce(s.original_timestamp, s.received_at)
                                  ELSE s.received_at - (s.sent_at - s.original_timestamp) END),
       coalesce(s.original_timestamp, s.received_at), s.sent_at, s.received_at, CAST(s.doc AS JSON)
FROM (
    SELECT pos, row_number() OVER (ORDER BY pos) AS rn
    FROM (
        SELECT min(pos) AS pos, source_id, message_id
        FROM (
    SELECT pos, source_id, timestamp, original_timestamp, sent_at, received_at, doc,
           CASE WHEN kind = 'X' THEN json_extract_string(CAST(doc AS JSON), '$.messageId') ELSE message_id END AS message_id,
           CASE WHEN kind = 'X' THEN json_extract_string(CAST(doc AS JSON), '$.type') ELSE type END AS type,
           CASE WHEN kind = 'X' THEN json_extract_string(CAST(doc AS JSON), '$.event') ELSE event END AS event,
           CASE WHEN kind = 'X' THEN json_extract_string(CAST(doc AS JSON), '$.userId') ELSE user_id END AS user_id,
           CASE WHEN kind = 'X' THEN json_extract_string(CAST(doc AS JSON), '$.anonymousId') ELSE anonymous_id END AS anonymous_id
    FROM _cdp_load_stage
    WHERE kind IN ('A', 'X')) AS narrow
        GROUP BY source_id, message_id
    ) AS firsts
    WHERE NOT EXISTS (
        SELECT 1 FROM raw_events AS r
        WHERE r.source_id = firsts.source_id AND r.message_id = firsts.message_id
          -- An imported record's id is a hash of its content: the same record is never stored twice, however old.
          AND (r.received_at >= ? OR r.type = 'record')
    )
) AS keep
JOIN (
    SELECT pos, source_id, timestamp, original_timestamp, sent_at, received_at, doc,
           CASE WHEN kind = 'X' THEN json_extract_string(CAST(doc AS JSON), '$.messageId') ELSE message_id END AS message_id,
           CASE WHEN kind = 'X' THEN json_extract_string(CAST(doc AS JSON), '$.type') ELSE type END AS type,
           CASE WHEN kind = 'X' THEN json_extract_string(CAST(doc AS JSON), '$.event') ELSE event END AS event,
           CASE WHEN kind = 'X' THEN json_extract_string(CAST(doc AS JSON), '$.userId') ELSE user_id END AS user_id,
           CASE WHEN kind = 'X' THEN json_extract_string(CAST(doc AS JSON), '$.anonymousId') ELSE anonymous_id END AS anonymous_id
    FROM _cdp_load_stage
    WHERE kind IN ('A', 'X')) AS s ON s.pos = keep.pos
CROSS JOIN (SELECT coalesce(max(seq), 0) AS n FROM raw_events) AS base;

INSERT INTO rejected_messages (seq, source_id, received_at, code, reason, payload)
SELECT (SELECT coalesce(max(seq), 0) FROM rejected_messages) + row_number() OVER (ORDER BY pos),
       source_id, received_at,
       json_extract_string(j, '$.code'),
       json_extract_string(j, '$.reason'),
       json_extract_string(j, '$.payload')
FROM (SELECT pos, source_id, received_at, CAST(doc AS JSON) AS j FROM _cdp_load_stage WHERE kind = 'R') AS s;

INSERT INTO load_stats (loaded_at, source_id, lines, stored)
SELECT ?, s.source_id, s.n, coalesce(r.n, 0)
FROM (SELECT source_id, count(*) AS n FROM _cdp_load_stage WHERE kind IN ('A', 'X') GROUP BY source_id) AS s
LEFT JOIN (SELECT source_id, count(*) AS n FROM raw_events WHERE seq > ? GROUP BY source_id) AS r
  ON r.source_id = s.source_id;
