SELECT count(*) FILTER (WHERE (l0 AND l1 AND l2 AND (NOT l3) AND l4 AND l5)), count(*) FILTER (WHERE l0), count(*) FILTER (WHERE l1), count(*) FILTER (WHERE l2), count(*) FILTER (WHERE (NOT l3)), count(*) FILTER (WHERE l3), count(*) FILTER (WHERE l4), count(*) FILTER (WHERE l5) FROM (WITH _ac AS MATERIALIZED (
            SELECT m.profile_key AS pk, sum(g.c0) AS a0, sum(g.c1) AS a1, sum(CASE WHEN g.item IS NULL THEN g.c2 WHEN g.c2 > 0 THEN 1 ELSE 0 END) AS a2 FROM (
                SELECT node_id, CASE WHEN m2 THEN item_key END AS item, count(*) FILTER (WHERE m0) AS c0, count(*) FILTER (WHERE m1) AS c1, count(*) FILTER (WHERE m2) AS c2 FROM (
                    SELECT node_id, item_key, grain IS NOT NULL AND name = 'Product Added' AND prop_category = 'tools' AND ts >= CAST('2026-01-01T00:00:00+00:00' AS TIMESTAMPTZ) - INTERVAL 30 DAY AS m0, grain IS NOT NULL AND name = 'Order Completed' AND ts >= CAST('2026-01-01T00:00:00+00:00' AS TIMESTAMPTZ) - INTERVAL 7 DAY AS m1, grain = 'orders' AS m2 FROM activity AS act
                    WHERE ((grain = 'orders') OR (grain IS NOT NULL AND name = 'Order Completed') OR (grain IS NOT NULL AND name = 'Product Added'))) AS f
                WHERE m0 OR m1 OR m2
                GROUP BY node_id, item) AS g
            JOIN profile_nodes AS m ON m.node_id = g.node_id GROUP BY m.profile_key) SELECT c.profile_id, coalesce(c.ltv_net > 100.0, FALSE) AS l0, coalesce(c.city IN ('Berlin', 'Paris'), FALSE) AS l1, c.profile_key IN (SELECT pk FROM _ac WHERE a0 >= 2) AS l2, c.profile_key IN (SELECT pk FROM _ac WHERE a1 >= 1) AS l3, c.profile_key IN (SELECT pk FROM _ac WHERE a2 >= 3) AS l4, coalesce(strpos(c.identifier_types, ',user_id,') > 0, FALSE) AS l5 FROM profile_computed AS c) AS f;

SELECT profile_id FROM (WITH _ac AS MATERIALIZED (
            SELECT m.profile_id AS pk, sum(g.c0) AS a0, sum(g.c1) AS a1, sum(CASE WHEN g.item IS NULL THEN g.c2 WHEN g.c2 > 0 THEN 1 ELSE 0 END) AS a2 FROM (
                SELECT node_id, CASE WHEN m2 THEN item_key END AS item, count(*) FILTER (WHERE m0) AS c0, count(*) FILTER (WHERE m1) AS c1, count(*) FILTER (WHERE m2) AS c2 FROM (
                    SELECT node_id, item_key, grain IS NOT NULL AND name = 'Product Added' AND json_extract_string(props, '$.category') = 'tools' AND ts >= CAST('2026-01-01T00:00:00+00:00' AS TIMESTAMPTZ) - INTERVAL 30 DAY AS m0, grain IS NOT NULL AND name = 'Order Completed' AND ts >= CAST('2026-01-01T00:00:00+00:00' AS TIMESTAMPTZ) - INTERVAL 7 DAY AS m1, grain = 'orders' AS m2 FROM _sg_activity AS act
                    WHERE ((grain = 'orders') OR (grain IS NOT NULL AND name = 'Order Completed') OR (grain IS NOT NULL AND name = 'Product Added'))) AS f
                WHERE m0 OR m1 OR m2
                GROUP BY node_id, item) AS g
            JOIN _sg_nodes AS m ON m.node_id = g.node_id GROUP BY m.profile_id) SELECT c.profile_id, coalesce(c.ltv_net > 100.0, FALSE) AS l0, c.profile_id IN (SELECT profile_id FROM _sg_traits AS t WHERE trait = 'city' AND value IN ('Berlin', 'Paris')) AS l1, c.profile_id IN (SELECT pk FROM _ac WHERE a0 >= 2) AS l2, c.profile_id IN (SELECT pk FROM _ac WHERE a1 >= 1) AS l3, c.profile_id IN (SELECT pk FROM _ac WHERE a2 >= 3) AS l4, coalesce(strpos(c.identifier_types, ',user_id,') > 0, FALSE) AS l5 FROM _sg_base AS c) AS f WHERE (l0 AND l1 AND l2 AND (NOT l3) AND l4 AND l5);
