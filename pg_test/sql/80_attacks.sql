-- The attack suite: the known ways around row level security, each run as the NOSUPERUSER
-- NOBYPASSRLS application role (or the named role) with tenant acme set, against protected tables
-- holding acme's and globex's rows. Each checks that nothing of globex is read, written, deleted
-- or revealed, and the SQLSTATE of the expected error.
\set SHOW_CONTEXT never
\c - postgres
CREATE SCHEMA atk AUTHORIZATION tg_owner;
CREATE SCHEMA atk_app AUTHORIZATION tg_app;
GRANT USAGE ON SCHEMA atk TO tg_app;
\c - tg_owner
SET search_path = atk;
-- Composite keys: keys are unique per tenant, and references stay inside one tenant.
CREATE TABLE accounts (tenant_id text NOT NULL, id int NOT NULL, name text, secret text,
                       PRIMARY KEY (tenant_id, id));
CREATE TABLE orders (tenant_id text NOT NULL, id int NOT NULL, account_id int NOT NULL, amount int,
                     PRIMARY KEY (tenant_id, id),
                     FOREIGN KEY (tenant_id, account_id) REFERENCES accounts (tenant_id, id));
CREATE TABLE events (tenant_id text NOT NULL, id int, at date NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
-- A grant made before protection: protect() takes TRUNCATE and REFERENCES back.
GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES ON accounts TO tg_app;
SELECT tenantguard.protect('accounts');
GRANT SELECT, INSERT, UPDATE, DELETE ON orders, events, events_2026 TO tg_app;
-- GRANT ALL after protection: the event trigger takes TRUNCATE and REFERENCES back.
GRANT ALL ON orders TO tg_app;
SELECT grantee, privilege_type FROM information_schema.table_privileges
 WHERE table_schema = 'atk' AND grantee = 'tg_app' AND privilege_type IN ('TRUNCATE', 'REFERENCES');
\c - postgres
INSERT INTO atk.accounts VALUES ('acme', 1, 'alice', 'a-secret'), ('acme', 2, 'bob', 'b-secret'),
                                ('globex', 1, 'gina', 'g-secret'), ('globex', 3, 'gus', 'g2-secret');
INSERT INTO atk.orders VALUES ('acme', 10, 1, 100), ('globex', 20, 1, 200), ('globex', 21, 3, 300);
INSERT INTO atk.events VALUES ('acme', 1, '2026-03-01'), ('globex', 2, '2026-03-02');
ANALYZE atk.accounts;
CREATE VIEW atk.globex_state AS
  SELECT 'accounts' AS t, count(*) AS n, string_agg(name || ':' || secret, ',' ORDER BY id) AS v
    FROM atk.accounts WHERE tenant_id = 'globex'
  UNION ALL
  SELECT 'orders', count(*), string_agg(id || ':' || amount, ',' ORDER BY id)
    FROM atk.orders WHERE tenant_id = 'globex'
  UNION ALL
  SELECT 'events', count(*), string_agg(id::text, ',') FROM atk.events WHERE tenant_id = 'globex';
SELECT * FROM atk.globex_state;

\c - tg_app
SET search_path = atk;
SET app.current_tenant_id = 'acme';
-- plain SELECT / INSERT / UPDATE / DELETE
SELECT id, name FROM accounts ORDER BY id;
INSERT INTO accounts VALUES ('globex', 9, 'planted', 'x');
\echo sqlstate :LAST_ERROR_SQLSTATE
UPDATE accounts SET secret = 'stolen' WHERE tenant_id = 'globex';
DELETE FROM accounts WHERE tenant_id = 'globex';
-- UPDATE ... FROM and DELETE ... USING joining another protected table
UPDATE orders o SET amount = 0 FROM accounts a WHERE a.id = o.account_id;
DELETE FROM orders o USING accounts a WHERE a.name = 'gina' AND o.account_id = a.id;
-- INSERT ... SELECT, CREATE TABLE AS, SELECT INTO from a protected table
INSERT INTO orders SELECT tenant_id, id + 1000, account_id, amount FROM orders;
CREATE TABLE atk_app.copied AS SELECT * FROM accounts;
SELECT name INTO atk_app.copied2 FROM accounts;
\c - postgres
SELECT 'copied' AS t, count(*) FROM atk_app.copied UNION ALL SELECT 'copied2', count(*) FROM atk_app.copied2;
SELECT tenant_id, count(*) FROM atk.orders GROUP BY 1 ORDER BY 1;
\c - tg_app
SET search_path = atk;
SET app.current_tenant_id = 'acme';
-- INSERT ... ON CONFLICT DO UPDATE aimed at another tenant's key
INSERT INTO accounts VALUES ('globex', 1, 'pwned', 'x')
  ON CONFLICT (tenant_id, id) DO UPDATE SET secret = 'pwned';
\echo sqlstate :LAST_ERROR_SQLSTATE
-- (MERGE, from PostgreSQL 15: 86_attacks_pg15.sql)
-- RETURNING and writable CTEs
UPDATE accounts SET name = name RETURNING tenant_id, id, secret;
WITH d AS (DELETE FROM accounts WHERE tenant_id = 'globex' RETURNING *) SELECT count(*) AS deleted FROM d;
WITH u AS (UPDATE orders SET amount = -1 WHERE tenant_id <> 'acme' RETURNING *) SELECT count(*) AS updated FROM u;
-- Cursors and WHERE CURRENT OF
BEGIN;
DECLARE c CURSOR FOR SELECT * FROM accounts FOR UPDATE;
FETCH 1 FROM c;
UPDATE accounts SET secret = 'cursor' WHERE CURRENT OF c RETURNING tenant_id, id;
FETCH ALL FROM c;
COMMIT;
-- Prepared statements across a tenant change, with generic and custom plans
PREPARE names AS SELECT string_agg(name, ',' ORDER BY id) FROM accounts;
SET plan_cache_mode = force_generic_plan;
EXECUTE names;
SET app.current_tenant_id = 'globex';
EXECUTE names;
SET plan_cache_mode = force_custom_plan;
EXECUTE names;
SET app.current_tenant_id = 'acme';
EXECUTE names;
RESET plan_cache_mode;
DEALLOCATE names;
-- COPY TO shows only the tenant's rows; COPY FROM is refused on tables with row level security
COPY accounts TO STDOUT;
COPY (SELECT * FROM accounts) TO STDOUT;
\! printf 'globex\t7\tcopied-in\tx\n' > /tmp/tenantguard_copy_in.tsv
\copy accounts FROM '/tmp/tenantguard_copy_in.tsv'
\echo sqlstate :LAST_ERROR_SQLSTATE
-- TRUNCATE: row level security does not cover it, so the role has no TRUNCATE privilege
TRUNCATE accounts;
\echo sqlstate :LAST_ERROR_SQLSTATE
TRUNCATE orders;
\echo sqlstate :LAST_ERROR_SQLSTATE
-- Foreign keys and unique constraints as existence oracles: with tenant-scoped keys, acme can
-- use globex's key values without learning anything, and cannot point at globex's rows.
INSERT INTO accounts VALUES ('acme', 3, 'acme3', 'x');
INSERT INTO orders VALUES ('acme', 30, 3, 1);
INSERT INTO orders VALUES ('acme', 31, 4, 1);
\echo sqlstate :LAST_ERROR_SQLSTATE
CREATE TABLE atk_app.probe (tenant_id text, account_id int,
  FOREIGN KEY (tenant_id, account_id) REFERENCES atk.accounts (tenant_id, id));
\echo sqlstate :LAST_ERROR_SQLSTATE
-- A leaky function with a tiny cost in WHERE sees only rows the policies let through
CREATE FUNCTION atk_app.leak(text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS $$
BEGIN RAISE NOTICE 'leak saw %', $1; RETURN true; END $$;
SELECT id FROM accounts WHERE atk_app.leak(secret) ORDER BY id;
-- A view without security_invoker (runs as its owner, who is bound by FORCE); one with it, from
-- PostgreSQL 15, is in 86_attacks_pg15.sql
\c - tg_owner
SET search_path = atk;
CREATE VIEW owner_view AS SELECT tenant_id, id, secret FROM accounts;
-- A SECURITY DEFINER function owned by the table owner
CREATE FUNCTION all_secrets() RETURNS SETOF text LANGUAGE sql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp AS $$ SELECT secret FROM atk.accounts ORDER BY 1 $$;
GRANT SELECT ON owner_view TO tg_app;
\c - tg_app
SET search_path = atk;
SET app.current_tenant_id = 'acme';
SELECT tenant_id, id FROM owner_view ORDER BY id;
SELECT * FROM all_secrets();
-- Direct access to a partition of a protected partitioned table
SELECT tenant_id, id FROM events_2026;
-- SET ROLE to another role
SET ROLE tg_owner;
\echo sqlstate :LAST_ERROR_SQLSTATE
SET ROLE tenantguard_admin;
\echo sqlstate :LAST_ERROR_SQLSTATE
-- The tenant set for a transaction is gone when it ends (transaction-mode pooler)
RESET app.current_tenant_id;
BEGIN;
SELECT tenantguard.set_tenant('globex');
SELECT count(*) AS in_txn FROM accounts;
COMMIT;
SELECT count(*) AS after_txn FROM accounts;
-- Empty, malformed and SQL-laden tenant values
SET app.current_tenant_id = '';
SELECT count(*) AS empty_tenant FROM accounts;
SET app.current_tenant_id = 'acme'' OR tenant_id <> ''';
SELECT count(*) AS sql_in_tenant FROM accounts;
SET app.current_tenant_id = E'acme\\';
SELECT count(*) AS odd_tenant FROM accounts;
-- row_security = off: an error for a role that does not bypass row level security
SET app.current_tenant_id = 'acme';
SET row_security = off;
SELECT count(*) FROM accounts;
\echo sqlstate :LAST_ERROR_SQLSTATE
RESET row_security;
-- pg_stats of a protected table shows nothing to a role the policies apply to
SELECT count(*) AS stats_rows FROM pg_stats WHERE schemaname = 'atk' AND tablename = 'accounts';
-- The table owner without superuser is bound by FORCE, for reads and writes
\c - tg_owner
SET search_path = atk;
SET app.current_tenant_id = 'acme';
SELECT count(*) AS owner_sees FROM accounts;
DELETE FROM accounts WHERE tenant_id = 'globex';
UPDATE orders SET amount = 0 WHERE tenant_id = 'globex';

-- After all of it, globex's rows are exactly as they were.
\c - postgres
SELECT * FROM atk.globex_state;
SELECT count(*) AS stats_rows_for_superuser FROM pg_stats WHERE schemaname = 'atk' AND tablename = 'accounts';
