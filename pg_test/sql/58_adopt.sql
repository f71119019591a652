-- Adopting tenantguard on an existing database: adoption_plan() and the adopt() procedure, as a
-- non-superuser table owner (auto-protect is still off in this file's position). The lock_timeout
-- path, with real traffic and a long transaction, is scripts/adopt_test.sh.
\set SHOW_CONTEXT never
\c - tg_owner
CREATE SCHEMA adopt;
GRANT USAGE ON SCHEMA adopt TO tg_app, tg_other;
SET search_path = adopt;
CREATE TABLE customers (id int PRIMARY KEY, tenant_id uuid NOT NULL, name text);
CREATE INDEX ON customers (tenant_id);
CREATE TABLE orders (id int PRIMARY KEY, tenant_id uuid, customer_id int REFERENCES customers);
INSERT INTO customers VALUES (1, 'aaaaaaaa-0000-0000-0000-000000000001', 'c');
INSERT INTO orders VALUES (1, 'aaaaaaaa-0000-0000-0000-000000000001', 1);
CREATE TABLE legacy (id int PRIMARY KEY, tenant_id uuid);
INSERT INTO legacy VALUES (1, NULL), (2, NULL), (3, 'aaaaaaaa-0000-0000-0000-000000000001');
CREATE VIEW order_list AS SELECT * FROM orders;
CREATE FUNCTION count_customers() RETURNS bigint SECURITY DEFINER LANGUAGE sql
  AS 'SELECT count(*) FROM adopt.customers';
CREATE TABLE events (id int, tenant_id uuid NOT NULL, at date NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
CREATE TABLE lookup (id int PRIMARY KEY);
GRANT SELECT ON customers, orders TO tg_app;
\c - postgres
-- A table of another owner in the same schema: tg_owner cannot protect it.
CREATE TABLE adopt.foreign_owned (id int PRIMARY KEY, tenant_id uuid NOT NULL);
CREATE INDEX ON adopt.foreign_owned (tenant_id);
\c - tg_owner
SET search_path = adopt;

-- 1. The plan: one row per tenant table, nothing changed.
SELECT table_name, status, blockers, risks, null_rows FROM tenantguard.adoption_plan(ARRAY['adopt']);
-- (The view's fix differs on PostgreSQL 14, which has no security_invoker: shown apart.)
SELECT table_name, fix FROM tenantguard.adoption_plan(ARRAY['adopt']) p, unnest(p.fixes) AS fix
 WHERE table_name IN ('orders', 'legacy') AND fix NOT LIKE '%order_list%' ORDER BY 1, 2;
SELECT count(*) AS view_fixes FROM tenantguard.adoption_plan(ARRAY['adopt']) p, unnest(p.fixes) AS fix
 WHERE fix LIKE '%order_list%';
SELECT table_name, lock FROM tenantguard.adoption_plan(ARRAY['adopt']) WHERE table_name = 'events';
SELECT count(*) AS protected_now FROM tenantguard.registry r
 JOIN pg_class c ON c.oid = r.relid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'adopt';
SELECT * FROM tenantguard.adoption_plan(ARRAY['adopt', 'no_such_schema']);
\echo sqlstate :LAST_ERROR_SQLSTATE

-- 2. A dry run prints the statements and changes nothing.
CALL tenantguard.adopt(ARRAY['adopt'], dry_run => true);
SELECT count(*) AS protected_after_dry_run FROM tenantguard.registry r
 JOIN pg_class c ON c.oid = r.relid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'adopt';

-- 3. The run: each ready table in a transaction of its own; the other owner's table is skipped
-- with the reason, the table with NULL tenants is blocked.
CALL tenantguard.adopt(ARRAY['adopt'], lock_timeout => '500ms', max_attempts => 2, backoff => '10ms');
SELECT schema_name, table_name, status FROM tenantguard.coverage() WHERE schema_name = 'adopt';
SELECT relid, outcome, reason, attempts FROM tenantguard.adoption_log ORDER BY relid::text;
-- Isolation holds on what it protected.
\c - tg_app
SET search_path = adopt;
SELECT count(*) AS orders_without_tenant FROM orders;
SELECT count(*) AS log_rows_seen_by_app FROM tenantguard.adoption_log;
\c - tg_owner
SET search_path = adopt;

-- 4. Run again: nothing is done twice; the blocker fixed, the table is protected.
UPDATE legacy SET tenant_id = 'aaaaaaaa-0000-0000-0000-000000000001' WHERE tenant_id IS NULL;
CALL tenantguard.adopt(ARRAY['adopt']);
SELECT relid, count(*) FILTER (WHERE outcome = 'protected') AS times_protected
  FROM tenantguard.adoption_log GROUP BY relid ORDER BY relid::text;

-- 5. Refused cleanly: inside a transaction block (nothing done), and bad arguments.
BEGIN;
CALL tenantguard.adopt(ARRAY['adopt']);
\echo sqlstate :LAST_ERROR_SQLSTATE
ROLLBACK;
CALL tenantguard.adopt(lock_timeout => '0s');
\echo sqlstate :LAST_ERROR_SQLSTATE

-- Dropped tables leave the log.
SELECT count(*) AS log_rows_before FROM tenantguard.adoption_log;
DROP TABLE legacy;
SELECT count(*) AS log_rows_after,
       count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = relid::oid)) AS of_dropped_tables
  FROM tenantguard.adoption_log;
\c - postgres
DROP SCHEMA adopt CASCADE;
