-- The Citus suite (scripts/citus_test.sh): a coordinator and two workers, Citus and tenantguard
-- preloaded on each. This file: the extension reaches the workers, auto-protect of a new table
-- and then its distribution, protect() on the coordinator only, and the roles the suite uses.
SELECT count(*) AS workers FROM pg_dist_node WHERE groupid > 0 AND isactive;
CREATE EXTENSION tenantguard;
-- CREATE EXTENSION on the coordinator reaches the workers.
SELECT success, result FROM run_command_on_workers(
  $$SELECT extversion FROM pg_extension WHERE extname = 'tenantguard'$$);

CREATE ROLE c_owner NOSUPERUSER NOBYPASSRLS LOGIN;
CREATE ROLE c_app NOSUPERUSER NOBYPASSRLS LOGIN;
CREATE ROLE c_admin NOSUPERUSER NOBYPASSRLS LOGIN IN ROLE tenantguard_admin;
GRANT USAGE, CREATE ON SCHEMA public TO c_owner;
GRANT USAGE ON SCHEMA public TO c_app, c_admin;

-- Auto-protect on the coordinator while citus.enable_unsafe_triggers is off: the new table is
-- isolated at once, without triggers, so that create_distributed_table() accepts it.
SET ROLE c_owner;
CREATE TABLE products (id bigserial, tenant_id bigint NOT NULL, name text, price numeric,
                       PRIMARY KEY (tenant_id, id));
SELECT create_distributed_table('products', 'tenant_id');
SELECT table_name, status, missing FROM tenantguard.coverage();
RESET ROLE;
-- The workers protected nothing by themselves, registered nothing, and every shard has each of
-- the coordinator's policies once.
SELECT success, result FROM run_command_on_workers($$SELECT count(*) FROM tenantguard.registry$$);
SELECT bool_and(result = '5') AS five_policies_per_shard
  FROM run_command_on_placements('products',
         $$SELECT count(*) FROM pg_policy WHERE polrelid = '%s'::regclass$$);

-- Triggers on a Citus table need citus.enable_unsafe_triggers (Citus refuses them otherwise).
SET ROLE c_owner;
SELECT tenantguard.protect('products');
RESET ROLE;
ALTER DATABASE regression SET citus.enable_unsafe_triggers = on;
SELECT run_command_on_workers($$ALTER DATABASE regression SET citus.enable_unsafe_triggers = on$$) IS NOT NULL AS set_on_workers;
\c
SET ROLE c_owner;
SELECT tenantguard.protect('products');
SELECT table_name, status, missing FROM tenantguard.coverage();
-- A second table, co-located, auto-protected with its triggers now.
CREATE TABLE orders (id bigserial, tenant_id bigint NOT NULL, product_id bigint, qty int,
                     PRIMARY KEY (tenant_id, id));
SELECT create_distributed_table('orders', 'tenant_id', colocate_with => 'products');
GRANT SELECT, INSERT, UPDATE, DELETE ON products, orders TO c_app, c_admin;
GRANT USAGE ON SEQUENCE products_id_seq, orders_id_seq TO c_app, c_admin;
RESET ROLE;
SELECT tgname FROM pg_trigger WHERE tgrelid = 'orders'::regclass AND NOT tgisinternal ORDER BY 1;
SELECT bool_and(result = '2') AS audit_triggers_on_every_shard
  FROM run_command_on_placements('orders',
         $$SELECT count(*) FROM pg_trigger WHERE tgrelid = '%s'::regclass AND tgname LIKE 'tenantguard_audit%%'$$);

-- protect() of a shard, or of a Citus table on a worker, is refused with a hint.
SELECT result FROM run_command_on_workers($$SELECT tenantguard.protect('products')$$) LIMIT 1;
SELECT result FROM run_command_on_placements('products',
         $$SELECT tenantguard.protect('%s')$$) LIMIT 1;
