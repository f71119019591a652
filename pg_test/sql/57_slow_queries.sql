-- Slow-query capture: the hooks record statements at or over tenantguard.slow_query_ms in a
-- shared-memory ring, with the tenant and application user of the session; errors, timeouts and
-- rolled-back statements too. Read per tenant, flushed into slow_query_log exactly once.
\set SHOW_CONTEXT never
\c - postgres
SELECT name, setting FROM pg_settings WHERE name LIKE 'tenantguard.slow_query%' ORDER BY name;
CREATE TABLE one_row AS SELECT 1 AS n;
GRANT SELECT ON one_row TO PUBLIC;
CREATE FUNCTION slow_inner() RETURNS int LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(0.2); RETURN 1; END $$;
ALTER ROLE tg_app SET tenantguard.slow_query_ms = 150;
ALTER ROLE tg_app SET compute_query_id = on;
ALTER ROLE tg_other SET tenantguard.slow_query_ms = 150;
SELECT tenantguard.reset_slow_queries() >= 0 AS reset;
-- Only superusers and tenantguard_admin may reset; only superusers may change the threshold.
\c - tg_app
SELECT tenantguard.reset_slow_queries();
\echo sqlstate :LAST_ERROR_SQLSTATE
SET tenantguard.slow_query_ms = -1;
\echo sqlstate :LAST_ERROR_SQLSTATE
SET app.current_tenant_id = 'acme';
SET app.user_id = 'alice';
SET application_name = 'slow-test';
SELECT pg_sleep(0.2) AS slow_one;
SELECT 1 AS fast_one;
SET statement_timeout = '300ms';
SELECT pg_sleep(2) AS timed_out;
\echo sqlstate :LAST_ERROR_SQLSTATE
RESET statement_timeout;
SELECT pg_sleep(0.2), 1 / (n - 1) AS fails_after_sleeping FROM one_row;
\echo sqlstate :LAST_ERROR_SQLSTATE
BEGIN;
SELECT pg_sleep(0.2) AS rolled_back_by_client;
ROLLBACK;
-- The tenant is the one set when the statement started, not after.
SELECT pg_sleep(0.2), set_config('app.current_tenant_id', 'changed-during', false) AS tenant_changed_inside;
SET app.current_tenant_id = 'acme';
-- Nested statements: top (the default) records only the outer call.
SELECT slow_inner() AS nested_top;
SELECT query, status, sqlstate, tenant_id, app_user, db_user, database, rows,
       duration_ms >= 150 AS slow_enough, queryid IS NOT NULL AS has_queryid
  FROM tenantguard.slow_queries ORDER BY started_at;
-- A procedure that rolls back inside is one slow statement that succeeded; an error a PL/pgSQL
-- EXCEPTION block catches does not end the statement around it.
\c - postgres
CREATE PROCEDURE slow_proc() LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(0.1); ROLLBACK; PERFORM pg_sleep(0.1); END $$;
CREATE FUNCTION slow_caught() RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  BEGIN PERFORM pg_sleep(0.1); PERFORM 1 / 0; EXCEPTION WHEN division_by_zero THEN NULL; END;
  PERFORM pg_sleep(0.1);
  RETURN 'caught';
END $$;
\c - tg_app
SET app.current_tenant_id = 'acme';
CALL slow_proc();
SELECT slow_caught();
SELECT query, status, sqlstate FROM tenantguard.slow_queries
 WHERE query IN ('CALL slow_proc()', 'SELECT slow_caught()') ORDER BY started_at;
-- Another tenant sees none of acme's; no tenant sees nothing.
\c - tg_other
SET app.current_tenant_id = 'globex';
SELECT pg_sleep(0.2) AS globex_slow;
SELECT tenant_id, query FROM tenantguard.slow_queries();
RESET app.current_tenant_id;
SELECT count(*) AS without_tenant FROM tenantguard.slow_queries();
-- An admin (tenantguard_admin member) sees every tenant's.
\c - tg_support
SELECT tenant_id, count(*) FROM tenantguard.slow_queries GROUP BY 1 ORDER BY 1;
-- track = all also records the statement inside the function, but none of tenantguard's own.
\c - postgres
ALTER ROLE tg_app SET tenantguard.slow_query_track = 'all';
\c - tg_app
SET app.current_tenant_id = 'acme';
SELECT slow_inner() AS nested_all;
SELECT query, status FROM tenantguard.slow_queries WHERE query LIKE '%slow_inner%' OR query LIKE '%pg_sleep(0.2)' ORDER BY started_at;
\c - postgres
ALTER ROLE tg_app RESET tenantguard.slow_query_track;
SET tenantguard.slow_query_ms = 0;
SET tenantguard.slow_query_track = 'all';
SELECT tenantguard.reset_slow_queries() >= 0 AS reset;
CREATE TABLE slow_protect_me (id int, tenant_id text);
SELECT tenantguard.protect('slow_protect_me') IS NOT NULL AS protected;
SELECT count(*) >= 0 AS coverage_ran FROM tenantguard.coverage();
SET tenantguard.slow_query_ms = -1;
SELECT query FROM tenantguard.slow_queries
 WHERE query NOT LIKE 'SELECT tenantguard.reset_slow_queries%'
   AND query NOT LIKE 'CREATE TABLE slow_protect_me%'
   AND query NOT LIKE 'SELECT tenantguard.protect(%'
   AND query NOT LIKE 'SELECT count(*)%'
   AND query NOT LIKE 'SET tenantguard%';
RESET tenantguard.slow_query_track;
RESET tenantguard.slow_query_ms;
-- A slow nested statement whose error an EXCEPTION block swallows is an error without a
-- SQLSTATE (NULL, not an empty string): the error never reached the abort callbacks.
CREATE FUNCTION slow_swallowed() RETURNS text LANGUAGE plpgsql AS $$
BEGIN
  BEGIN PERFORM 1 / (pg_sleep(0.2) IS NULL)::int; EXCEPTION WHEN division_by_zero THEN NULL; END;
  RETURN 'swallowed';
END $$;
SET tenantguard.slow_query_track = 'all';
SET tenantguard.slow_query_ms = 100;
SELECT slow_swallowed();
RESET tenantguard.slow_query_track;
RESET tenantguard.slow_query_ms;
SELECT query, status, sqlstate IS NULL AS sqlstate_is_null FROM tenantguard.slow_queries
 WHERE query LIKE '%slow_swallowed%' OR query LIKE '%pg_sleep(0.2) IS NULL%' ORDER BY started_at;
-- Over the extended protocol a SELECT's portal stays open until the next Bind or the end of the
-- transaction: the client's time meanwhile is not the statement's (only ExecutorRun and
-- ExecutorFinish count, as in pg_stat_statements).
COPY (VALUES ('BEGIN;'), ('SELECT 1 AS portal_fast;'), ('\sleep 300 ms'),
             ('SELECT pg_sleep(0.15) AS portal_slow;'), ('\sleep 300 ms'), ('COMMIT;'))
  TO '/tmp/tenantguard_portal.pgbench' WITH (FORMAT csv, DELIMITER E'\x02', QUOTE E'\x01');
-- The running server's own client programs.
SELECT setting AS bindir FROM pg_config WHERE name = 'BINDIR' \gset
\setenv TG_BINDIR :bindir
\! PGOPTIONS='-c tenantguard.slow_query_ms=100' $TG_BINDIR/pgbench -n -M extended -t 1 -U postgres -f /tmp/tenantguard_portal.pgbench regression > /dev/null 2>&1; echo "pgbench exit status $?"
\! rm -f /tmp/tenantguard_portal.pgbench
SELECT query, duration_ms >= 150 AS ran_its_sleep, duration_ms < 300 AS without_client_time
  FROM tenantguard.slow_queries WHERE query LIKE 'SELECT % AS portal_%' ORDER BY started_at;
-- The ring keeps the newest slow_query_max (64) entries when it wraps.
SET tenantguard.slow_query_ms = 0;
\set ECHO none
\o /dev/null
SELECT format('SELECT %s AS wrap_%s', g, g) FROM generate_series(1, 100) g \gexec
\o
\set ECHO all
SET tenantguard.slow_query_ms = -1;
SELECT count(*) AS ring_entries,
       count(*) FILTER (WHERE query = 'SELECT 100 AS wrap_100') AS newest_kept,
       count(*) FILTER (WHERE query = 'SELECT 1 AS wrap_1') AS oldest_gone
  FROM tenantguard.slow_queries;
RESET tenantguard.slow_query_ms;
-- Text is cut to slow_query_text_limit bytes on a character boundary.
SET tenantguard.slow_query_ms = 0;
SET tenantguard.slow_query_text_limit = 20;
SELECT 'ééééééééééééééééééé' AS accents;
SET tenantguard.slow_query_ms = -1;
RESET tenantguard.slow_query_text_limit;
SELECT query, octet_length(query) FROM tenantguard.slow_queries WHERE query LIKE 'SELECT ''é%';
RESET tenantguard.slow_query_ms;
-- The query id is the server's: recorded when it computes one (compute_query_id = on, or auto with
-- pg_stat_statements loaded), NULL otherwise; tenantguard does not turn it on by itself.
SET tenantguard.slow_query_ms = 0;
SET compute_query_id = on;
SELECT 'with an id' AS queryid_on;
SET compute_query_id = auto;
SELECT 'without one' AS queryid_auto;
SET tenantguard.slow_query_ms = -1;
SELECT query, queryid IS NOT NULL AS has_queryid FROM tenantguard.slow_queries
 WHERE query LIKE '%AS queryid_%' ORDER BY started_at;
RESET compute_query_id;
-- The tenant is read from whichever setting tenantguard.tenant_setting names, also after it
-- changes, and a setting created after the first statements is found.
SET tenantguard.slow_query_ms = 0;
SET tenantguard.tenant_setting = 'app.renamed_tenant';
SELECT 'not set yet' AS tenant_from_renamed_1;
SET app.renamed_tenant = 'zeta';
SELECT 'set' AS tenant_from_renamed_2;
SET app.current_tenant_id = 'default-again';
RESET tenantguard.tenant_setting;
SELECT 'back to the default setting' AS tenant_from_renamed_3;
SET tenantguard.slow_query_ms = -1;
SELECT query, tenant_id FROM tenantguard.slow_queries
 WHERE query LIKE '%AS tenant_from_renamed_%' ORDER BY started_at;
RESET tenantguard.slow_query_ms;
RESET app.current_tenant_id;
-- Flush: each entry of this database lands in slow_query_log once, however often it runs.
\c - postgres
SELECT tenantguard.reset_slow_queries() >= 0 AS reset;
\c - tg_app
SET app.current_tenant_id = 'acme';
SELECT pg_sleep(0.2) AS to_flush;
SELECT tenantguard.flush_slow_queries();
\echo sqlstate :LAST_ERROR_SQLSTATE
\c - postgres
-- (compute_query_id is auto here: this entry has no query id.)
SET tenantguard.slow_query_ms = 150;
SELECT pg_sleep(0.2) AS to_flush_without_queryid;
RESET tenantguard.slow_query_ms;
SELECT tenantguard.flush_slow_queries() >= 2 AS flushed;
SELECT tenantguard.flush_slow_queries() AS flushed_again;
SELECT count(*) = count(DISTINCT (epoch, seq)) AS each_once,
       count(*) FILTER (WHERE query = 'SELECT pg_sleep(0.2) AS to_flush') AS to_flush_rows,
       count(*) FILTER (WHERE query = 'SELECT pg_sleep(0.2) AS to_flush_without_queryid'
                          AND queryid IS NULL) AS null_queryid_rows
  FROM tenantguard.slow_query_log;
-- The table is tenant-isolated like the ring.
\c - tg_app
SET app.current_tenant_id = 'acme';
SELECT DISTINCT tenant_id FROM tenantguard.slow_query_log;
SET app.current_tenant_id = 'globex';
SELECT count(*) AS acme_rows_seen_by_globex FROM tenantguard.slow_query_log WHERE tenant_id = 'acme';
-- The background worker flushes on its own when slow_query_flush_ms > 0.
\c - postgres
ALTER SYSTEM SET tenantguard.slow_query_flush_ms = 100;
SELECT pg_reload_conf();
\c - tg_app
SET app.current_tenant_id = 'acme';
SELECT pg_sleep(0.2) AS flushed_by_worker;
\c - postgres
DO $$
BEGIN
  FOR i IN 1 .. 100 LOOP
    EXIT WHEN EXISTS (SELECT 1 FROM tenantguard.slow_query_log WHERE query LIKE '%AS flushed_by_worker');
    PERFORM pg_sleep(0.1);
  END LOOP;
END $$;
SELECT count(*) AS by_worker FROM tenantguard.slow_query_log WHERE query LIKE '%AS flushed_by_worker';
ALTER SYSTEM RESET tenantguard.slow_query_flush_ms;
SELECT pg_reload_conf();
ALTER ROLE tg_app RESET tenantguard.slow_query_ms;
ALTER ROLE tg_app RESET compute_query_id;
ALTER ROLE tg_other RESET tenantguard.slow_query_ms;
