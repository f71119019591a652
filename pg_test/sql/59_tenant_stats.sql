-- Per-tenant usage: every top-level statement counted per database, role and tenant (the tenant
-- and role as they were when it started), errors and timeouts included; read per tenant.
\set SHOW_CONTEXT never
\c - postgres
SELECT name, setting, context FROM pg_settings WHERE name LIKE 'tenantguard.tenant_stats%' ORDER BY name;
CREATE TABLE ts_one AS SELECT 1 AS n;
GRANT SELECT ON ts_one TO PUBLIC;
-- Sessions of earlier files publish what they counted as they exit: wait for them to be gone.
DO $$
BEGIN
  FOR i IN 1..200 LOOP
    EXIT WHEN NOT EXISTS (SELECT FROM pg_stat_activity
                           WHERE backend_type = 'client backend' AND pid <> pg_backend_pid());
    PERFORM pg_sleep(0.05);
  END LOOP;
END $$;
SELECT tenantguard.reset_tenant_stats() >= 0 AS reset;
-- A known workload as the application role, for two tenants.
SET ROLE tg_app;
SET app.current_tenant_id = 'ts-a';
SELECT 1 AS one;
SELECT generate_series(1, 5) AS five;
SELECT 1 / (n - 1) AS fails_in_executor FROM ts_one;
\echo sqlstate :LAST_ERROR_SQLSTATE
SELEC 1;
\echo sqlstate :LAST_ERROR_SQLSTATE
SET statement_timeout = '100ms';
SELECT pg_sleep(1) AS timed_out;
\echo sqlstate :LAST_ERROR_SQLSTATE
RESET statement_timeout;
BEGIN;
SELECT 1 AS in_block;
SAVEPOINT s;
SELECT 1 / (n - 1) AS fails_in_savepoint FROM ts_one;
ROLLBACK TO SAVEPOINT s;
SELEC 2;
ROLLBACK TO SAVEPOINT s;
SELECT 2 AS after_rollback_to;
COMMIT;
-- Only superusers change whether statements are counted.
SET tenantguard.tenant_stats = off;
\echo sqlstate :LAST_ERROR_SQLSTATE
SET app.current_tenant_id = 'ts-b';
SELECT 1 AS one;
RESET ROLE;
RESET app.current_tenant_id;
-- ts-a as tg_app: 13 statements (the SET of ts-b started under ts-a; BEGIN, SAVEPOINT, ROLLBACK
-- TO and COMMIT are not counted), 8 rows, 5 errors (two in the executor, two while parsing, the
-- refused SET), 1 timeout. ts-b: tg_app's SELECT and RESET ROLE, then postgres's RESET.
SELECT tenant_id, db_user, calls, rows, errors, timeouts,
       max_time_ms >= 100 AS ran_100ms, total_time_ms >= max_time_ms AS total_covers_max,
       round(mean_time_ms::numeric, 6) = round((total_time_ms / calls)::numeric, 6) AS mean_is_total_over_calls,
       shared_blks_hit + shared_blks_read > 0 AS read_blocks, first_seen <= last_seen AS seen_in_order
  FROM tenantguard.tenant_stats() WHERE tenant_id IN ('ts-a', 'ts-b') ORDER BY 1, 2;
-- The heaviest tenants, every role added up; what to rank by is checked.
SELECT tenant_id, calls, errors FROM tenantguard.top_tenants(3, 'errors') WHERE tenant_id IS NOT NULL;
SELECT tenant_id, calls FROM tenantguard.top_tenants(1, 'calls') WHERE tenant_id IS NOT NULL;
SELECT * FROM tenantguard.top_tenants(3, 'bogus');
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT * FROM tenantguard.top_tenants(-1);
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT max_entries, entries >= 3 AS has_entries, evicted FROM tenantguard.tenant_stats_info();
-- A tenant sees its own rows only; without a tenant, nothing. Sizes and resets are not theirs.
\c - tg_other
SELECT count(*) AS rows_without_tenant FROM tenantguard.tenant_stats();
SELECT count(*) AS top_without_tenant FROM tenantguard.top_tenants();
SET app.current_tenant_id = 'ts-b';
SELECT DISTINCT tenant_id FROM tenantguard.tenant_stats();
SELECT tenant_id FROM tenantguard.top_tenants(10, 'calls');
SELECT * FROM tenantguard.tenant_stats_info();
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT tenantguard.reset_tenant_stats();
\echo sqlstate :LAST_ERROR_SQLSTATE
SET app.current_tenant_id = 'ts-a';
SELECT DISTINCT tenant_id FROM tenantguard.tenant_stats();
SET app.current_tenant_id = '';
SELECT count(*) AS rows_with_empty_tenant FROM tenantguard.tenant_stats();
-- pg_read_all_stats members see every tenant, and still may not reset.
\c - postgres
GRANT pg_read_all_stats TO tg_other;
\c - tg_other
SELECT count(DISTINCT tenant_id) >= 2 AS sees_every_tenant
  FROM tenantguard.tenant_stats() WHERE tenant_id IN ('ts-a', 'ts-b');
SELECT max_entries FROM tenantguard.tenant_stats_info();
SELECT tenantguard.reset_tenant_stats();
\echo sqlstate :LAST_ERROR_SQLSTATE
\c - postgres
REVOKE pg_read_all_stats FROM tg_other;
-- Off: nothing counted.
SELECT tenantguard.reset_tenant_stats() > 0 AS reset;
SET tenantguard.tenant_stats = off;
SET app.current_tenant_id = 'ts-off';
SELECT 1 AS not_counted;
RESET app.current_tenant_id;
RESET tenantguard.tenant_stats;
SELECT count(*) AS counted_while_off FROM tenantguard.tenant_stats() WHERE tenant_id = 'ts-off';
-- A tenant id longer than 64 bytes is kept cut, ending in '...': no other tenant's id matches it,
-- not its first 64 bytes (a parent's path-like id) nor the cut form itself; only those who read
-- all statistics see it. The same for the slow-query ring and log.
SELECT tenantguard.reset_slow_queries() >= 0 AS ring_reset;
SET tenantguard.slow_query_ms = 0;
SET ROLE tg_app;
SELECT set_config('app.current_tenant_id', 'org/' || repeat('x', 60) || '/child-tenant', false) IS NOT NULL AS long_tenant_set;
SELECT 'long tenant statement' AS marker;
RESET ROLE;
RESET app.current_tenant_id;
RESET tenantguard.slow_query_ms;
SELECT tenantguard.flush_slow_queries() >= 1 AS flushed;
SELECT tenant_id, octet_length(tenant_id) AS kept_bytes, db_user, calls
  FROM tenantguard.tenant_stats() WHERE tenant_id LIKE 'org/%' ORDER BY db_user;
\c - tg_other
SELECT set_config('app.current_tenant_id', left('org/' || repeat('x', 60) || '/child-tenant', 64), false) IS NOT NULL AS first_64_bytes;
SELECT count(*) AS stats_seen FROM tenantguard.tenant_stats();
SELECT count(*) AS ring_seen FROM tenantguard.slow_queries;
SELECT count(*) AS log_seen FROM tenantguard.slow_query_log;
SELECT set_config('app.current_tenant_id', left('org/' || repeat('x', 60), 61) || '...', false) IS NOT NULL AS cut_form;
SELECT count(*) AS stats_seen FROM tenantguard.tenant_stats();
SELECT count(*) AS ring_seen FROM tenantguard.slow_queries;
SELECT count(*) AS log_seen FROM tenantguard.slow_query_log;
\c - postgres
SELECT count(*) > 0 AS admin_sees_ring FROM tenantguard.slow_queries WHERE tenant_id LIKE 'org/%...';
SELECT count(*) > 0 AS admin_sees_log FROM tenantguard.slow_query_log WHERE tenant_id LIKE 'org/%...';
