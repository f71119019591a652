-- Isolation on every node, as a NOSUPERUSER NOBYPASSRLS role and as the (non-superuser) table
-- owner: router queries, all-shard queries, INSERT ... SELECT, multi-row inserts, UPDATE and
-- DELETE across tenants, COPY; the tenant set by set_tenant() (session and transaction), SET,
-- SET LOCAL and set_config(). Errors from a worker name the node: terse, so the file does not
-- depend on where the cluster runs.
\set VERBOSITY terse
SET ROLE c_app;
-- No tenant: no row anywhere, and no insert.
SELECT count(*) AS no_tenant_rows FROM products;
INSERT INTO products (tenant_id, name) VALUES (1, 'nobody');

-- Two tenants whose rows land on different workers, and a multi-row insert.
SELECT tenantguard.set_tenant('1', false);
INSERT INTO products (tenant_id, name, price) VALUES (1, 'a1', 10), (1, 'a2', 20), (1, 'a3', 30);
SELECT tenantguard.set_tenant('2', false);
INSERT INTO products (tenant_id, name, price) VALUES (2, 'b1', 11), (2, 'b2', 22);
-- Another tenant's row, in a multi-row insert or alone: refused.
INSERT INTO products (tenant_id, name) VALUES (2, 'b3'), (1, 'forged for 1');
INSERT INTO products (tenant_id, name) VALUES (1, 'forged for 1');
RESET ROLE;
SELECT (SELECT nodeport FROM pg_dist_placement JOIN pg_dist_node USING (groupid)
         WHERE shardid = get_shard_id_for_distribution_column('products', 1))
    <> (SELECT nodeport FROM pg_dist_placement JOIN pg_dist_node USING (groupid)
         WHERE shardid = get_shard_id_for_distribution_column('products', 2)) AS on_different_workers;
SET ROLE c_app;

-- All-shard and router queries see the session tenant's rows only.
SELECT tenantguard.current_tenant(), count(*), string_agg(name, ',' ORDER BY name) FROM products;
SELECT count(*) AS router_own FROM products WHERE tenant_id = 2;
SELECT count(*) AS router_other FROM products WHERE tenant_id = 1;
SELECT tenant_id, count(*) FROM products GROUP BY tenant_id ORDER BY 1;
-- UPDATE and DELETE of the other tenant's rows touch nothing; their own, everything.
UPDATE products SET price = 0 WHERE tenant_id = 1;
DELETE FROM products WHERE tenant_id = 1;
UPDATE products SET price = price + 1;
UPDATE products SET price = price + 1 WHERE name = 'a1';
DELETE FROM products WHERE name LIKE 'a%';
-- RETURNING shows nothing of another tenant.
UPDATE products SET price = price RETURNING tenant_id, name;

-- INSERT ... SELECT pushed down to co-located shards (no sequence to evaluate on the
-- coordinator) stays inside the tenant.
INSERT INTO orders (id, tenant_id, product_id, qty) SELECT id, tenant_id, id, 1 FROM products;
SELECT tenant_id, count(*) FROM orders GROUP BY 1;
-- Joins across co-located tables: the tenant's rows on both sides.
SELECT p.name, o.qty FROM products p JOIN orders o ON o.tenant_id = p.tenant_id AND o.product_id = p.id ORDER BY 1;
-- INSERT ... SELECT that Citus routes through the coordinator sends the rows with COPY, which
-- PostgreSQL refuses for a table with row level security (as on a single node): fails closed.
INSERT INTO products (tenant_id, name) SELECT 2, 'g' || g FROM generate_series(1, 3) g;
-- COPY into the table: refused, as on a single node. COPY out: the tenant's rows only.
COPY products (tenant_id, name) FROM stdin;
2	copied
\.
COPY (SELECT tenant_id, name FROM products ORDER BY name) TO stdout;
COPY products (tenant_id, name) TO stdout;

-- Every way of setting the tenant reaches the workers.
SELECT tenantguard.set_tenant(NULL, false);
SELECT count(*) AS cleared FROM products;
BEGIN;
SELECT tenantguard.set_tenant('1');
SELECT count(*) AS set_tenant_local FROM products;
COMMIT;
SELECT count(*) AS after_commit FROM products;
SET app.current_tenant_id = '1';
SELECT count(*) AS plain_set FROM products;
RESET app.current_tenant_id;
BEGIN;
SET LOCAL app.current_tenant_id = '2';
SELECT count(*) AS set_local FROM products;
-- A change inside the transaction reaches the connections already open.
SET LOCAL app.current_tenant_id = '1';
SELECT count(*) AS changed_in_transaction FROM products;
COMMIT;
SELECT set_config('app.current_tenant_id', '2', false) IS NOT NULL AS set_config;
SELECT count(*) AS via_set_config FROM products;
-- Prepared statements follow the tenant, not the tenant they were planned with.
PREPARE by_tenant AS SELECT count(*) FROM products;
EXECUTE by_tenant;
SET app.current_tenant_id = '1';
EXECUTE by_tenant;
EXECUTE by_tenant;
EXECUTE by_tenant;
EXECUTE by_tenant;
EXECUTE by_tenant;
EXECUTE by_tenant;
SET app.current_tenant_id = '2';
EXECUTE by_tenant;
DEALLOCATE by_tenant;
RESET app.current_tenant_id;

-- The table's owner (not a superuser; row level security is forced) is isolated the same way.
RESET ROLE;
SET ROLE c_owner;
SELECT count(*) AS owner_no_tenant FROM products;
SELECT tenantguard.set_tenant('2', false);
SELECT count(*) AS owner_tenant_2 FROM products;
UPDATE products SET price = 0 WHERE tenant_id = 1;
SELECT tenantguard.set_tenant(NULL, false);
RESET ROLE;
-- What is really there.
SELECT tenant_id, count(*) FROM products GROUP BY 1 ORDER BY 1;
