-- Session state survives a failed protect(): the flag that lets protect()'s own DDL past the
-- guard, and slow-query capture's flag for tenantguard's own statements, are put back when the
-- (sub)transaction aborts. Then a stress run: 10,000 nested statements failing at random depths
-- (PL/pgSQL, dynamic SQL, exception blocks, cursors) with every statement captured.
\set SHOW_CONTEXT never
\c - postgres
-- This file protects its tables itself (auto-protect is back to its default at the end).
ALTER DATABASE regression SET tenantguard.auto_protect = off;
CREATE SCHEMA ss AUTHORIZATION tg_owner;
-- An event trigger of the DBA's own that is slow on CREATE TRIGGER: protect() creates policies,
-- then its triggers, and a statement_timeout fires in the middle.
CREATE FUNCTION ss_slow_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$
BEGIN
  IF current_setting('ss.slow_ddl', true) = 'on' THEN PERFORM pg_sleep(2); END IF;
  IF current_setting('ss.slow_ddl', true) = 'fail' THEN
    RAISE EXCEPTION 'the DBA''s event trigger refuses CREATE TRIGGER' USING ERRCODE = 'P0001';
  END IF;
END $$;
CREATE EVENT TRIGGER ss_slow_ddl ON ddl_command_end WHEN TAG IN ('CREATE TRIGGER')
  EXECUTE FUNCTION ss_slow_ddl();
ALTER ROLE tg_owner SET tenantguard.slow_query_ms = 100;
\c - tg_owner
CREATE TABLE ss.a (id int PRIMARY KEY, tenant_id text NOT NULL);
CREATE TABLE ss.b (id int PRIMARY KEY, tenant_id text NOT NULL);
SELECT tenantguard.protect('ss.a') IS NOT NULL AS a_protected;
-- 1. protect() cancelled half way at top level: nothing of it stays.
SET ss.slow_ddl = 'on';
SET statement_timeout = '300ms';
SELECT tenantguard.protect('ss.b');
\echo sqlstate :LAST_ERROR_SQLSTATE
RESET statement_timeout;
SELECT count(*) AS b_policies FROM pg_policy WHERE polrelid = 'ss.b'::regclass;
-- The same session: the guard still refuses, and slow queries are still captured.
ALTER TABLE ss.a DISABLE ROW LEVEL SECURITY;
\echo sqlstate :LAST_ERROR_SQLSTATE
SET app.current_tenant_id = 'acme';
SELECT pg_sleep(0.15) AS slow_after_top_level_failure;
-- 2. protect() failing half way inside an exception block (a subtransaction), then an error
-- raised by a later statement.
SET ss.slow_ddl = 'fail';
DO $$
BEGIN
  BEGIN
    PERFORM tenantguard.protect('ss.b');
  EXCEPTION WHEN raise_exception THEN
    RAISE NOTICE 'protect() failed inside the block: %', SQLERRM;
  END;
END $$;
SELECT 1 / 0;
RESET ss.slow_ddl;
SELECT count(*) AS b_policies FROM pg_policy WHERE polrelid = 'ss.b'::regclass;
ALTER TABLE ss.a DISABLE ROW LEVEL SECURITY;
\echo sqlstate :LAST_ERROR_SQLSTATE
DROP POLICY tenantguard_tenant_select ON ss.a;
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT pg_sleep(0.15) AS slow_after_subtransaction_failure;
SELECT query, status FROM tenantguard.slow_queries
 WHERE query LIKE 'SELECT pg_sleep(0.15)%' ORDER BY started_at;
-- 3. A dry-run script's allowance taken in a savepoint that rolls back is gone with it.
BEGIN;
SAVEPOINT s;
SELECT tenantguard._allow_change('ss.a'::regclass);
ROLLBACK TO SAVEPOINT s;
ALTER TABLE ss.a NO FORCE ROW LEVEL SECURITY;
\echo sqlstate :LAST_ERROR_SQLSTATE
ROLLBACK;
-- protect() works again in the same session and finishes the job.
SELECT tenantguard.protect('ss.b') IS NOT NULL AS b_protected;
SELECT table_name, status FROM tenantguard.coverage() WHERE schema_name = 'ss' ORDER BY 1;
\c - postgres
DROP EVENT TRIGGER ss_slow_ddl;
DROP FUNCTION ss_slow_ddl();
ALTER ROLE tg_owner RESET tenantguard.slow_query_ms;

-- 4. Stress: every statement captured (threshold 0, nested ones too), 10,000 calls that nest
-- PL/pgSQL, dynamic SQL whose text is freed when it fails, cursors and exception blocks, and
-- fail at random depths. The server must stay up: a crash would end this session.
CREATE FUNCTION ss_dive(depth int, fail_at int) RETURNS int LANGUAGE plpgsql AS $$
DECLARE
  c refcursor;
  r int;
BEGIN
  IF depth = fail_at THEN
    IF depth % 3 = 0 THEN
      EXECUTE format('SELECT 1 / (%s - %s)', depth, depth);       -- division by zero
    ELSIF depth % 3 = 1 THEN
      EXECUTE format('SELECT * FROM ss_missing_%s', depth);        -- undefined table
    ELSE
      RAISE EXCEPTION 'planned failure at depth %', depth USING ERRCODE = 'P0001';
    END IF;
  END IF;
  IF depth >= 6 THEN
    RETURN depth;
  END IF;
  OPEN c FOR EXECUTE format('SELECT g FROM generate_series(1, %s) g', depth + 1);
  FETCH c INTO r;
  BEGIN
    r := r + ss_dive(depth + 1, fail_at);
  EXCEPTION WHEN others THEN
    IF (depth + fail_at) % 2 = 0 THEN
      RAISE;                                                        -- rethrow to the caller
    END IF;
    r := -1;
  END;
  CLOSE c;
  RETURN r;
END $$;
CREATE FUNCTION ss_stress(n int) RETURNS TABLE (calls int, failed int, survived int)
LANGUAGE plpgsql AS $$
DECLARE
  i int;
  f int := 0;
  ok int := 0;
BEGIN
  PERFORM setseed(0.42);
  FOR i IN 1 .. n LOOP
    BEGIN
      PERFORM ss_dive(0, (random() * 8)::int);
      ok := ok + 1;
    EXCEPTION WHEN others THEN
      f := f + 1;
    END;
  END LOOP;
  RETURN QUERY SELECT n, f, ok;
END $$;
SET tenantguard.slow_query_track = 'all';
SET tenantguard.slow_query_ms = 0;
SELECT calls, failed + survived = calls AS all_accounted, failed > 0 AS some_failed,
       survived > 0 AS some_survived
  FROM ss_stress(10000);
RESET tenantguard.slow_query_ms;
RESET tenantguard.slow_query_track;
SELECT count(*) > 0 AS captured, bool_or(status = 'error') AS errors_captured
  FROM tenantguard.slow_queries();
SELECT 'still up' AS server;

-- 5. Per-backend caches stay bounded: a session that sets ever new tenants (and asks for ever new
-- setting names) does not grow. Resident memory after 20,000 and after 80,000 distinct tenants
-- differs by less than 1 MB (a leak of 20 bytes a tenant would fail that; the allocator's own one-time
-- growth of about 0.5 MB, seen once between 20,000 and 50,000 here, does not). (bench/tenant_memory.sh runs 1,000,000; docs/benchmarks.md gives its figures.)
CREATE TABLE ss_mem (id int PRIMARY KEY, tenant_id uuid NOT NULL);
SELECT tenantguard.protect('ss_mem') IS NOT NULL AS protected;
CREATE ROLE ss_mem_app LOGIN NOSUPERUSER NOBYPASSRLS;
GRANT SELECT, INSERT ON ss_mem TO ss_mem_app;
-- This backend's resident memory (PostgreSQL's memory contexts and the Rust heap alike), as the
-- superuser may read it: SECURITY DEFINER runs in the caller's backend.
CREATE FUNCTION ss_mem_bytes() RETURNS bigint LANGUAGE sql SECURITY DEFINER AS $$
  SELECT 1024 * substring(pg_read_file('/proc/' || pg_backend_pid() || '/status')
                          FROM 'VmRSS:\s*([0-9]+) kB')::bigint $$;
CREATE FUNCTION ss_tenants(first int, last int) RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
  i int;
BEGIN
  FOR i IN first .. last LOOP
    PERFORM set_config('app.current_tenant_id', md5(i::text)::uuid::text, false);
    PERFORM count(*) FROM ss_mem;
    PERFORM tenantguard.tenant_text('app.name_' || i);
  END LOOP;
  RETURN ss_mem_bytes();
END $$;
\c - ss_mem_app
SELECT ss_tenants(1, 20000) AS after_20k \gset
SELECT ss_tenants(20001, 80000) AS after_80k \gset
SELECT :after_80k - :after_20k < 1048576 AS bounded;
\c - postgres
DROP FUNCTION ss_tenants(int, int);
DROP TABLE ss_mem;
DROP FUNCTION ss_mem_bytes();
DROP ROLE ss_mem_app;
\c - postgres
ALTER DATABASE regression RESET tenantguard.auto_protect;
