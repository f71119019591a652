-- The audit trail on Citus: rows written on the worker that holds the shard, under the
-- distributed table's name, with the application user and the tenant; read from the coordinator
-- through audit_log and audit_history(), each role seeing what it may. Rewrites keep the
-- registry entry and the history.
\set VERBOSITY terse
SET ROLE c_app;
SET app.current_tenant_id = '1';
SET app.user_id = 'alice';
SET application_name = 'shop-frontend';
INSERT INTO orders (tenant_id, product_id, qty) VALUES (1, 1, 5);
UPDATE orders SET qty = 6 WHERE tenant_id = 1 AND product_id = 1;
SET app.current_tenant_id = '2';
SET app.user_id = 'bob';
INSERT INTO orders (tenant_id, product_id, qty) VALUES (2, 2, 7);
DELETE FROM orders WHERE product_id = 2 AND qty = 7;
RESET ROLE;
-- Written on the workers, none on the coordinator, each naming the distributed table.
SELECT count(*) AS on_coordinator FROM tenantguard._audit_log WHERE table_name = 'orders';
SELECT sum(result::int) AS on_workers FROM run_command_on_workers(
  $$SELECT count(*) FROM tenantguard._audit_log WHERE table_name = 'orders' AND table_oid = 'orders'::regclass$$);

-- Tenant 1 reads its own history from the coordinator; tenant 2 its own; nobody without a tenant.
SET ROLE c_app;
SET app.current_tenant_id = '1';
SELECT table_oid, op, tenant_id, app_user, application_name, record_key IS NOT NULL AS keyed,
       new_values ->> 'qty' AS qty
  FROM tenantguard.audit_log WHERE table_name = 'orders' ORDER BY occurred_at, op;
SELECT op, new_values ->> 'qty' AS qty FROM tenantguard.audit_history('orders',
  (SELECT record_key FROM tenantguard.audit_log WHERE table_name = 'orders' LIMIT 1)) ORDER BY occurred_at;
SET app.current_tenant_id = '2';
SELECT op, tenant_id, app_user FROM tenantguard.audit_log WHERE table_name = 'orders' ORDER BY occurred_at;
RESET app.current_tenant_id;
SELECT count(*) AS no_tenant FROM tenantguard.audit_log;
RESET ROLE;
-- An admin sees every row.
SET ROLE c_admin;
SELECT tenant_id, count(*) FROM tenantguard.audit_log WHERE table_name = 'orders' GROUP BY 1 ORDER BY 1;
RESET ROLE;
-- A role that may not read the table sees none of its history.
CREATE ROLE c_outsider NOSUPERUSER NOBYPASSRLS LOGIN;
SET ROLE c_outsider;
SET app.current_tenant_id = '1';
SELECT count(*) AS outsider FROM tenantguard.audit_log;
RESET ROLE;

-- A reference table's change runs on every placement and is written once.
SET ROLE c_app;
SET app.current_tenant_id = '1';
UPDATE plans SET name = 'tenant 1 renamed' WHERE id = 1;
SELECT op, tenant_id FROM tenantguard.audit_log WHERE table_name = 'plans' AND op = 'UPDATE';
RESET ROLE;
-- TRUNCATE of a distributed table: one row, written by the coordinator.
SET ROLE c_owner;
CREATE TABLE scratch (id int, tenant_id bigint);
SELECT create_distributed_table('scratch', 'tenant_id');
TRUNCATE scratch;
RESET ROLE;
SELECT count(*) AS truncate_rows FROM tenantguard.audit_log WHERE table_name = 'scratch' AND op = 'TRUNCATE';

-- alter_distributed_table() and undistribute_table() rebuild the table: the registry entry
-- follows, the protection stays whole, and the history stays readable.
SET ROLE c_owner;
SELECT alter_distributed_table('orders', shard_count => 8, cascade_to_colocated => false);
RESET ROLE;
SELECT relid, tenant_column FROM tenantguard.registry WHERE relid = 'orders'::regclass;
SELECT table_name, status, missing FROM tenantguard.coverage() WHERE table_name = 'orders';
SET ROLE c_app;
SET app.current_tenant_id = '1';
SELECT count(*) AS orders_history_after_alter FROM tenantguard.audit_log WHERE table_name = 'orders';
INSERT INTO orders (tenant_id, product_id, qty) VALUES (1, 3, 1);
SELECT count(*) AS orders_history_after_insert FROM tenantguard.audit_log WHERE table_name = 'orders';
RESET ROLE;
SET ROLE c_owner;
SELECT undistribute_table('scratch');
RESET ROLE;
SELECT table_name, status, missing FROM tenantguard.coverage() WHERE table_name = 'scratch';
SELECT count(*) AS scratch_registered FROM tenantguard.registry WHERE relid = 'scratch'::regclass;
