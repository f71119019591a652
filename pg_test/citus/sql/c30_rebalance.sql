-- After a shard move, a split and a rebalance, every placement keeps its policies and the
-- tenants stay apart; the workers still register nothing. Node names and shard ids go into psql
-- variables, not into the output.
\set VERBOSITY terse
SELECT get_shard_id_for_distribution_column('products', 1) AS shard1 \gset
SELECT n.nodename AS src_host, n.nodeport AS src_port
  FROM pg_dist_placement p JOIN pg_dist_node n USING (groupid) WHERE p.shardid = :shard1 \gset
SELECT n.nodename AS dst_host, n.nodeport AS dst_port
  FROM pg_dist_node n WHERE n.groupid > 0 AND n.nodeport <> :src_port \gset
-- Move tenant 1's shard (with its co-located orders shard) to the other worker.
SELECT citus_move_shard_placement(:shard1, :'src_host', :src_port, :'dst_host', :dst_port,
                                  shard_transfer_mode => 'block_writes');
SELECT n.nodeport = :dst_port AS moved
  FROM pg_dist_placement p JOIN pg_dist_node n USING (groupid) WHERE p.shardid = :shard1;
SELECT table_name, status, missing FROM tenantguard.coverage();
SET ROLE c_app;
SET app.current_tenant_id = '1';
SELECT count(*) AS tenant_1_after_move, string_agg(name, ',' ORDER BY name) FROM products;
INSERT INTO products (tenant_id, name) VALUES (1, 'a4');
INSERT INTO products (tenant_id, name) VALUES (2, 'forged for 2');
SET app.current_tenant_id = '2';
SELECT count(*) AS tenant_2_after_move FROM products WHERE tenant_id = 1;
RESET ROLE;

-- Split tenant 1's shard in two, one half on each worker.
SELECT shardminvalue::bigint AS lo, shardmaxvalue::bigint AS hi FROM pg_dist_shard WHERE shardid = :shard1 \gset
SELECT citus_split_shard_by_split_points(:shard1, ARRAY[((:lo::bigint + :hi::bigint) / 2)::text],
         ARRAY(SELECT nodeid FROM pg_dist_node WHERE groupid > 0 ORDER BY nodeid),
         shard_transfer_mode => 'block_writes');
SELECT count(*) AS products_shards FROM pg_dist_shard WHERE logicalrelid = 'products'::regclass;
SELECT table_name, status, missing FROM tenantguard.coverage();
SELECT bool_and(result = '5') AS five_policies_per_shard
  FROM run_command_on_placements('products',
         $$SELECT count(*) FROM pg_policy WHERE polrelid = '%s'::regclass$$);
SET ROLE c_app;
SET app.current_tenant_id = '1';
SELECT count(*) AS tenant_1_after_split FROM products;
INSERT INTO products (tenant_id, name) VALUES (1, 'a5');
SET app.current_tenant_id = '2';
SELECT count(*) AS tenant_2_after_split, string_agg(name, ',' ORDER BY name) FROM products;
RESET ROLE;

-- Rebalance: move three more shards to one worker, and let the rebalancer even them out.
SELECT count(citus_move_shard_placement(s.shardid, :'src_host', :src_port, :'dst_host', :dst_port,
                                        shard_transfer_mode => 'block_writes')) AS moved
  FROM (SELECT shardid FROM citus_shards
         WHERE table_name = 'products'::regclass AND nodeport = :src_port
         ORDER BY shardid LIMIT 3) s;
SELECT max(c) - min(c) > 1 AS unbalanced FROM (
  SELECT count(*) c FROM citus_shards WHERE table_name = 'products'::regclass GROUP BY nodeport) x;
SET client_min_messages = warning;
SELECT rebalance_table_shards('products', rebalance_strategy => 'by_shard_count',
                              shard_transfer_mode => 'block_writes');
RESET client_min_messages;
SELECT max(c) - min(c) <= 1 AS balanced FROM (
  SELECT count(*) c FROM citus_shards WHERE table_name = 'products'::regclass GROUP BY nodeport) x;
SELECT table_name, status, missing FROM tenantguard.coverage();
SET ROLE c_app;
SET app.current_tenant_id = '1';
SELECT count(*) AS tenant_1_after_rebalance FROM products;
SET app.current_tenant_id = '2';
SELECT count(*) AS tenant_2_after_rebalance FROM products;
RESET ROLE;
SELECT success, result FROM run_command_on_workers($$SELECT count(*) FROM tenantguard.registry$$);
