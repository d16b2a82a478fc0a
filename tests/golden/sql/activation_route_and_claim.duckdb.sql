INSERT INTO outbox (delivery_id, destination, idempotency_key, kind, audience, change, cause, profile_id, gseq, payload, happened_at, state, attempts, next_at, created_at, delivered_at, last_error, replays)
    SELECT ? + row_number() OVER (ORDER BY o.destination, m.audience, m.profile_id), o.destination,
           o.destination || ':sync:' || m.audience || ':' || m.profile_id || ':' || CAST(? AS VARCHAR),
           'audience', m.audience, 'entered', 'first_sync', m.profile_id, NULL, NULL, m.since,
           'pending', 0, ?, ?, NULL, NULL, 0
    FROM destination_offsets AS o
    JOIN audience_members AS m ON o.stream = 'audience:' || m.audience
    WHERE o.upto IS NULL;

INSERT INTO outbox (delivery_id, destination, idempotency_key, kind, audience, change, cause, profile_id, gseq, payload, happened_at, state, attempts, next_at, created_at, delivered_at, last_error, replays)
    SELECT ? + row_number() OVER (ORDER BY c.change_seq, o.destination), o.destination,
           o.destination || ':change:' || CAST(c.change_seq AS VARCHAR),
           'audience', c.audience, c.change, c.cause, c.profile_id, NULL, NULL, c.happened_at,
           'pending', 0, ?, ?, NULL, NULL, 0
    FROM destination_offsets AS o
    JOIN audience_changes AS c ON o.stream = 'audience:' || c.audience
    WHERE o.upto IS NOT NULL AND c.change_seq > o.upto AND c.change_seq <= ?;

INSERT INTO outbox (delivery_id, destination, idempotency_key, kind, audience, change, cause, profile_id, gseq, payload, happened_at, state, attempts, next_at, created_at, delivered_at, last_error, replays)
    SELECT ? + row_number() OVER (ORDER BY g.gseq, o.destination), o.destination,
           o.destination || ':event:' || CAST(g.gseq AS VARCHAR),
           'event', NULL, NULL, NULL, m.profile_id, g.gseq, NULL, coalesce(g.timestamp, g.received_at),
           'pending', 0, ?, ?, NULL, NULL, 0
    FROM destination_offsets AS o
    JOIN governed AS g ON o.stream = 'event:' || g.event
    LEFT JOIN message_identities AS mi ON mi.seq = g.seq
    LEFT JOIN identity_membership AS m ON m.node_id = mi.node_id
    WHERE g.type = 'track' AND o.upto IS NOT NULL AND g.gseq > o.upto AND g.gseq <= ?;

SELECT r.destination, r.audience, count(*) AS n,
           (SELECT count(*) FROM outbox AS h WHERE h.destination = r.destination AND h.audience = r.audience
            AND h.state = 'held' AND h.delivery_id <= ?) AS behind_held
    FROM outbox AS r
    WHERE r.delivery_id > ? AND r.kind = 'audience'
    GROUP BY r.destination, r.audience;

SELECT delivery_id, destination, idempotency_key, kind, audience, change, cause, profile_id, gseq,
           payload, happened_at, attempts, replays
    FROM (SELECT o.*, row_number() OVER (PARTITION BY o.destination ORDER BY o.delivery_id) AS rn
          FROM outbox AS o
          WHERE o.state = 'pending' AND o.next_at <= ? AND o.destination IN (?, ?)
            AND NOT EXISTS (SELECT 1 FROM outbox AS e WHERE e.destination = o.destination
                            AND e.profile_id = o.profile_id AND e.delivery_id < o.delivery_id
                            AND e.state IN ('pending', 'held'))) AS due
    WHERE rn <= ?
    ORDER BY destination, delivery_id;
