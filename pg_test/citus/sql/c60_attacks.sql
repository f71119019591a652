-- The attack suite's queries (pg_test/sql/80_attacks.sql) against distributed tables, as the
-- NOSUPERUSER NOBYPASSRLS role with tenant acme set; globex's rows live on the other worker.
-- Nothing of globex may be read, written, deleted or revealed.
\set VERBOSITY terse
SET ROLE c_owner;
CREATE TABLE accounts (tenant_id text NOT NULL, id int NOT NULL, name text, secret text,
                       PRIMARY KEY (tenant_id, id));
SELECT create_distributed_table('accounts', 'tenant_id', colocate_with => 'none');
CREATE TABLE ledger (tenant_id text NOT NULL, id int NOT NULL, account_id int, amount numeric,
                     PRIMARY KEY (tenant_id, id),
                     FOREIGN KEY (tenant_id, account_id) REFERENCES accounts (tenant_id, id));
SELECT create_distributed_table('ledger', 'tenant_id', colocate_with => 'accounts');
GRANT SELECT, INSERT, UPDATE, DELETE ON accounts, ledger TO c_app;
RESET ROLE;
INSERT INTO accounts VALUES ('acme', 1, 'anna', 'acme-s1'), ('acme', 2, 'arno', 'acme-s2'),
                            ('globex', 1, 'gina', 'globex-s1'), ('globex', 2, 'gus', 'globex-s2');
INSERT INTO ledger VALUES ('acme', 10, 1, 100), ('globex', 20, 1, 200), ('globex', 21, 2, 210);
SELECT (SELECT groupid FROM pg_dist_placement WHERE shardid = get_shard_id_for_distribution_column('accounts', 'acme'))
    <> (SELECT groupid FROM pg_dist_placement WHERE shardid = get_shard_id_for_distribution_column('accounts', 'globex'))
       AS on_different_workers;
CREATE VIEW globex_state AS
  SELECT 'accounts' AS t, count(*) AS n, string_agg(id || ':' || name || ':' || secret, ',' ORDER BY id) AS rows
    FROM accounts WHERE tenant_id = 'globex'
  UNION ALL
  SELECT 'ledger', count(*), string_agg(id || ':' || amount, ',' ORDER BY id) FROM ledger WHERE tenant_id = 'globex';
SELECT * FROM globex_state;

SET ROLE c_app;
SET app.current_tenant_id = 'acme';
-- plain SELECT / INSERT / UPDATE / DELETE
SELECT id, name FROM accounts ORDER BY id;
INSERT INTO accounts VALUES ('globex', 9, 'planted', 'x');
\echo sqlstate :LAST_ERROR_SQLSTATE
UPDATE accounts SET secret = 'stolen' WHERE tenant_id = 'globex';
DELETE FROM accounts WHERE tenant_id = 'globex';
-- UPDATE ... FROM and DELETE ... USING joining another protected table
UPDATE ledger l SET amount = 0 FROM accounts a WHERE a.tenant_id = l.tenant_id AND a.id = l.account_id;
DELETE FROM ledger l USING accounts a WHERE a.tenant_id = l.tenant_id AND a.name = 'gina' AND l.account_id = a.id;
-- INSERT ... SELECT (pushed down), and through the coordinator (refused: COPY)
INSERT INTO ledger SELECT tenant_id, id + 1000, account_id, amount FROM ledger;
INSERT INTO ledger SELECT 'globex', 999, 1, 1 FROM generate_series(1, 1);
\echo sqlstate :LAST_ERROR_SQLSTATE
-- INSERT ... ON CONFLICT DO UPDATE aimed at another tenant's key
INSERT INTO accounts VALUES ('globex', 1, 'pwned', 'x')
  ON CONFLICT (tenant_id, id) DO UPDATE SET secret = 'pwned';
\echo sqlstate :LAST_ERROR_SQLSTATE
-- RETURNING and writable CTEs
UPDATE accounts SET name = name RETURNING tenant_id, id, secret;
WITH d AS (DELETE FROM accounts WHERE tenant_id = 'globex' RETURNING *) SELECT count(*) AS deleted FROM d;
WITH u AS (UPDATE ledger SET amount = -1 WHERE tenant_id <> 'acme' RETURNING *) SELECT count(*) AS updated FROM u;
-- Router query for the other tenant's key, and a subquery that counts it
SELECT count(*) AS router_globex FROM accounts WHERE tenant_id = 'globex' AND id = 1;
SELECT (SELECT count(*) FROM ledger WHERE tenant_id = 'globex') AS subquery_globex;
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
PREPARE by_key(text) AS SELECT count(*) FROM accounts WHERE tenant_id = $1;
EXECUTE by_key('globex'); EXECUTE by_key('globex'); EXECUTE by_key('globex');
EXECUTE by_key('globex'); EXECUTE by_key('globex'); EXECUTE by_key('globex');
DEALLOCATE by_key;
-- COPY TO shows only the tenant's rows; COPY FROM is refused
COPY accounts TO STDOUT;
COPY (SELECT * FROM accounts) TO STDOUT;
COPY accounts FROM STDIN;
globex	7	copied-in	x
\.
\echo sqlstate :LAST_ERROR_SQLSTATE
-- TRUNCATE: the role has no TRUNCATE privilege
TRUNCATE accounts;
\echo sqlstate :LAST_ERROR_SQLSTATE
-- A leaky function with a tiny cost, pushed down to the workers, sees only the tenant's rows
RESET ROLE;
CREATE FUNCTION leak(text) RETURNS boolean LANGUAGE plpgsql COST 0.0000001 AS $$
BEGIN RAISE NOTICE 'leak saw %', $1; RETURN true; END $$;
SET ROLE c_app;
SELECT id FROM accounts WHERE leak(secret) ORDER BY id;
SELECT count(*) FROM ledger WHERE leak(amount::text);
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
SET app.current_tenant_id = E'acme\\''; SELECT 1';
SELECT count(*) AS quote_in_tenant FROM accounts;
-- row_security = off: an error for a role that does not bypass row level security
SET app.current_tenant_id = 'acme';
SET row_security = off;
SELECT count(*) FROM accounts;
\echo sqlstate :LAST_ERROR_SQLSTATE
RESET row_security;
-- Citus's own switches do not help: the tenant reaches the workers with propagation off too.
SET citus.propagate_set_commands = 'none';
SELECT count(*) AS propagation_off FROM accounts;
RESET citus.propagate_set_commands;
-- Connected to the worker that holds globex's shard, naming the shard itself: its policies
-- apply there too.
RESET ROLE;
SELECT current_setting('unix_socket_directories') AS coord_host, current_setting('port') AS coord_port \gset
SELECT shard_name('accounts', p.shardid) AS globex_shard, n.nodename AS host, n.nodeport AS port
  FROM pg_dist_placement p JOIN pg_dist_node n USING (groupid)
 WHERE p.shardid = get_shard_id_for_distribution_column('accounts', 'globex') \gset
\c - c_app :host :port
SET app.current_tenant_id = 'acme';
SET citus.override_table_visibility = off;
SELECT count(*) AS globex_shard_as_acme FROM :globex_shard;
SET citus.enable_manual_changes_to_shards = on;
UPDATE :globex_shard SET secret = 'stolen';
DELETE FROM :globex_shard;
\c - postgres :coord_host :coord_port
SET ROLE c_app;
-- A spoofed Citus application_name gives no pass on the coordinator's guard.
RESET ROLE;
SET ROLE c_owner;
SET application_name = 'citus_internal gpid=10000000001';
ALTER TABLE accounts DISABLE ROW LEVEL SECURITY;
\echo sqlstate :LAST_ERROR_SQLSTATE
RESET application_name;
-- The table owner without superuser is bound by FORCE, for reads and writes
SET app.current_tenant_id = 'acme';
SELECT count(*) AS owner_sees FROM accounts;
DELETE FROM accounts WHERE tenant_id = 'globex';
UPDATE ledger SET amount = 0 WHERE tenant_id = 'globex';
RESET ROLE;

-- After all of it, globex's rows are exactly as they were.
SELECT * FROM globex_state;
