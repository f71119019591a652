-- The slow-query log (src/slowlog/): its table, the views every role reads, and the flush.
CREATE TABLE tenantguard._slow_query_log (
    started_at  timestamptz,
    duration_ms float8      NOT NULL,
    rows        bigint,
    queryid     bigint,
    query       text,
    database    text,
    db_user     text,
    app_user    text,
    tenant_id   text COLLATE "C",
    status      text        NOT NULL CHECK (status IN ('ok', 'error', 'cancelled')),
    sqlstate    text,
    epoch       timestamptz NOT NULL,
    seq         bigint      NOT NULL,
    PRIMARY KEY (epoch, seq)
);
COMMENT ON TABLE tenantguard._slow_query_log IS
  'The rows behind tenantguard.slow_query_log; read them through that view.';
CREATE INDEX slow_query_log_tenant_time ON tenantguard._slow_query_log (tenant_id, started_at);
SELECT pg_catalog.pg_extension_config_dump('tenantguard._slow_query_log', '');
-- Defence in depth: should anyone grant SELECT on the table itself, only admins see rows.
ALTER TABLE tenantguard._slow_query_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard._slow_query_log FORCE ROW LEVEL SECURITY;
CREATE POLICY slow_query_admin_read ON tenantguard._slow_query_log FOR SELECT TO tenantguard_admin
  USING (true);
REVOKE ALL ON tenantguard._slow_query_log FROM PUBLIC;

-- What every role reads, by the rules of slow_queries(): superusers, members of tenantguard_admin
-- and of pg_read_all_stats see every row; anyone else its tenant's rows (not those of a tenant
-- id longer than 64 bytes, kept cut and ending in '...', which could be another's first bytes:
-- src/slowlog/ring.rs, same_tenant). Another role's statement
-- text and query id are NULL unless the reader is one of the first three (as pg_stat_statements
-- shows them). One-time filters switch a branch off whole, so a tenant's read stays an index scan
-- on (tenant_id, started_at); each branch is a security_barrier view of its own (see audit_log).
CREATE VIEW tenantguard._slow_query_log_all WITH (security_barrier = true) AS
SELECT l.started_at, l.duration_ms, l.rows, l.queryid, l.query, l.database, l.db_user,
       l.app_user, l.tenant_id, l.status, l.sqlstate, l.epoch, l.seq
  FROM tenantguard._slow_query_log l
 WHERE tenantguard._reads_all_stats();
CREATE VIEW tenantguard._slow_query_log_tenant WITH (security_barrier = true) AS
SELECT l.started_at, l.duration_ms, l.rows,
       CASE WHEN l.db_user = CURRENT_USER THEN l.queryid END AS queryid,
       CASE WHEN l.db_user = CURRENT_USER THEN l.query END AS query,
       l.database, l.db_user, l.app_user, l.tenant_id, l.status, l.sqlstate, l.epoch, l.seq
  FROM tenantguard._slow_query_log l
 WHERE NOT tenantguard._reads_all_stats()
   AND l.tenant_id = (SELECT tenantguard.current_tenant())
   AND right(l.tenant_id, 3) <> '...';
REVOKE ALL ON tenantguard._slow_query_log_all, tenantguard._slow_query_log_tenant FROM PUBLIC;
CREATE VIEW tenantguard.slow_query_log WITH (security_barrier = true) AS
SELECT * FROM tenantguard._slow_query_log_all
UNION ALL
SELECT * FROM tenantguard._slow_query_log_tenant;
COMMENT ON VIEW tenantguard.slow_query_log IS
  'Slow queries copied from the ring by flush_slow_queries() or the flush worker (epoch: server start time, seq: entry number). Seen like slow_queries().';
GRANT SELECT ON tenantguard.slow_query_log TO PUBLIC;

CREATE VIEW tenantguard.slow_queries AS SELECT * FROM tenantguard.slow_queries();
GRANT SELECT ON tenantguard.slow_queries TO PUBLIC;
COMMENT ON VIEW tenantguard.slow_queries IS
  'The shared-memory ring of slow queries: all of them for superusers, admins and pg_read_all_stats, the session tenant''s otherwise; other roles'' statement text only for those three.';

CREATE FUNCTION tenantguard.flush_slow_queries() RETURNS bigint
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$ SELECT tenantguard._flush_slow_queries() $$;
REVOKE ALL ON FUNCTION tenantguard.flush_slow_queries() FROM PUBLIC;
REVOKE ALL ON FUNCTION tenantguard._flush_slow_queries() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenantguard.flush_slow_queries() TO tenantguard_admin;
COMMENT ON FUNCTION tenantguard.flush_slow_queries() IS
  'Copy new slow-query ring entries of this database into tenantguard.slow_query_log, each exactly once; returns how many.';

-- Per-tenant usage (src/slowlog/stats.rs, stats_api.rs): the functions are Rust; what they are for.
COMMENT ON FUNCTION tenantguard.tenant_stats() IS
  'Every top-level statement counted per database, role and tenant since the last reset: calls, time, rows, blocks, errors, timeouts. All rows for superusers, admins and pg_read_all_stats; the session tenant''s rows in this database otherwise.';
COMMENT ON FUNCTION tenantguard.top_tenants(integer, text) IS
  'The n heaviest tenants of tenant_stats() (every role added up per database and tenant), ranked by total_time, calls, mean_time, max_time, rows, shared_blks_hit, shared_blks_read, temp_blks_written, errors or timeouts.';
COMMENT ON FUNCTION tenantguard.tenant_stats_info() IS
  'The tenant stats table: its bound (tenantguard.tenant_stats_max), entries, evictions and last reset. For superusers, admins and pg_read_all_stats.';
COMMENT ON FUNCTION tenantguard.reset_tenant_stats() IS
  'Empty the tenant stats (superusers and tenantguard_admin); returns how many entries there were.';
