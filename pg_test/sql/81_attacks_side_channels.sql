-- The attack suite, side channels: tenantguard's own objects (the audit log, the slow-query ring
-- and log) must show a role no more than it could read from the tables themselves, and nothing a
-- non-superuser can SET makes the guard stand aside.
\set SHOW_CONTEXT never
\c - postgres
-- This file protects its tables itself (auto-protect is back to its default at the end).
ALTER DATABASE regression SET tenantguard.auto_protect = off;
CREATE SCHEMA sc AUTHORIZATION tg_owner;
CREATE SCHEMA sc_app AUTHORIZATION tg_app;
CREATE ROLE sc_clerk LOGIN NOSUPERUSER NOBYPASSRLS;     -- tenant acme, no privilege on the table
CREATE ROLE sc_partial LOGIN NOSUPERUSER NOBYPASSRLS;   -- tenant acme, some columns only
GRANT USAGE ON SCHEMA sc TO tg_app, sc_clerk, sc_partial;
\c - tg_owner
SET search_path = sc;
CREATE TABLE cards (id int PRIMARY KEY, tenant_id text NOT NULL, holder text, pan text);
SELECT tenantguard.protect('cards') IS NOT NULL AS protected;
GRANT SELECT, INSERT, UPDATE, DELETE ON cards TO tg_app;
GRANT SELECT (id, tenant_id, holder) ON cards TO sc_partial;
\c - tg_app
SET search_path = sc;
SET app.current_tenant_id = 'acme';
INSERT INTO cards VALUES (1, 'acme', 'alice', '4111-1111');
UPDATE cards SET pan = '4111-2222', holder = 'alice b' WHERE id = 1;
-- Text tenants are compared byte for byte: '7' and '007' are two tenants of a text column.
SET app.current_tenant_id = '7';
INSERT INTO cards VALUES (7, '7', 'seven', '7777');
SET app.current_tenant_id = '007';
INSERT INTO cards VALUES (8, '007', 'double-o', '0070');

-- 1. A role of tenant acme without SELECT on the table reads none of its audit rows.
\c - sc_clerk
SET app.current_tenant_id = 'acme';
SELECT count(*) AS clerk_sees FROM tenantguard.audit_log WHERE table_name = 'cards';
SELECT count(*) AS clerk_reads_table FROM sc.cards;
\echo sqlstate :LAST_ERROR_SQLSTATE
-- 2. A role with SELECT on some columns sees the rows without the others: not in old_values,
-- new_values or changed_columns.
\c - sc_partial
SET app.current_tenant_id = 'acme';
SELECT op, record_key, old_values, new_values, changed_columns
  FROM tenantguard.audit_log WHERE table_name = 'cards' ORDER BY id;
SELECT pan FROM sc.cards;
\echo sqlstate :LAST_ERROR_SQLSTATE
-- Without SELECT on a key column, the key is not shown either.
\c - tg_owner
REVOKE SELECT ON sc.cards FROM sc_partial;
GRANT SELECT (tenant_id, holder) ON sc.cards TO sc_partial;
\c - sc_partial
SET app.current_tenant_id = 'acme';
SELECT op, record_key, new_values FROM tenantguard.audit_log WHERE table_name = 'cards' ORDER BY id;
-- A privilege taken away mid-session is taken away from the audit log too.
\c - tg_owner
REVOKE SELECT ON sc.cards FROM sc_partial;
\c - sc_partial
SET app.current_tenant_id = 'acme';
SELECT count(*) AS after_revoke FROM tenantguard.audit_log WHERE table_name = 'cards';
-- 3. '007' does not read '7''s rows of a text-keyed table, nor the reverse, nor other spellings.
\c - tg_app
SET app.current_tenant_id = '007';
SELECT tenant_id, record_key FROM tenantguard.audit_log WHERE table_name = 'cards' ORDER BY id;
SET app.current_tenant_id = '7';
SELECT tenant_id, record_key FROM tenantguard.audit_log WHERE table_name = 'cards' ORDER BY id;
SET app.current_tenant_id = ' 7';
SELECT count(*) AS space_7 FROM tenantguard.audit_log WHERE table_name = 'cards';
SET app.current_tenant_id = '+7';
SELECT count(*) AS plus_7 FROM tenantguard.audit_log WHERE table_name = 'cards';
-- For an integer tenant column '007' and '7' are the same tenant, as the table's policies say.
\c - tg_owner
CREATE TABLE sc.counters (id int PRIMARY KEY, tenant_id int NOT NULL, n int);
SELECT tenantguard.protect('sc.counters') IS NOT NULL AS protected;
GRANT SELECT, INSERT ON sc.counters TO tg_app;
\c - tg_app
SET app.current_tenant_id = '7';
INSERT INTO sc.counters VALUES (1, 7, 1);
SET app.current_tenant_id = '007';
SELECT count(*) AS table_rows FROM sc.counters;
SELECT tenant_id, record_key FROM tenantguard.audit_log WHERE table_name = 'counters';
-- A leaky function in WHERE sees only what the view lets through (security_barrier): here it
-- reports every row of another tenant it is shown (none may be), also when the planner reads the
-- whole table instead of using the tenant index, and through the slow-query log.
CREATE FUNCTION sc_app.leak(tenant text, what text) RETURNS boolean LANGUAGE plpgsql
COST 0.0000001 AS $$
BEGIN
  IF tenant IS DISTINCT FROM current_setting('app.current_tenant_id', true) THEN
    RAISE NOTICE 'leaked: % of tenant %', what, tenant;
  END IF;
  RETURN true;
END $$;
SET app.current_tenant_id = 'acme';
SELECT count(*) > 0 AS acme_rows FROM tenantguard.audit_log WHERE sc_app.leak(tenant_id, table_name);
SET enable_indexscan = off;
SET enable_bitmapscan = off;
SELECT count(*) > 0 AS acme_rows_seqscan FROM tenantguard.audit_log WHERE sc_app.leak(tenant_id, table_name);
SELECT count(*) >= 0 AS slow_log_read FROM tenantguard.slow_query_log WHERE sc_app.leak(tenant_id, query);
RESET enable_indexscan;
RESET enable_bitmapscan;
-- A role without privileges on the tables is shown no row at all.
GRANT USAGE ON SCHEMA sc_app TO sc_clerk;
CREATE FUNCTION sc_app.leak_any(what text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS $$
BEGIN RAISE NOTICE 'leaked: %', what; RETURN true; END $$;
\c - sc_clerk
SET app.current_tenant_id = 'acme';
SET enable_indexscan = off;
SET enable_bitmapscan = off;
SELECT count(*) AS clerk_rows FROM tenantguard.audit_log WHERE sc_app.leak_any(table_name || ' ' || op);
\c - tg_app
SET app.current_tenant_id = 'acme';
-- A tenant's changes in a period stay an index scan through the view.
CREATE FUNCTION sc_app.plan_uses(q text, index text) RETURNS boolean LANGUAGE plpgsql AS $$
DECLARE
  line text;
  found boolean := false;
BEGIN
  SET LOCAL enable_seqscan = off;
  FOR line IN EXECUTE 'EXPLAIN (COSTS OFF) ' || q LOOP
    found := found OR line LIKE '%' || index || '%';
  END LOOP;
  RETURN found;
END $$;
SELECT sc_app.plan_uses($$SELECT * FROM tenantguard.audit_log
                           WHERE occurred_at >= now() - interval '1 day'$$,
                        'audit_log_tenant_time') AS period_uses_index;
-- The history of one record: audit_history() finds it through the record_key index and shows it
-- as the view does.
SELECT op, record_key, new_values ->> 'holder' AS holder FROM tenantguard.audit_history('sc.cards', '{"id": 1}');
SELECT count(*) AS other_tenants_record FROM tenantguard.audit_history('sc.cards', '{"id": 7}');
SELECT count(*) AS null_key FROM tenantguard.audit_history('sc.cards', NULL);
SELECT count(*) FROM tenantguard.audit_history('sc.no_such_table', '{"id": 1}');
\echo sqlstate :LAST_ERROR_SQLSTATE
-- Reading it as another role is refused unless the session could SET ROLE to that role.
SELECT count(*) FROM tenantguard._audit_history('sc.cards', '{"id": 7}', 'postgres'::regrole);
\echo sqlstate :LAST_ERROR_SQLSTATE
\c - sc_partial
SET app.current_tenant_id = 'acme';
SELECT count(*) AS partial_sees_history FROM tenantguard.audit_history('sc.cards', '{"id": 1}');
\c - tg_app
SET app.current_tenant_id = 'acme';
-- The table behind the view is not readable at all.
SELECT count(*) FROM tenantguard._audit_log;
\echo sqlstate :LAST_ERROR_SQLSTATE

-- 4. Slow queries: another role's statement text (and query id) is NULL, as pg_stat_statements
-- shows it, unless the reader is a superuser, an admin or a pg_read_all_stats member.
\c - postgres
SELECT tenantguard.reset_slow_queries() >= 0 AS reset;
ALTER ROLE tg_app SET tenantguard.slow_query_ms = 50;
\c - tg_app
SET app.current_tenant_id = 'acme';
SET app.user_id = 'sc-producer';
SELECT pg_sleep(0.06), 'card 4111-3333 for alice@acme' AS literal;
\c - postgres
ALTER ROLE tg_app RESET tenantguard.slow_query_ms;
CREATE ROLE sc_stats LOGIN NOSUPERUSER NOBYPASSRLS IN ROLE pg_read_all_stats;
\c - sc_clerk
SET app.current_tenant_id = 'acme';
SELECT db_user, tenant_id, query, queryid FROM tenantguard.slow_queries WHERE app_user = 'sc-producer';
\c - tg_app
SET app.current_tenant_id = 'acme';
SELECT db_user, query IS NOT NULL AS own_text FROM tenantguard.slow_queries WHERE app_user = 'sc-producer';
\c - sc_stats
SELECT db_user, tenant_id, query FROM tenantguard.slow_queries() WHERE app_user = 'sc-producer';
-- The flushed log follows the same rules.
\c - postgres
SELECT tenantguard.flush_slow_queries() >= 1 AS flushed;
\c - sc_clerk
SET app.current_tenant_id = 'acme';
SELECT db_user, tenant_id, query, queryid FROM tenantguard.slow_query_log WHERE app_user = 'sc-producer';
SET app.current_tenant_id = 'globex';
SELECT count(*) AS other_tenant FROM tenantguard.slow_query_log WHERE app_user = 'sc-producer';
\c - sc_stats
SELECT db_user, query FROM tenantguard.slow_query_log WHERE app_user = 'sc-producer';
SELECT count(*) FROM tenantguard._slow_query_log;
\echo sqlstate :LAST_ERROR_SQLSTATE

-- 5. row_security = off does not make the guard (or auto-protect) stand aside for a role that is
-- not a superuser.
\c - tg_owner
SET row_security = off;
ALTER TABLE sc.cards DISABLE ROW LEVEL SECURITY;
\echo sqlstate :LAST_ERROR_SQLSTATE
DROP POLICY tenantguard_tenant_select ON sc.cards;
\echo sqlstate :LAST_ERROR_SQLSTATE
SET tenantguard.auto_protect = off;
\echo sqlstate :LAST_ERROR_SQLSTATE
SET SESSION AUTHORIZATION DEFAULT;
\echo sqlstate :LAST_ERROR_SQLSTATE
\c - postgres
ALTER ROLE tg_owner SET tenantguard.auto_protect = on;
\c - tg_owner
SET row_security = off;
CREATE TABLE sc.created_with_rls_off (id int, tenant_id text);
SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = 'sc.created_with_rls_off'::regclass;
\c - postgres
ALTER ROLE tg_owner RESET tenantguard.auto_protect;
SELECT table_name, status FROM tenantguard.coverage() WHERE schema_name = 'sc' ORDER BY 1;
\c - postgres
ALTER DATABASE regression RESET tenantguard.auto_protect;
