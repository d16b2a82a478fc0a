INSERT INTO raw_events (seq, source_id, message_id, type, event, user_id, anonymous_id, timestamp,
                        original_timestamp, sent_at, received_at, message)
SELECT (SELECT coalesce(max(seq), 0) FROM raw_events) + row_number() OVER (ORDER BY pos),
       source_id, message_id, type, event, user_id, anonymous_id, ts, ots, sat, rat, j
FROM (
    SELECT pos, source_id, j, message_id, type, event, user_id, anonymous_id, ts, ots, sat, rat,
           row_number() OVER (PARTITION BY source_id, message_id ORDER BY pos) AS copy_no
    FROM (
        SELECT pos, source_id, j, f[1] AS message_id, f[2] AS type, f[3] AS event, f[4] AS user_id,
               f[5] AS anonymous_id, CAST(f[6] AS TIMESTAMPTZ) AS ts, CAST(f[7] AS TIMESTAMPTZ) AS ots,
               CAST(f[8] AS TIMESTAMPTZ) AS sat, CAST(f[9] AS TIMESTAMPTZ) AS rat
        FROM (
            SELECT pos, source_id, j,
                   json_extract_string(j, ['$.messageId', '$.type', '$.event', '$.userId', '$.anonymousId',
                                           '$.timestamp', '$.originalTimestamp', '$.sentAt', '$.receivedAt']) AS f
            FROM (SELECT pos, source_id, CAST(doc AS JSON) AS j FROM _cdp_stage_journal WHERE kind = 'A') AS s0
        ) AS s
    ) AS e
) AS x
WHERE copy_no = 1
  AND NOT EXISTS (
      SELECT 1 FROM raw_events AS r
      WHERE r.source_id = x.source_id AND r.message_id = x.message_id AND r.received_at >= ?
  );

INSERT INTO rejected_messages (seq, source_id, received_at, code, reason, payload)
SELECT (SELECT coalesce(max(seq), 0) FROM rejected_messages) + row_number() OVER (ORDER BY pos),
       source_id,
       CAST(json_extract_string(j, '$.receivedAt') AS TIMESTAMPTZ),
       json_extract_string(j, '$.code'),
       json_extract_string(j, '$.reason'),
       json_extract_string(j, '$.payload')
FROM (SELECT pos, source_id, CAST(doc AS JSON) AS j FROM _cdp_stage_journal WHERE kind = 'R') AS s;
