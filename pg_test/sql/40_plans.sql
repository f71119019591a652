-- The policy predicate is an index condition, evaluated once per scan, not per row.
\c - tg_owner
CREATE TABLE big (id bigint PRIMARY KEY, tenant_id uuid NOT NULL, v int NOT NULL);
CREATE INDEX big_tenant_v ON big (tenant_id, v);
INSERT INTO big SELECT g, ('00000000-0000-0000-0000-' || lpad((g % 100)::text, 12, '0'))::uuid, g % 1000
  FROM generate_series(1, 20000) g;
ANALYZE big;
SELECT tenantguard.protect('big');
GRANT SELECT ON big TO tg_app;
\c - tg_app
SET app.current_tenant_id = '00000000-0000-0000-0000-000000000007';
EXPLAIN (COSTS OFF) SELECT count(*), sum(v) FROM big WHERE v BETWEEN 100 AND 200;
EXPLAIN (COSTS OFF) SELECT * FROM big WHERE id = 107;
SELECT count(*), sum(v) FROM big WHERE v BETWEEN 100 AND 200;
SELECT id, v FROM big WHERE id = 107;
SELECT id, v FROM big WHERE id = 108;
