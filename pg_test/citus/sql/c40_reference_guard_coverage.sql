-- A reference table with shared_read, the guard on the coordinator, and coverage() of every
-- placement: a shard that loses its policies makes the table unprotected.
\set VERBOSITY terse
SET ROLE c_owner;
CREATE TABLE plans (id int PRIMARY KEY, tenant_id bigint, name text, public boolean NOT NULL DEFAULT false);
SELECT create_reference_table('plans');
SELECT tenantguard.protect('plans', shared_read => 'public');
GRANT SELECT, INSERT, UPDATE, DELETE ON plans TO c_app;
RESET ROLE;
-- Every placement of the reference table (the coordinator's and each worker's) has the policies.
SELECT count(*) AS placements, bool_and(result = '6') AS six_policies_each
  FROM run_command_on_placements('plans',
         $$SELECT count(*) FROM pg_policy WHERE polrelid = '%s'::regclass$$);
SET ROLE c_app;
SET app.current_tenant_id = '1';
INSERT INTO plans VALUES (1, 1, 'tenant 1 private', false);
INSERT INTO plans VALUES (9, 2, 'forged for 2', false);
SET app.current_tenant_id = '2';
INSERT INTO plans VALUES (2, 2, 'tenant 2 public', true), (3, 2, 'tenant 2 private', false);
SELECT name FROM plans ORDER BY id;
-- A shared row is readable, not writable, by another tenant.
SET app.current_tenant_id = '1';
SELECT name FROM plans ORDER BY id;
UPDATE plans SET name = 'taken over' WHERE id = 2;
DELETE FROM plans WHERE id = 2;
SET app.current_tenant_id = '2';
SELECT name FROM plans WHERE id = 2;
RESET app.current_tenant_id;
SELECT count(*) AS no_tenant FROM plans;
RESET ROLE;

-- The guard on the coordinator: the owner cannot switch the protection of a distributed table
-- off, and nothing reaches a shard.
\set VERBOSITY default
SET ROLE c_owner;
ALTER TABLE products DISABLE ROW LEVEL SECURITY;
ALTER TABLE products NO FORCE ROW LEVEL SECURITY;
DROP POLICY tenantguard_tenant_select ON products;
ALTER POLICY tenantguard_tenant_select ON products USING (true);
DROP TRIGGER tenantguard_audit ON products;
ALTER TABLE plans DISABLE ROW LEVEL SECURITY;
RESET ROLE;
\set VERBOSITY terse
SELECT bool_and(result = 't') AS rls_still_forced_everywhere
  FROM run_command_on_placements('products',
         $$SELECT relrowsecurity AND relforcerowsecurity FROM pg_class WHERE oid = '%s'::regclass$$);

-- unprotect() and protect() on the coordinator reach every shard, once.
SET ROLE c_owner;
SELECT tenantguard.unprotect('orders');
RESET ROLE;
SELECT bool_and(result = '0') AS no_policies_left
  FROM run_command_on_placements('orders',
         $$SELECT count(*) FROM pg_policy WHERE polrelid = '%s'::regclass$$);
SELECT table_name, status FROM tenantguard.coverage() WHERE table_name = 'orders';
SET ROLE c_owner;
SELECT tenantguard.protect('orders');
RESET ROLE;
SELECT bool_and(result = '5') AS five_policies_again
  FROM run_command_on_placements('orders',
         $$SELECT count(*) FROM pg_policy WHERE polrelid = '%s'::regclass$$);

-- A shard that lost a policy behind the coordinator's back (a superuser on a worker, with
-- citus.enable_manual_changes_to_shards): coverage() and assert_coverage() see it.
SELECT table_name, status, missing FROM tenantguard.coverage();
SELECT current_setting('unix_socket_directories') AS coord_host, current_setting('port') AS coord_port \gset
SELECT s.shardid AS broken, shard_name('products', s.shardid) AS broken_name, n.nodename AS host, n.nodeport AS port
  FROM pg_dist_shard s JOIN pg_dist_placement p USING (shardid) JOIN pg_dist_node n USING (groupid)
 WHERE s.logicalrelid = 'products'::regclass ORDER BY s.shardid LIMIT 1 \gset
\c - - :host :port
SET citus.enable_manual_changes_to_shards = on;
DROP POLICY tenantguard_tenant_select ON :broken_name;
\c - - :coord_host :coord_port
SELECT shardid = :broken AS the_broken_shard, result AS policies
  FROM run_command_on_placements('products',
         $$SELECT count(*) FROM pg_policy WHERE polrelid = '%s'::regclass$$)
 WHERE result <> '5';
SELECT table_name, status, missing FROM tenantguard.coverage();
SELECT tenantguard.assert_coverage();
-- protect() again does not see it (the coordinator's table is intact); recreating the policy
-- on the shard the way Citus made it does.
\c - - :host :port
SET citus.enable_manual_changes_to_shards = on;
CREATE POLICY tenantguard_tenant_select ON :broken_name FOR SELECT
  USING (tenant_id OPERATOR(pg_catalog.=) tenantguard.tenant_bigint('app.current_tenant_id'));
\c - - :coord_host :coord_port
SELECT table_name, status, missing FROM tenantguard.coverage() WHERE table_name = 'products';
-- A shard whose row level security is no longer forced counts the same.
SELECT shard_name('orders', s.shardid) AS loose_name, n.nodename AS host, n.nodeport AS port
  FROM pg_dist_shard s JOIN pg_dist_placement p USING (shardid) JOIN pg_dist_node n USING (groupid)
 WHERE s.logicalrelid = 'orders'::regclass ORDER BY s.shardid DESC LIMIT 1 \gset
\c - - :host :port
SET citus.enable_manual_changes_to_shards = on;
ALTER TABLE :loose_name NO FORCE ROW LEVEL SECURITY;
\c - - :coord_host :coord_port
SELECT table_name, status, missing FROM tenantguard.coverage();
\c - - :host :port
SET citus.enable_manual_changes_to_shards = on;
ALTER TABLE :loose_name FORCE ROW LEVEL SECURITY;
\c - - :coord_host :coord_port
SELECT table_name, status, missing FROM tenantguard.coverage();
-- Coverage on a worker leaves Citus tables to the coordinator.
SELECT result FROM run_command_on_workers($$SELECT count(*) FROM tenantguard.coverage()$$);
