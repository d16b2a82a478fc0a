INSERT INTO _pf_keyed (seq, node_id, source_id, origin, ts, verified, pre, k, raw)
    SELECT seq, node_id, source_id, origin, ts, verified, pre, k,
           CASE cdp_json_type(v) WHEN 'string' THEN cdp_json_text(v) WHEN 'null' THEN NULL WHEN 'object' THEN NULL
                ELSE CAST(v AS VARCHAR) END
    FROM (SELECT *, cdp_json_get(obj, k) AS v FROM (
              SELECT seq, node_id, source_id, origin, ts, verified, obj, pre, contact_only,
                     unnest(cdp_json_keys(obj)) AS k
              FROM (
        SELECT seq, node_id, source_id, origin, ts, FALSE AS verified, json_extract(message, '$.traits') AS obj,
               '' AS pre, FALSE AS contact_only
        FROM _pf_batch WHERE type = 'identify'
        UNION ALL
        SELECT seq, node_id, source_id, origin, ts, FALSE, json_extract(message, '$.traits.address'), 'address.', FALSE
        FROM _pf_batch WHERE type = 'identify'
        UNION ALL
        SELECT seq, node_id, source_id, origin, ts, FALSE, json_extract(message, '$.context.traits'), '', FALSE
        FROM _pf_batch WHERE type <> 'record'
        UNION ALL
        SELECT seq, node_id, source_id, origin, ts, TRUE, json_extract(message, '$.fields'), '', event <> 'customers'
        FROM _pf_batch WHERE type = 'record'
        UNION ALL
        SELECT seq, node_id, source_id, origin, ts, TRUE, json_extract(message, '$.attributes'), '', FALSE
        FROM _pf_batch WHERE type = 'record' AND event = 'customers') AS o WHERE obj IS NOT NULL AND node_id IS NOT NULL) AS u
          WHERE lower(regexp_replace(k, '[^A-Za-z0-9]', '', 'g')) NOT IN ('anonymousid', 'createdat', 'customerid', 'id', 'nationalid', 'updatedat', 'userid') AND length(k) <= 128
            AND (NOT contact_only OR k IN ('email', 'phone', 'name'))) AS x;

INSERT INTO trait_observations (seq, node_id, source_id, origin, trait, value, verified, observed_at)
    SELECT seq, node_id, source_id, origin, trait, value, verified, ts FROM (
        SELECT seq, node_id, source_id, origin, ts, verified, trait, CASE WHEN trait IN ('email') THEN lower(trim(raw)) WHEN trait IN ('phone') THEN CASE WHEN length(regexp_replace(replace(raw, '(0)', ''), '[^0-9]', '', 'g')) >= 7 AND replace(regexp_replace(replace(raw, '(0)', ''), '[^0-9]', '', 'g'), left(regexp_replace(replace(raw, '(0)', ''), '[^0-9]', '', 'g'), 1), '') <> '' THEN CASE WHEN left(trim(raw), 1) = '+' THEN '+' || regexp_replace(replace(raw, '(0)', ''), '[^0-9]', '', 'g') WHEN left(regexp_replace(replace(raw, '(0)', ''), '[^0-9]', '', 'g'), 2) = '00' THEN '+' || substr(regexp_replace(replace(raw, '(0)', ''), '[^0-9]', '', 'g'), 3) ELSE regexp_replace(replace(raw, '(0)', ''), '[^0-9]', '', 'g') END END ELSE trim(raw) END AS value FROM (
            SELECT k.seq, k.node_id, k.source_id, k.origin, k.ts, k.verified, k.raw,
                   coalesce(syn.trait, k.pre || k.k) AS trait
            FROM _pf_keyed AS k LEFT JOIN (VALUES ('firstname', 'first_name'), ('givenname', 'first_name'), ('forename', 'first_name'), ('lastname', 'last_name'), ('surname', 'last_name'), ('familyname', 'last_name'), ('name', 'name'), ('fullname', 'name'), ('email', 'email'), ('emailaddress', 'email'), ('phone', 'phone'), ('phonenumber', 'phone'), ('mobile', 'phone'), ('birthdate', 'birth_date'), ('birthday', 'birth_date'), ('dateofbirth', 'birth_date'), ('dob', 'birth_date'), ('gender', 'gender'), ('street', 'street'), ('address1', 'street'), ('streetaddress', 'street'), ('housenumber', 'house_number'), ('streetnumber', 'house_number'), ('city', 'city'), ('town', 'city'), ('postalcode', 'postal_code'), ('postcode', 'postal_code'), ('zip', 'postal_code'), ('zipcode', 'postal_code'), ('region', 'region'), ('state', 'region'), ('province', 'region'), ('country', 'country'), ('countrycode', 'country')) AS syn (key, trait) ON syn.key = lower(regexp_replace(k.k, '[^A-Za-z0-9]', '', 'g'))) AS t) AS v
    WHERE value IS NOT NULL AND value <> '' AND lower(value) NOT IN ('', '-', '0', '00000000-0000-0000-0000-000000000000', '0000000000', '1234567890', '[object object]', 'anonymous', 'email@example.com', 'n/a', 'na', 'nil', 'no@email.com', 'noemail@noemail.com', 'none', 'none@none.com', 'not provided', 'null', 'test', 'test@example.com', 'test@test.com', 'undefined', 'unknown', 'user@example.com');

INSERT INTO _pf_typed (seq, node_id, source_id, type, event, ts, message, grain, order_id, amount_text,
                                     currency_text)
    SELECT seq, node_id, source_id, type, event, ts, message,
           CASE WHEN type = 'record' AND event IN ('orders', 'returns', 'tickets') THEN event
                WHEN type = 'track' AND event = 'Order Completed' THEN 'orders'
                WHEN type = 'track' AND event = 'Order Refunded' THEN 'returns'
                WHEN type = 'track' THEN 'events'
                WHEN type IN ('page', 'screen') THEN 'pages' END,
           CASE WHEN type = 'record' THEN json_extract_string(message, '$.fields.order_id') ELSE json_extract_string(message, '$.properties.order_id') END,
           CASE WHEN type = 'record' THEN json_extract_string(message, '$.fields.amount')
                ELSE coalesce(json_extract_string(message, '$.properties.total'), json_extract_string(message, '$.properties.revenue'), json_extract_string(message, '$.properties.value')) END,
           CASE WHEN type = 'record' THEN json_extract_string(message, '$.fields.currency') ELSE json_extract_string(message, '$.properties.currency') END
    FROM _pf_batch;

INSERT INTO _pf_activity SELECT seq, node_id, node_id AS anchor, source_id,
           CASE WHEN type = 'record' THEN event ELSE type END AS kind,
           CASE WHEN type IN ('page', 'screen') THEN json_extract_string(message, '$.name') ELSE event END AS name,
           grain, ts,
           CASE WHEN grain = 'orders' AND order_id IS NOT NULL THEN 'order:' || order_id
                WHEN grain IN ('returns', 'tickets') AND type = 'record'
                THEN grain || ':' || source_id || ':' || json_extract_string(message, '$.key') END AS item_key,
           order_id, CASE WHEN regexp_matches(amount_text, '^ *-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)? *$') THEN CAST(trim(amount_text) AS DOUBLE) END AS amount, upper(trim(currency_text)) AS currency,
           CASE WHEN type = 'record' THEN json_extract(message, '$.fields')
                ELSE json_extract(message, '$.properties') END AS props
    FROM _pf_typed;

SELECT profile_id, trait, value, source_id, origin, verified, seq, observed_at, CASE trait WHEN 'birth_date' THEN 'most_frequent, most_recent' WHEN 'city' THEN 'most_recent' WHEN 'country' THEN 'most_recent' WHEN 'email' THEN 'verified, most_recent' WHEN 'first_name' THEN 'most_recent' WHEN 'gender' THEN 'most_recent' WHEN 'house_number' THEN 'most_recent' WHEN 'last_name' THEN 'most_recent' WHEN 'name' THEN 'most_recent' WHEN 'phone' THEN 'verified, most_recent' WHEN 'plan' THEN 'most_frequent' WHEN 'postal_code' THEN 'most_recent' WHEN 'region' THEN 'most_recent' WHEN 'street' THEN 'most_recent' ELSE 'most_recent' END AS rule
    FROM (
        SELECT *, row_number() OVER (PARTITION BY profile_id, trait ORDER BY CASE trait WHEN 'birth_date' THEN -reports WHEN 'city' THEN -epoch(observed_at) WHEN 'country' THEN -epoch(observed_at) WHEN 'email' THEN CASE WHEN verified THEN 0 ELSE 1 END WHEN 'first_name' THEN -epoch(observed_at) WHEN 'gender' THEN -epoch(observed_at) WHEN 'house_number' THEN -epoch(observed_at) WHEN 'last_name' THEN -epoch(observed_at) WHEN 'name' THEN -epoch(observed_at) WHEN 'phone' THEN CASE WHEN verified THEN 0 ELSE 1 END WHEN 'plan' THEN -reports WHEN 'postal_code' THEN -epoch(observed_at) WHEN 'region' THEN -epoch(observed_at) WHEN 'street' THEN -epoch(observed_at) ELSE -epoch(observed_at) END, CASE trait WHEN 'birth_date' THEN -epoch(observed_at) WHEN 'city' THEN 0 WHEN 'country' THEN 0 WHEN 'email' THEN -epoch(observed_at) WHEN 'first_name' THEN 0 WHEN 'gender' THEN 0 WHEN 'house_number' THEN 0 WHEN 'last_name' THEN 0 WHEN 'name' THEN 0 WHEN 'phone' THEN -epoch(observed_at) WHEN 'plan' THEN 0 WHEN 'postal_code' THEN 0 WHEN 'region' THEN 0 WHEN 'street' THEN 0 ELSE 0 END, observed_at DESC, seq DESC) AS rank FROM (
            SELECT m.profile_id, o.trait, o.value, o.source_id, o.origin, o.seq, o.observed_at, o.verified,
                   count(*) OVER (PARTITION BY m.profile_id, o.trait, o.value) AS reports
            FROM trait_observations AS o JOIN _pf_members AS m ON m.node_id = o.node_id
            WHERE o.trait NOT IN ('email', 'phone') OR EXISTS (
                SELECT 1 FROM _pf_members AS own JOIN identity_nodes AS n ON n.node_id = own.node_id
                WHERE own.profile_id = m.profile_id AND n.id_type = o.trait AND n.id_value = o.value)
        ) AS counted) AS ranked
    WHERE rank = 1;

WITH _pf_rows AS MATERIALIZED (SELECT m.profile_id, a.seq, a.grain, a.name, a.ts, a.amount, a.props,
                      a.amount * CASE coalesce(currency, 'USD') WHEN 'EUR' THEN 1.1 WHEN 'USD' THEN 1.0 END AS amount_ws,
                      row_number() OVER (PARTITION BY m.profile_id, coalesce(a.item_key, CAST(a.seq AS VARCHAR))
                                         ORDER BY a.seq DESC) AS version
               FROM activity AS a JOIN _pf_members AS m ON m.node_id = a.node_id
               WHERE a.grain IS NOT NULL) SELECT profile_id, order_count, gross_revenue, refunds, first_order_at, last_order_at, discounted_orders, favourite_category, favourite_brand, ticket_count, last_contact_at, avg_ticket_sentiment, ltv_net, return_rate, avg_order_value, days_since_last_order, discount_dependence FROM (SELECT *, discounted_orders / NULLIF(order_count, 0) AS discount_dependence FROM (SELECT *, CAST(DATE_DIFF('DAY', last_order_at, CAST('2026-01-01T00:00:00+00:00' AS TIMESTAMPTZ)) AS DOUBLE) AS days_since_last_order FROM (SELECT *, gross_revenue / NULLIF(order_count, 0) AS avg_order_value FROM (SELECT *, refunds / NULLIF(gross_revenue, 0) AS return_rate FROM (SELECT *, CAST(gross_revenue AS DOUBLE) - CAST(refunds AS DOUBLE) AS ltv_net FROM (SELECT b.*, f.favourite_brand FROM (SELECT b.*, f.favourite_category FROM (SELECT p.profile_id, coalesce(g.order_count, 0) AS order_count, CASE WHEN g.profile_id IS NULL THEN 0 ELSE g.gross_revenue END AS gross_revenue, CASE WHEN g.profile_id IS NULL THEN 0 ELSE g.refunds END AS refunds, g.first_order_at, g.last_order_at, coalesce(g.discounted_orders, 0) AS discounted_orders, coalesce(g.ticket_count, 0) AS ticket_count, g.last_contact_at, g.avg_ticket_sentiment
               FROM _pf_live AS p
               LEFT JOIN (SELECT profile_id, count(*) FILTER (WHERE grain = 'orders') AS order_count, CASE WHEN count(*) FILTER (WHERE grain = 'orders' AND amount IS NOT NULL AND amount_ws IS NULL) > 0 THEN NULL ELSE coalesce(sum(amount_ws) FILTER (WHERE grain = 'orders'), 0) END AS gross_revenue, CASE WHEN count(*) FILTER (WHERE grain = 'returns' AND amount IS NOT NULL AND amount_ws IS NULL) > 0 THEN NULL ELSE coalesce(sum(amount_ws) FILTER (WHERE grain = 'returns'), 0) END AS refunds, min(ts) FILTER (WHERE grain = 'orders') AS first_order_at, max(ts) FILTER (WHERE grain = 'orders') AS last_order_at, count(*) FILTER (WHERE grain = 'orders' AND CASE WHEN regexp_matches(json_extract_string(props, '$.discount'), '^ *-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)? *$') THEN CAST(trim(json_extract_string(props, '$.discount')) AS DOUBLE) END > 0.0) AS discounted_orders, count(*) FILTER (WHERE grain = 'tickets') AS ticket_count, max(ts) FILTER (WHERE grain = 'tickets') AS last_contact_at, avg(CASE WHEN regexp_matches(json_extract_string(props, '$.sentiment'), '^ *-?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)? *$') THEN CAST(trim(json_extract_string(props, '$.sentiment')) AS DOUBLE) END) FILTER (WHERE grain = 'tickets') AS avg_ticket_sentiment FROM _pf_rows WHERE version = 1 GROUP BY profile_id) AS g
                      ON g.profile_id = p.profile_id) AS b LEFT JOIN (
                SELECT profile_id, favourite_category FROM (
                    SELECT profile_id, v AS favourite_category,
                           row_number() OVER (PARTITION BY profile_id ORDER BY n DESC, last_ts DESC, v) AS rank
                    FROM (SELECT profile_id, json_extract_string(props, '$.category') AS v, count(*) AS n, max(ts) AS last_ts FROM _pf_rows
                          WHERE version = 1 AND grain = 'events' AND name IN ('Product Viewed', 'Product Clicked', 'Product Added') AND json_extract_string(props, '$.category') IS NOT NULL
                          GROUP BY profile_id, json_extract_string(props, '$.category')) AS c) AS r
                WHERE rank = 1) AS f ON f.profile_id = b.profile_id) AS b LEFT JOIN (
                SELECT profile_id, favourite_brand FROM (
                    SELECT profile_id, v AS favourite_brand,
                           row_number() OVER (PARTITION BY profile_id ORDER BY n DESC, last_ts DESC, v) AS rank
                    FROM (SELECT profile_id, json_extract_string(props, '$.brand') AS v, count(*) AS n, max(ts) AS last_ts FROM _pf_rows
                          WHERE version = 1 AND grain = 'events' AND name IN ('Product Viewed', 'Product Clicked', 'Product Added') AND json_extract_string(props, '$.brand') IS NOT NULL
                          GROUP BY profile_id, json_extract_string(props, '$.brand')) AS c) AS r
                WHERE rank = 1) AS f ON f.profile_id = b.profile_id) AS x_ltv_net) AS x_return_rate) AS x_avg_order_value) AS x_days_since_last_order) AS x_discount_dependence) AS traits;
