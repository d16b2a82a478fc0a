CREATE TEMP SEQUENCE IF NOT EXISTS _cdp_load_pos;

CREATE TEMP TABLE IF NOT EXISTS _cdp_load_stage (
        kind VARCHAR, source_id VARCHAR, message_id VARCHAR, type VARCHAR, event VARCHAR, user_id VARCHAR, anonymous_id VARCHAR, timestamp TIMESTAMPTZ, original_timestamp TIMESTAMPTZ, sent_at TIMESTAMPTZ, received_at TIMESTAMPTZ, doc VARCHAR,
        pos BIGINT DEFAULT nextval('_cdp_load_pos')
    );

INSERT INTO raw_events (seq, source_id, message_id, type, event, user_id, anonymous_id, timestamp,
                        original_timestamp, sent_at, received_at, message)
SELECT (SELECT coalesce(max(seq), 0) FROM raw_events) + row_number() OVER (ORDER BY pos),
       source_id, message_id, type, event, user_id, anonymous_id,
       coalesce(timestamp, CASE WHEN sent_at IS NULL OR original_timestamp IS NULL
                                THEN coalesce(original_timestamp, received_at)
                                ELSE received_at - (sent_at - original_timestamp) END),
       coalesce(original_timestamp, received_at), sent_at, received_at, CAST(doc AS JSON)
FROM (
    SELECT *, row_number() OVER (PARTITION BY source_id, message_id ORDER BY pos) AS copy_no
    FROM (
        SELECT pos, source_id, timestamp, original_timestamp, sent_at, received_at, doc,
               CASE WHEN kind = 'X' THEN json_extract_string(CAST(doc AS JSON), '$.messageId') ELSE message_id END AS message_id,
               CASE WHEN kind = 'X' THEN json_extract_string(CAST(doc AS JSON), '$.type') ELSE type END AS type,
               CASE WHEN kind = 'X' THEN json_extract_string(CAST(doc AS JSON), '$.event') ELSE event END AS event,
               CASE WHEN kind = 'X' THEN json_extract_string(CAST(doc AS JSON), '$.userId') ELSE user_id END AS user_id,
               CASE WHEN kind = 'X' THEN json_extract_string(CAST(doc AS JSON), '$.anonymousId') ELSE anonymous_id END AS anonymous_id
        FROM _cdp_load_stage
        WHERE kind IN ('A', 'X')
    ) AS s
) AS x
WHERE copy_no = 1
  AND NOT EXISTS (
      SELECT 1 FROM raw_events AS r
      WHERE r.source_id = x.source_id AND r.message_id = x.message_id AND r.received_at >= ?
  );

INSERT INTO rejected_messages (seq, source_id, received_at, code, reason, payload)
SELECT (SELECT coalesce(max(seq), 0) FROM rejected_messages) + row_number() OVER (ORDER BY pos),
       source_id, received_at,
       json_extract_string(j, '$.code'),
       json_extract_string(j, '$.reason'),
       json_extract_string(j, '$.payload')
FROM (SELECT pos, source_id, received_at, CAST(doc AS JSON) AS j FROM _cdp_load_stage WHERE kind = 'R') AS s;
