-- tenantguard 0.1.0 -> 0.2.0. Run by ALTER EXTENSION tenantguard UPDATE (the default version of
-- this build); scripts/upgrade_test.sh checks that the result is identical to a fresh install.
\echo Use "ALTER EXTENSION tenantguard UPDATE" to load this file. \quit

-- The pgrx functions added in 0.2.0 (src/audit/read.rs, src/slowlog/api.rs).
CREATE FUNCTION tenantguard."_reader"() RETURNS oid /* pg_sys :: Oid */
STRICT STABLE PARALLEL RESTRICTED
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_reader_wrapper';
CREATE FUNCTION tenantguard."_audit_sees_all"(
	"reader" oid /* pg_sys :: Oid */
) RETURNS bool /* bool */
STRICT STABLE PARALLEL RESTRICTED
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_audit_sees_all_wrapper';
CREATE FUNCTION tenantguard."_reads_all_stats"() RETURNS bool /* bool */
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_reads_all_stats_wrapper';

-- Per-tenant usage (src/slowlog/stats_api.rs, docs/tenant-stats.md).
CREATE FUNCTION tenantguard."tenant_stats"() RETURNS TABLE (
	"database" TEXT,  /* Option < String > */
	"db_user" TEXT,  /* Option < String > */
	"tenant_id" TEXT,  /* Option < String > */
	"calls" bigint,  /* i64 */
	"total_time_ms" double precision,  /* f64 */
	"mean_time_ms" double precision,  /* f64 */
	"max_time_ms" double precision,  /* f64 */
	"rows" bigint,  /* i64 */
	"shared_blks_hit" bigint,  /* i64 */
	"shared_blks_read" bigint,  /* i64 */
	"temp_blks_written" bigint,  /* i64 */
	"errors" bigint,  /* i64 */
	"timeouts" bigint,  /* i64 */
	"first_seen" timestamp with time zone,  /* Option < TimestampWithTimeZone > */
	"last_seen" timestamp with time zone  /* Option < TimestampWithTimeZone > */
)
STRICT VOLATILE PARALLEL RESTRICTED
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'tenant_stats_wrapper';
CREATE FUNCTION tenantguard."tenant_stats_info"() RETURNS TABLE (
	"max_entries" bigint,  /* i64 */
	"entries" bigint,  /* i64 */
	"evicted" bigint,  /* i64 */
	"reset_at" timestamp with time zone  /* Option < TimestampWithTimeZone > */
)
STRICT VOLATILE PARALLEL RESTRICTED
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'tenant_stats_info_wrapper';
CREATE FUNCTION tenantguard."top_tenants"(
	"n" INT DEFAULT 10, /* i32 */
	"by" TEXT DEFAULT 'total_time' /* & str */
) RETURNS TABLE (
	"database" TEXT,  /* Option < String > */
	"tenant_id" TEXT,  /* Option < String > */
	"calls" bigint,  /* i64 */
	"total_time_ms" double precision,  /* f64 */
	"mean_time_ms" double precision,  /* f64 */
	"max_time_ms" double precision,  /* f64 */
	"rows" bigint,  /* i64 */
	"shared_blks_hit" bigint,  /* i64 */
	"shared_blks_read" bigint,  /* i64 */
	"temp_blks_written" bigint,  /* i64 */
	"errors" bigint,  /* i64 */
	"timeouts" bigint,  /* i64 */
	"last_seen" timestamp with time zone  /* Option < TimestampWithTimeZone > */
)
STRICT VOLATILE PARALLEL RESTRICTED
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'top_tenants_wrapper';
CREATE FUNCTION tenantguard."reset_tenant_stats"() RETURNS bigint /* i64 */
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'reset_tenant_stats_wrapper';
COMMENT ON FUNCTION tenantguard.tenant_stats() IS
  'Every top-level statement counted per database, role and tenant since the last reset: calls, time, rows, blocks, errors, timeouts. All rows for superusers, admins and pg_read_all_stats; the session tenant''s rows in this database otherwise.';
COMMENT ON FUNCTION tenantguard.top_tenants(integer, text) IS
  'The n heaviest tenants of tenant_stats() (every role added up per database and tenant), ranked by total_time, calls, mean_time, max_time, rows, shared_blks_hit, shared_blks_read, temp_blks_written, errors or timeouts.';
COMMENT ON FUNCTION tenantguard.tenant_stats_info() IS
  'The tenant stats table: its bound (tenantguard.tenant_stats_max), entries, evictions and last reset. For superusers, admins and pg_read_all_stats.';
COMMENT ON FUNCTION tenantguard.reset_tenant_stats() IS
  'Empty the tenant stats (superusers and tenantguard_admin); returns how many entries there were.';

-- Citus (src/citus/placements.rs).
CREATE FUNCTION tenantguard."_citus_role"() RETURNS TEXT /* core::option::Option<&str> */
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_citus_role_wrapper';
CREATE FUNCTION tenantguard."_context"() RETURNS jsonb /* pgrx::datum::json::JsonB */
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_context_wrapper';

-- Citus (docs/citus.md). Every function here returns nothing, or answers from this node alone,
-- when Citus is not in use in the database. Those that read Citus's catalogs are PL/pgSQL, which
-- resolves names when it runs: the extension installs the same way with or without Citus.

-- The protection of one table or shard as a digest: row level security on and forced, and each of
-- tenantguard's policies (name, command, permissive, roles by name, expressions). A shard that
-- Citus made from a protected table has the table's digest; one that lost a policy or its row
-- level security does not.
CREATE FUNCTION tenantguard._protection_digest(rel regclass) RETURNS text
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
SELECT md5(format('%s|%s|%s', c.relrowsecurity, c.relforcerowsecurity,
              (SELECT string_agg(format('%s|%s|%s|%s|%s|%s', p.polname, p.polcmd, p.polpermissive,
                                        ARRAY(SELECT CASE WHEN r = 0 THEN 'public'
                                                          ELSE pg_get_userbyid(r)::text END
                                                FROM unnest(p.polroles) AS r ORDER BY 1),
                                        pg_get_expr(p.polqual, p.polrelid),
                                        pg_get_expr(p.polwithcheck, p.polrelid)),
                                 ';' ORDER BY p.polname)
                 FROM pg_policy p
                WHERE p.polrelid = c.oid AND p.polname LIKE 'tenantguard\_%')))
  FROM pg_class c WHERE c.oid = rel
$$;

-- On each node (run there by _placement_gaps()): the digest of every placement on this node of
-- the given tables, as JSON [{"shard": id, "node": group id, "digest": text, or null when the
-- shard is missing}].
CREATE FUNCTION tenantguard._local_placements(tables text[]) RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    out text;
BEGIN
    SELECT json_agg(json_build_object(
               'shard', s.shardid,
               'node', p.groupid,
               'digest', tenantguard._protection_digest(
                             to_regclass(format('%I.%I', n.nspname, c.relname || '_' || s.shardid)))))
      INTO out
      FROM pg_dist_shard s
      JOIN pg_dist_placement p ON p.shardid = s.shardid
      JOIN pg_class c ON c.oid = s.logicalrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE p.groupid = (SELECT groupid FROM pg_dist_local_group)
       AND format('%I.%I', n.nspname, c.relname) = ANY (tables);
    RETURN COALESCE(out, '[]');
END
$$;

-- On the coordinator: for each protected distributed or reference table, how many of its shard
-- placements lack what the table has (row level security, forced, tenantguard's policies), asked
-- of every node; a placement on a node that does not answer counts as lacking. On every node, the
-- tables coverage() skips (skip = true): the shards on this node, and on a worker the Citus
-- tables, which coverage() leaves to the coordinator.
CREATE FUNCTION tenantguard._placement_gaps()
RETURNS TABLE (relid oid, skip boolean, placements integer, gaps integer)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET row_security = on
AS $$
DECLARE
    role text := tenantguard._citus_role();
    tables text[];
    node record;
    found jsonb := '[]';
BEGIN
    IF role IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY
    SELECT to_regclass(format('%I.%I', n.nspname, c.relname || '_' || s.shardid))::oid, true, 0, 0
      FROM pg_dist_shard s
      JOIN pg_dist_placement p ON p.shardid = s.shardid
      JOIN pg_class c ON c.oid = s.logicalrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE p.groupid = (SELECT groupid FROM pg_dist_local_group);
    IF role = 'worker' THEN
        -- Also shards a move or split left behind for Citus to drop later: named like a shard
        -- of a Citus table, no longer in the metadata.
        RETURN QUERY
        SELECT c.oid, true, 0, 0
          FROM pg_dist_partition d
          JOIN pg_class l ON l.oid = d.logicalrelid
          JOIN pg_class c ON c.relnamespace = l.relnamespace
                         AND left(c.relname, length(l.relname) + 1) = l.relname || '_'
                         AND substr(c.relname, length(l.relname) + 2) ~ '^[0-9]+$'
         WHERE c.relkind IN ('r', 'p')
        UNION ALL
        SELECT d.logicalrelid::oid, true, 0, 0 FROM pg_dist_partition d;
        RETURN;
    END IF;
    SELECT array_agg(format('%I.%I', n.nspname, c.relname))
      INTO tables
      FROM tenantguard.registry r
      JOIN pg_dist_partition d ON d.logicalrelid = r.relid
      JOIN pg_class c ON c.oid = r.relid
      JOIN pg_namespace n ON n.oid = c.relnamespace;
    IF tables IS NULL THEN
        RETURN;
    END IF;
    FOR node IN
        SELECT a.success, a.result
          FROM run_command_on_all_nodes(
                   format('SELECT tenantguard._local_placements(%L)', tables)) a
    LOOP
        IF node.success THEN
            found := found || node.result::jsonb;
        END IF;
    END LOOP;
    RETURN QUERY
    SELECT d.logicalrelid::oid, false, count(*)::integer,
           count(*) FILTER (WHERE t.digest IS DISTINCT FROM
                                  tenantguard._protection_digest(d.logicalrelid))::integer
      FROM tenantguard.registry r
      JOIN pg_dist_partition d ON d.logicalrelid = r.relid
      JOIN pg_dist_shard s ON s.logicalrelid = d.logicalrelid
      JOIN pg_dist_placement p ON p.shardid = s.shardid
      LEFT JOIN jsonb_to_recordset(found) AS t(shard bigint, node integer, digest text)
             ON t.shard = p.shardid AND t.node = p.groupid
     GROUP BY d.logicalrelid;
END
$$;

-- On a worker (run there by _audit_log_nodes()): this node's audit rows of Citus tables, as the
-- calling role with the given tenant context sees them through tenantguard.audit_log (or, with
-- tbl and key, audit_history()), as JSON. The context only sets what the caller could SET itself.
CREATE FUNCTION tenantguard._audit_export(context jsonb, tbl text, key jsonb) RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET row_security = on
AS $$
DECLARE
    s record;
    out text;
BEGIN
    FOR s IN SELECT * FROM jsonb_each_text(context) LOOP
        IF s.key ~ '^[A-Za-z0-9_$]+(\.[A-Za-z0-9_$]+)+$' THEN
            PERFORM set_config(s.key, s.value, true);
        END IF;
    END LOOP;
    IF tbl IS NOT NULL AND key IS NOT NULL THEN
        SELECT json_agg(h) INTO out
          FROM tenantguard.audit_history(to_regclass(tbl), key) h
         WHERE EXISTS (SELECT 1 FROM pg_dist_partition d WHERE d.logicalrelid = h.table_oid);
    ELSE
        SELECT json_agg(a) INTO out
          FROM tenantguard.audit_log a
         WHERE EXISTS (SELECT 1 FROM pg_dist_partition d WHERE d.logicalrelid = a.table_oid)
           AND (tbl IS NULL OR a.table_oid = to_regclass(tbl));
    END IF;
    RETURN COALESCE(out, '[]');
END
$$;

-- On the coordinator: the workers' audit rows (of distributed tables, written on the node that
-- holds the shard) that the calling role may see, read on each worker as that role with this
-- session's tenant context. audit_log and audit_history() add them to the coordinator's own.
-- Elsewhere: nothing.
CREATE FUNCTION tenantguard._audit_log_nodes(tbl regclass, key jsonb)
RETURNS TABLE (id bigint, occurred_at timestamptz, statement_at timestamptz, txid bigint,
               table_schema name, table_name name, table_oid regclass, op text, tenant_id text,
               record_key jsonb, old_values jsonb, new_values jsonb, changed_columns text[],
               db_user name, session_user_name name, app_user text, application_name text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
ROWS 1
AS $$
DECLARE
    node record;
    name text;
BEGIN
    IF tenantguard._citus_role() IS DISTINCT FROM 'coordinator' THEN
        RETURN;
    END IF;
    IF tbl IS NOT NULL THEN
        SELECT format('%I.%I', n.nspname, c.relname) INTO name
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = tbl;
    END IF;
    FOR node IN
        SELECT w.nodename, w.nodeport, w.success, w.result
          FROM run_command_on_workers(format('SELECT tenantguard._audit_export(%L, %L, %L)',
                                             tenantguard._context(), name, key)) w
    LOOP
        IF NOT node.success THEN
            RAISE EXCEPTION 'could not read the audit rows of Citus worker %:%', node.nodename, node.nodeport
                  USING ERRCODE = 'connection_failure', DETAIL = node.result,
                        HINT = 'Check that the worker is up; the audit rows of its shards stay there.';
        END IF;
        RETURN QUERY
        SELECT x.id, x.occurred_at, x.statement_at, x.txid, x.table_schema, x.table_name,
               to_regclass(format('%I.%I', x.table_schema, x.table_name)), x.op, x.tenant_id,
               x.record_key, x.old_values, x.new_values, x.changed_columns, x.db_user,
               x.session_user_name, x.app_user, x.application_name
          FROM jsonb_to_recordset(node.result::jsonb) AS x(
                   id bigint, occurred_at timestamptz, statement_at timestamptz, txid bigint,
                   table_schema name, table_name name, op text, tenant_id text, record_key jsonb,
                   old_values jsonb, new_values jsonb, changed_columns text[], db_user name,
                   session_user_name name, app_user text, application_name text);
    END LOOP;
END
$$;

-- Every backend keeps the setting names of protected tables, to pass the tenant on to the
-- workers (src/citus/propagate.rs); a change of the registry makes them read the names again.
CREATE FUNCTION tenantguard._registry_changed() RETURNS trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'tenantguard_registry_changed';
CREATE TRIGGER registry_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
  ON tenantguard.registry FOR EACH STATEMENT EXECUTE FUNCTION tenantguard._registry_changed();

-- tenantguard's own work runs with row_security = on (a session with it off got 42501 from the
-- registry's own policies instead of the guard's answer).
ALTER FUNCTION tenantguard.exempt(regclass, text) SET row_security = on;
ALTER FUNCTION tenantguard.unexempt(regclass) SET row_security = on;
ALTER FUNCTION tenantguard.policies(regclass) SET row_security = on;
ALTER FUNCTION tenantguard.unprotect(regclass) SET row_security = on;
ALTER FUNCTION tenantguard.unprotect_sql(regclass) SET row_security = on;
ALTER FUNCTION tenantguard.coverage() SET row_security = on;
ALTER FUNCTION tenantguard.assert_coverage() SET row_security = on;
ALTER FUNCTION tenantguard.assert_lint(text) SET row_security = on;

-- lint(): on PostgreSQL 14 the fix for a view without security_invoker is advice.
CREATE OR REPLACE FUNCTION tenantguard.lint()
RETURNS TABLE (level text, code text, object text, detail text, fix text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
SET row_security = on
-- A catalog query: JIT only adds seconds of compilation (cost estimates over 10,000 tables
-- cross jit_above_cost), and the plan has nothing for it to speed up.
SET jit = off
AS $$
WITH setting AS (
    SELECT COALESCE(NULLIF(current_setting('tenantguard.tenant_column', true), ''), 'tenant_id')::name AS col,
           COALESCE(NULLIF(current_setting('tenantguard.tenant_setting', true), ''),
                    'app.current_tenant_id') AS tenant_setting
),
tt AS (   -- tenant tables: a tenant column, or registered
    SELECT c.oid, n.nspname, c.relname, format('%I.%I', n.nspname, c.relname) AS obj,
           c.relrowsecurity AS rls, c.relforcerowsecurity AS forced, c.relowner, c.relacl,
           c.relispartition, COALESCE(r.tenant_column, s.col) AS col,
           r.relid IS NOT NULL AS registered, x.relid IS NOT NULL AS exempt,
           COALESCE(r.options ->> 'tenant_setting', s.tenant_setting) AS tenant_setting,
           a.attnum AS tattnum, COALESCE(a.attnotnull, false) AS tnotnull
      FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace
      CROSS JOIN setting s
      LEFT JOIN tenantguard.registry r ON r.relid = c.oid
      LEFT JOIN tenantguard.exemptions x ON x.relid = c.oid
      LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = COALESCE(r.tenant_column, s.col)
                              AND a.attnum > 0 AND NOT a.attisdropped
     WHERE c.relkind IN ('r', 'p') AND c.relpersistence <> 't'
       AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'tenantguard')
       AND n.nspname NOT LIKE 'pg\_%'
       AND (r.relid IS NOT NULL OR a.attnum IS NOT NULL)
       AND NOT EXISTS (SELECT 1 FROM pg_depend d
                        WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
),
hand AS (  -- policies on tenant tables that tenantguard did not write
    SELECT t.oid AS tbl, t.obj, t.col, t.tattnum, t.tenant_setting, p.oid AS poloid, p.polname,
           p.polpermissive, p.polroles,
           pg_get_expr(p.polqual, p.polrelid) AS q, pg_get_expr(p.polwithcheck, p.polrelid) AS wc
      FROM tt t JOIN pg_policy p ON p.polrelid = t.oid
     WHERE p.polname NOT LIKE 'tenantguard\_%'
),
parent_protected AS (
    SELECT t.oid FROM tt t
     WHERE t.relispartition
       AND EXISTS (SELECT 1 FROM pg_inherits i JOIN tenantguard.registry r ON r.relid = i.inhparent
                    WHERE i.inhrelid = t.oid)
),
bypass_roles AS (
    SELECT r.oid, r.rolname, r.rolsuper FROM pg_roles r
     WHERE r.rolcanlogin AND (r.rolsuper OR r.rolbypassrls)
),
dependents AS (   -- views and materialized views reading tenant tables
    SELECT DISTINCT v.oid, v.relkind, format('%I.%I', vn.nspname, v.relname) AS obj, v.relowner,
           v.reloptions, t.obj AS tbl
      FROM tt t
      JOIN pg_depend d ON d.refclassid = 'pg_class'::regclass AND d.refobjid = t.oid
                      AND d.classid = 'pg_rewrite'::regclass
      JOIN pg_rewrite rw ON rw.oid = d.objid
      JOIN pg_class v ON v.oid = rw.ev_class AND v.oid <> t.oid AND v.relkind IN ('v', 'm')
      JOIN pg_namespace vn ON vn.oid = v.relnamespace
),
secdef AS (
    -- A SQL-standard body (BEGIN ATOMIC, RETURN) has no prosrc: read it back as text.
    SELECT p.oid, p.oid::regprocedure::text AS obj, p.proowner, p.proconfig,
           CASE WHEN p.prosqlbody IS NOT NULL THEN pg_get_function_sqlbody(p.oid) ELSE p.prosrc END AS prosrc
      FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
     WHERE p.prosecdef
       AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'tenantguard')
       AND NOT EXISTS (SELECT 1 FROM pg_depend d
                        WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e')
),
findings AS (
    -- Tables
    SELECT 'error' AS level, 'tenant_table_unprotected' AS code, t.obj AS object,
           format('table has tenant column %I but no row level security', t.col) AS detail,
           format('SELECT tenantguard.protect(%L);', t.obj) AS fix
      FROM tt t
     WHERE NOT t.rls AND NOT t.exempt AND NOT t.registered
       AND t.oid NOT IN (SELECT oid FROM parent_protected)
    UNION ALL
    SELECT 'error', 'unprotected_partition', t.obj,
           'partition of a protected table is not protected: direct access to it bypasses isolation',
           format('SELECT tenantguard.protect(%L);', t.obj)
      FROM tt t
     WHERE t.oid IN (SELECT oid FROM parent_protected) AND NOT t.registered AND NOT t.exempt
    UNION ALL
    SELECT 'error', 'rls_not_forced', t.obj,
           'row level security is enabled but not forced: the table owner bypasses it',
           format('ALTER TABLE %s FORCE ROW LEVEL SECURITY;', t.obj)
      FROM tt t WHERE t.rls AND NOT t.forced AND NOT t.exempt
    UNION ALL
    SELECT 'warn', 'rls_without_policies', t.obj,
           'row level security is on but the table has no policy, so nobody but its owner sees a row',
           format('SELECT tenantguard.protect(%L);', t.obj)
      FROM tt t
     WHERE t.rls AND NOT t.exempt AND NOT EXISTS (SELECT 1 FROM pg_policy p WHERE p.polrelid = t.oid)
    UNION ALL
    SELECT 'warn', 'tenant_column_nullable', t.obj,
           format('tenant column %I allows NULL: such rows belong to no tenant', t.col),
           format('ALTER TABLE %s ALTER COLUMN %I SET NOT NULL;', t.obj, t.col)
      FROM tt t WHERE t.tattnum IS NOT NULL AND NOT t.tnotnull AND NOT t.exempt
    UNION ALL
    SELECT 'warn', 'no_tenant_index', t.obj,
           format('no index leads with tenant column %I: every tenant query scans the table', t.col),
           format('CREATE INDEX ON %s (%I);', t.obj, t.col)
      FROM tt t
     WHERE t.tattnum IS NOT NULL AND NOT t.exempt
       AND NOT EXISTS (SELECT 1 FROM pg_index i WHERE i.indrelid = t.oid AND i.indkey[0] = t.tattnum)
    -- Privileges
    UNION ALL
    SELECT 'error', CASE a.privilege_type WHEN 'TRUNCATE' THEN 'truncate_granted'
                                          ELSE 'references_granted' END,
           t.obj,
           format('%s is granted to %s; row level security does not cover it', a.privilege_type,
                  CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee)::text END),
           format('REVOKE %s ON %s FROM %s;', a.privilege_type, t.obj,
                  CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END)
      FROM tt t CROSS JOIN LATERAL aclexplode(t.relacl) a
     WHERE a.privilege_type IN ('TRUNCATE', 'REFERENCES') AND a.grantee <> t.relowner AND NOT t.exempt
    UNION ALL
    SELECT CASE WHEN b.rolsuper THEN 'info' ELSE 'error' END,
           'bypassrls_login_role', b.rolname::text,
           format('role can log in and %s row level security; it can use %s tenant table(s)',
                  CASE WHEN b.rolsuper THEN 'as a superuser bypasses' ELSE 'has BYPASSRLS, so it bypasses' END,
                  count(*)),
           CASE WHEN b.rolsuper
                THEN '-- run the application as a NOSUPERUSER NOBYPASSRLS role, never as a superuser'
                ELSE format('ALTER ROLE %I NOBYPASSRLS;', b.rolname) END
      FROM bypass_roles b JOIN tt t
        ON b.rolsuper OR has_table_privilege(b.oid, t.oid, 'SELECT,INSERT,UPDATE,DELETE')
     GROUP BY b.rolname, b.rolsuper
    -- Hand-written policies
    UNION ALL
    SELECT CASE WHEN h.polroles = '{0}' THEN 'error' ELSE 'warn' END,
           'permissive_policy_always_true', format('%I on %s', h.polname, h.obj),
           'permissive policy is always true: OR-ed with tenant isolation, it lets every row through'
             || CASE WHEN h.polroles = '{0}' THEN ' for every role' ELSE ' for its roles' END,
           format('DROP POLICY %I ON %s;', h.polname, h.obj)
      FROM hand h
     -- USING (true) lets every row be read, WITH CHECK (true) every tenant's rows be written.
     WHERE h.polpermissive AND (h.q = 'true' OR h.wc = 'true')
    UNION ALL
    SELECT 'warn', 'permissive_policy_widens', format('%I on %s', h.polname, h.obj),
           format('permissive policy does not use tenant column %I: OR-ed with tenant isolation, it '
                  'lets other tenants'' rows through', h.col),
           format('DROP POLICY %I ON %s; -- recreate it AS RESTRICTIVE, or pass it to protect() '
                  'as extra_policies with "permissive": false', h.polname, h.obj)
      FROM hand h
     WHERE h.polpermissive AND h.q IS DISTINCT FROM 'true' AND h.wc IS DISTINCT FROM 'true'
       -- It widens unless it compares the tenant column with the session's tenant: it must
       -- use the column and read the tenant setting (USING (tenant_id IS NOT NULL) does not).
       AND (NOT EXISTS (SELECT 1 FROM pg_depend d
                         WHERE d.classid = 'pg_policy'::regclass AND d.objid = h.poloid
                           AND d.refclassid = 'pg_class'::regclass AND d.refobjid = h.tbl
                           AND d.refobjsubid = h.tattnum)
            OR (strpos(COALESCE(h.q, '') || ' ' || COALESCE(h.wc, ''), quote_literal(h.tenant_setting)) = 0
                AND COALESCE(h.q, '') || ' ' || COALESCE(h.wc, '')
                    !~ '(current_tenant|tenant_(subtree_)?(uuid|bigint|integer|smallint|text)s?)\(\)'))
    UNION ALL
    SELECT DISTINCT 'error', 'guc_admin_check', format('%I on %s', h.polname, h.obj),
           format('permissive policy trusts setting %s, which any client can SET', m[1]),
           format('DROP POLICY %I ON %s; -- use protect(%L, admin_role => ''tenantguard_admin'') and '
                  'GRANT tenantguard_admin TO the support role', h.polname, h.obj, h.obj)
      FROM hand h
     CROSS JOIN LATERAL regexp_matches(COALESCE(h.q, '') || ' ' || COALESCE(h.wc, ''),
                                       '(?:current_setting|tenant_(?:subtree_)?(?:uuid|bigint|integer|smallint|text)s?)\(''([^'']+)''', 'g') AS m
     WHERE h.polpermissive AND m[1] <> h.tenant_setting
    UNION ALL
    SELECT 'warn', 'policy_defeats_index', format('%I on %s', h.polname, h.obj),
           format('tenant column %I is cast in the policy: no index can serve it, and the setting '
                  'is compared for every row', h.col),
           format('DROP POLICY %I ON %s; -- tenantguard''s own policies compare %I itself; '
                  'rewrite a needed one as %I = tenantguard.%I(%L)',
                  h.polname, h.obj, h.col, h.col, f.fn, h.tenant_setting)
      FROM hand h
      -- The function tenantguard's own policies use for this column type.
     CROSS JOIN LATERAL (
         SELECT CASE CASE WHEN ty.typtype = 'd' THEN ty.typbasetype ELSE ty.oid END
                     WHEN 'uuid'::regtype THEN 'tenant_uuid' WHEN 'int8'::regtype THEN 'tenant_bigint'
                     WHEN 'int4'::regtype THEN 'tenant_integer' WHEN 'int2'::regtype THEN 'tenant_smallint'
                     ELSE 'tenant_text' END AS fn
           FROM pg_attribute a JOIN pg_type ty ON ty.oid = a.atttypid
          WHERE a.attrelid = h.tbl AND a.attnum = h.tattnum) f
     WHERE COALESCE(h.q, '') || COALESCE(h.wc, '') LIKE '%(' || quote_ident(h.col) || ')::%'
    -- Views and materialized views
    UNION ALL
    SELECT CASE WHEN o.rolsuper OR o.rolbypassrls THEN 'error' ELSE 'warn' END,
           'view_without_security_invoker', d.obj,
           format('view reads %s with its owner''s rights (%s)%s', d.tbl, o.rolname,
                  CASE WHEN o.rolsuper OR o.rolbypassrls THEN ', who bypasses row level security'
                       ELSE '' END),
           CASE WHEN current_setting('server_version_num')::int >= 150000
                THEN format('ALTER VIEW %s SET (security_invoker = true);', d.obj)
                -- PostgreSQL 14 has no security_invoker: a view always reads with its owner's
                -- rights, which are safe only when the owner does not bypass RLS.
                ELSE format('-- PostgreSQL 14 has no security_invoker: let %s be owned by a role '
                            'that does not bypass row level security and is not a member of '
                            'tenantguard_admin, or read the table through a SECURITY INVOKER '
                            'function instead', d.obj) END
      FROM dependents d JOIN pg_roles o ON o.oid = d.relowner
     WHERE d.relkind = 'v'
       AND NOT COALESCE(d.reloptions @> ARRAY['security_invoker=true']
                        OR d.reloptions @> ARRAY['security_invoker=on'], false)
    UNION ALL
    SELECT 'error', 'materialized_view_over_tenant_table', d.obj,
           format('materialized view stores rows of %s without row level security', d.tbl),
           format('DROP MATERIALIZED VIEW %s; -- use a view WITH (security_invoker = true)', d.obj)
      FROM dependents d WHERE d.relkind = 'm'
    -- SECURITY DEFINER functions
    UNION ALL
    SELECT 'warn', 'security_definer_search_path', f.obj,
           'SECURITY DEFINER function has no fixed search_path',
           format('ALTER FUNCTION %s SET search_path = pg_catalog, pg_temp;', f.obj)
      FROM secdef f
     WHERE NOT EXISTS (SELECT 1 FROM unnest(f.proconfig) c WHERE c LIKE 'search\_path=%')
    UNION ALL
    SELECT DISTINCT CASE WHEN o.rolsuper OR o.rolbypassrls THEN 'error' ELSE 'warn' END,
           'security_definer_reads_tenant_table', f.obj,
           format('SECURITY DEFINER function names tenant table %s and runs as %s%s', t.relname,
                  o.rolname, CASE WHEN o.rolsuper OR o.rolbypassrls
                                  THEN ', who bypasses row level security' ELSE '' END),
           format('ALTER FUNCTION %s SECURITY INVOKER;', f.obj)
      FROM secdef f
      JOIN pg_roles o ON o.oid = f.proowner
     CROSS JOIN LATERAL (SELECT DISTINCT w FROM regexp_split_to_table(lower(f.prosrc), '[^a-z0-9_$]+') w) words
      JOIN tt t ON lower(t.relname) = words.w
    -- Existence oracles and cross-tenant references
    UNION ALL
    SELECT CASE WHEN i.indisprimary THEN 'info' ELSE 'warn' END,
           'unique_without_tenant', format('%I.%I', t.nspname, ic.relname),
           format('unique index on %s does not include tenant column %I: inserting a duplicate '
                  'reveals that another tenant has the value', t.obj, t.col),
           CASE WHEN i.indisprimary AND con.oid IS NOT NULL AND i.indnkeyatts = i.indnatts
                     AND i.indexprs IS NULL AND i.indpred IS NULL
                     AND NOT EXISTS (SELECT 1 FROM pg_constraint f
                                      WHERE f.contype = 'f' AND f.conindid = i.indexrelid)
                -- a primary key no foreign key references: make it (tenant, key)
                THEN format('ALTER TABLE %s DROP CONSTRAINT %I, ADD PRIMARY KEY (%I, %s);',
                            t.obj, con.conname, t.col,
                            (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY k.n)
                               FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
                               JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum))
                WHEN i.indisprimary OR i.indnkeyatts <> i.indnatts OR i.indexprs IS NOT NULL
                     OR i.indpred IS NOT NULL
                THEN format('-- make it unique per tenant: a unique key on (%I, ...) of %s', t.col, t.obj)
                ELSE format('CREATE UNIQUE INDEX ON %s (%I, %s); %s;', t.obj, t.col,
                            (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY k.n)
                               FROM unnest(i.indkey::int2[]) WITH ORDINALITY AS k(attnum, n)
                               JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum),
                            CASE WHEN con.oid IS NOT NULL
                                 THEN format('ALTER TABLE %s DROP CONSTRAINT %I', t.obj, con.conname)
                                 ELSE format('DROP INDEX %I.%I', t.nspname, ic.relname) END)
           END
      FROM tt t
      JOIN pg_index i ON i.indrelid = t.oid AND i.indisunique
      JOIN pg_class ic ON ic.oid = i.indexrelid
      LEFT JOIN pg_constraint con ON con.conindid = i.indexrelid AND con.conrelid = t.oid
                                 AND con.contype IN ('u', 'p')
     WHERE t.tattnum IS NOT NULL AND NOT t.exempt AND NOT (t.tattnum = ANY (i.indkey::int2[]))
    UNION ALL
    SELECT 'warn', 'foreign_key_without_tenant', format('%I on %s', con.conname, con.conrelid::regclass),
           format('foreign key to %s does not include the tenant column on both sides: it can '
                  'reference another tenant''s row, and reveals whether it exists', con.confrelid::regclass),
           CASE WHEN c.tattnum IS NOT NULL AND p.tattnum IS NOT NULL
                     AND NOT (c.tattnum = ANY (con.conkey)) AND NOT (p.tattnum = ANY (con.confkey))
                THEN format('CREATE UNIQUE INDEX ON %s (%I, %s); ALTER TABLE %s DROP CONSTRAINT %I, '
                            'ADD FOREIGN KEY (%I, %s) REFERENCES %s (%I, %s);',
                            p.obj, p.col, fk.refcols, c.obj, con.conname,
                            c.col, fk.cols, p.obj, p.col, fk.refcols)
                ELSE format('-- reference (%s, ...) from a table that has the tenant column too',
                            quote_ident(COALESCE(p.col, c.col))) END
      FROM pg_constraint con
      LEFT JOIN tt c ON c.oid = con.conrelid AND NOT c.exempt
      LEFT JOIN tt p ON p.oid = con.confrelid AND NOT p.exempt
     CROSS JOIN LATERAL (
          SELECT (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY k.n)
                    FROM unnest(con.conkey) WITH ORDINALITY AS k(attnum, n)
                    JOIN pg_attribute a ON a.attrelid = con.conrelid AND a.attnum = k.attnum) AS cols,
                 (SELECT string_agg(quote_ident(a.attname), ', ' ORDER BY k.n)
                    FROM unnest(con.confkey) WITH ORDINALITY AS k(attnum, n)
                    JOIN pg_attribute a ON a.attrelid = con.confrelid AND a.attnum = k.attnum) AS refcols
         ) fk
     WHERE con.contype = 'f' AND (c.oid IS NOT NULL OR p.oid IS NOT NULL)
       AND NOT (COALESCE(c.tattnum = ANY (con.conkey), false)
                AND COALESCE(p.tattnum = ANY (con.confkey), false))
)
SELECT u.level, u.code, u.object, u.detail, u.fix
  FROM (SELECT DISTINCT f.level, f.code, f.object, f.detail, f.fix
          FROM findings f
         WHERE NOT EXISTS (SELECT 1 FROM tenantguard.lint_waivers w
                            WHERE w.code = f.code AND w.object = f.object)) u
 ORDER BY CASE u.level WHEN 'error' THEN 0 WHEN 'warn' THEN 1 ELSE 2 END, u.code, u.object, u.detail
$$;

-- The audit log: the table becomes internal (_audit_log, no privileges for anyone), read through
-- the view audit_log, which shows each role no more than it could read from the audited tables.
ALTER TABLE tenantguard.audit_log RENAME TO _audit_log;
ALTER SEQUENCE tenantguard.audit_log_id_seq RENAME TO _audit_log_id_seq;
ALTER TABLE tenantguard._audit_log RENAME CONSTRAINT audit_log_op_check TO _audit_log_op_check;
-- regclass, as the registry's key: pg_dump writes the table's name and a restore resolves it to
-- the restored table's OID (an oid column kept the old OIDs, and tenants lost their history).
-- Binary-compatible with oid: no rewrite.
ALTER TABLE tenantguard._audit_log ALTER COLUMN table_oid TYPE regclass;
DROP POLICY audit_tenant_read ON tenantguard._audit_log;
REVOKE ALL ON tenantguard._audit_log FROM PUBLIC;
COMMENT ON TABLE tenantguard._audit_log IS
  'The rows behind tenantguard.audit_log; read them through that view.';

-- The per-row checks of the view below (src/audit_read.rs), C functions the executor calls directly.
CREATE FUNCTION tenantguard._audit_visible(reader oid, tbl oid, tenant_id text, current_tenant text) RETURNS boolean
LANGUAGE c STABLE STRICT PARALLEL RESTRICTED COST 5
AS 'MODULE_PATHNAME', 'tenantguard_audit_visible';
CREATE FUNCTION tenantguard._audit_hidden(reader oid, tbl oid) RETURNS text[]
LANGUAGE c STABLE STRICT PARALLEL RESTRICTED COST 5
AS 'MODULE_PATHNAME', 'tenantguard_audit_hidden';

-- What every role reads. Superusers and members of tenantguard_admin: every row, whole. Anyone
-- else: rows of its tenant (see _audit_visible() for text tenant columns) of tables it may SELECT
-- now, within tenantguard.audit_window, without the columns it may not SELECT. One branch per
-- kind of reader, each switched off as a whole by a one-time filter, so a tenant's "changes in a
-- period" stays an index scan on (tenant_id, occurred_at).
--
-- Each branch is a security_barrier view of its own: a caller's function in WHERE never sees a
-- row before the branch's conditions have passed it. (A UNION ALL is flattened into its branches
-- by the planner, and a security_barrier on the UNION ALL view itself does not reach them: a
-- cheap leaky function would then run first.)
CREATE VIEW tenantguard._audit_log_all WITH (security_barrier = true) AS
SELECT a.id, a.occurred_at, a.statement_at, a.txid, a.table_schema, a.table_name, a.table_oid,
       a.op, a.tenant_id, a.record_key, a.old_values, a.new_values, a.changed_columns,
       a.db_user, a.session_user_name, a.app_user, a.application_name
  FROM tenantguard._audit_log a
 WHERE tenantguard._audit_sees_all((SELECT tenantguard._reader()));
CREATE VIEW tenantguard._audit_log_tenant WITH (security_barrier = true) AS
SELECT a.id, a.occurred_at, a.statement_at, a.txid, a.table_schema, a.table_name, a.table_oid,
       a.op, a.tenant_id,
       CASE WHEN h.cols IS NULL OR NOT a.record_key ?| h.cols THEN a.record_key END AS record_key,
       CASE WHEN h.cols IS NULL THEN a.old_values ELSE a.old_values - h.cols END AS old_values,
       CASE WHEN h.cols IS NULL THEN a.new_values ELSE a.new_values - h.cols END AS new_values,
       CASE WHEN h.cols IS NULL OR a.changed_columns IS NULL THEN a.changed_columns
            ELSE ARRAY(SELECT c FROM pg_catalog.unnest(a.changed_columns) AS c
                        WHERE c <> ALL (h.cols)) END AS changed_columns,
       a.db_user, a.session_user_name, a.app_user, a.application_name
  FROM tenantguard._audit_log a
 CROSS JOIN LATERAL (SELECT tenantguard._audit_hidden((SELECT tenantguard._reader()), a.table_oid) AS cols) h
 WHERE NOT tenantguard._audit_sees_all((SELECT tenantguard._reader()))
   AND a.tenant_id = ANY ((SELECT tenantguard._audit_tenants())::text[])
   AND a.occurred_at >= tenantguard._audit_since()
   AND tenantguard._audit_visible((SELECT tenantguard._reader()), a.table_oid, a.tenant_id,
                                  (SELECT tenantguard.current_tenant()));
REVOKE ALL ON tenantguard._audit_log_all, tenantguard._audit_log_tenant FROM PUBLIC;
-- On a Citus coordinator, the third branch adds the workers' rows (sql/citus.sql).
CREATE VIEW tenantguard.audit_log WITH (security_barrier = true) AS
SELECT * FROM tenantguard._audit_log_all
UNION ALL
SELECT * FROM tenantguard._audit_log_tenant
UNION ALL
SELECT * FROM tenantguard._audit_log_nodes(NULL, NULL);
COMMENT ON VIEW tenantguard.audit_log IS
  'Audit trail of tables protected with audit => true: who changed which row of which tenant, when, from what to what. Each role sees its tenant''s rows of tables it may read, without columns it may not read; admins see all.';
GRANT SELECT ON tenantguard.audit_log TO PUBLIC;

-- The history of one record, found through the hash index on record_key. Through the view, a
-- tenant's "record_key = ..." cannot use that index: jsonb equality is not leakproof, so behind the
-- view's security barrier it is only checked after the tenant's rows are found, and reading a
-- record's history costs as much as reading all the tenant's rows. This function looks the record
-- up as the extension's owner and applies exactly the view's checks for the calling role, which
-- it passes in; it refuses (42501) a role the session could not SET ROLE to, so calling it
-- directly shows no more than SET ROLE would.
CREATE FUNCTION tenantguard._audit_history(tbl regclass, key jsonb, reader oid)
RETURNS SETOF tenantguard.audit_log
LANGUAGE plpgsql STABLE STRICT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT pg_has_role(session_user, reader, 'MEMBER') THEN
        RAISE EXCEPTION 'permission denied to read the audit trail as role %', reader::regrole
              USING ERRCODE = 'insufficient_privilege',
                    HINT = 'Call tenantguard.audit_history(), which reads as the current role.';
    END IF;
    IF tenantguard._audit_sees_all(reader) THEN
        RETURN QUERY
        SELECT a.id, a.occurred_at, a.statement_at, a.txid, a.table_schema, a.table_name,
               a.table_oid, a.op, a.tenant_id, a.record_key, a.old_values, a.new_values,
               a.changed_columns, a.db_user, a.session_user_name, a.app_user, a.application_name
          FROM tenantguard._audit_log a
         WHERE a.table_oid = tbl AND a.record_key = key
         ORDER BY a.id;
        RETURN;
    END IF;
    RETURN QUERY
    SELECT a.id, a.occurred_at, a.statement_at, a.txid, a.table_schema, a.table_name, a.table_oid,
           a.op, a.tenant_id,
           CASE WHEN h.cols IS NULL OR NOT a.record_key ?| h.cols THEN a.record_key END,
           CASE WHEN h.cols IS NULL THEN a.old_values ELSE a.old_values - h.cols END,
           CASE WHEN h.cols IS NULL THEN a.new_values ELSE a.new_values - h.cols END,
           CASE WHEN h.cols IS NULL OR a.changed_columns IS NULL THEN a.changed_columns
                ELSE ARRAY(SELECT c FROM unnest(a.changed_columns) AS c WHERE c <> ALL (h.cols)) END,
           a.db_user, a.session_user_name, a.app_user, a.application_name
      FROM tenantguard._audit_log a
     CROSS JOIN LATERAL (SELECT tenantguard._audit_hidden(reader, a.table_oid) AS cols) h
     WHERE a.table_oid = tbl AND a.record_key = key
       AND a.tenant_id = ANY (tenantguard._audit_tenants())
       AND a.occurred_at >= tenantguard._audit_since()
       AND tenantguard._audit_visible(reader, a.table_oid, a.tenant_id, tenantguard.current_tenant())
       -- the key itself is shown only to a reader of all its columns: without that, its
       -- existence is not shown either
       AND (h.cols IS NULL OR NOT a.record_key ?| h.cols)
     ORDER BY a.id;
END
$$;
-- What callers use: the history of the record with primary key `key` (e.g. '{"id": 42}') of
-- `tbl`, as the view would show it to the caller, oldest first.
CREATE FUNCTION tenantguard.audit_history(tbl regclass, key jsonb)
RETURNS SETOF tenantguard.audit_log
LANGUAGE sql STABLE STRICT
AS $$
SELECT * FROM tenantguard._audit_history(tbl, key, tenantguard._reader())
UNION ALL
SELECT * FROM tenantguard._audit_log_nodes(tbl, key)
$$;
COMMENT ON FUNCTION tenantguard.audit_history(regclass, jsonb) IS
  'The audit rows of one record (by primary key as jsonb), as tenantguard.audit_log shows them to the caller, found through the record_key index.';


-- Deletes audit rows older than older_than, batch_size rows per DELETE, and returns how many.
CREATE OR REPLACE FUNCTION tenantguard.purge_audit(older_than interval, batch_size integer DEFAULT 10000)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cutoff timestamptz;
    victim tid;
    batch tid[] := '{}';
    n bigint;
    total bigint := 0;
BEGIN
    IF older_than IS NULL OR older_than < '0'::interval THEN
        RAISE EXCEPTION 'purge_audit: older_than must be a non-negative interval, not %',
                        COALESCE(older_than::text, 'NULL')
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'For example tenantguard.purge_audit(''1 year'').';
    END IF;
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'purge_audit: batch_size must be at least 1, not %',
                        COALESCE(batch_size::text, 'NULL')
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Leave it out for batches of 10000 rows.';
    END IF;
    cutoff := now() - older_than;
    -- One pass over the table (the loop's cursor keeps its snapshot, so rows deleted behind it do
    -- not disturb it), deleting batch_size rows at a time by their physical address.
    FOR victim IN SELECT ctid FROM tenantguard._audit_log WHERE occurred_at < cutoff LOOP
        batch := batch || victim;
        IF cardinality(batch) >= batch_size THEN
            DELETE FROM tenantguard._audit_log WHERE ctid = ANY (batch);
            GET DIAGNOSTICS n = ROW_COUNT;
            total := total + n;
            batch := '{}';
        END IF;
    END LOOP;
    IF cardinality(batch) > 0 THEN
        DELETE FROM tenantguard._audit_log WHERE ctid = ANY (batch);
        GET DIAGNOSTICS n = ROW_COUNT;
        total := total + n;
    END IF;
    RETURN total;
END
$$;

-- The slow-query log: likewise an internal table behind a view that blanks other roles' text.
ALTER TABLE tenantguard.slow_query_log RENAME TO _slow_query_log;
ALTER TABLE tenantguard._slow_query_log RENAME CONSTRAINT slow_query_log_pkey TO _slow_query_log_pkey;
ALTER TABLE tenantguard._slow_query_log
  RENAME CONSTRAINT slow_query_log_status_check TO _slow_query_log_status_check;
DROP POLICY slow_query_tenant_read ON tenantguard._slow_query_log;
REVOKE ALL ON tenantguard._slow_query_log FROM PUBLIC;
COMMENT ON TABLE tenantguard._slow_query_log IS
  'The rows behind tenantguard.slow_query_log; read them through that view.';
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


COMMENT ON VIEW tenantguard.slow_queries IS
  'The shared-memory ring of slow queries: all of them for superusers, admins and pg_read_all_stats, the session tenant''s otherwise; other roles'' statement text only for those three.';

-- coverage() reports a Citus table as protected only when every shard placement is.
CREATE OR REPLACE FUNCTION tenantguard.coverage()
RETURNS TABLE (
    schema_name    name,
    table_name     name,
    tenant_column  name,
    rls_enabled    boolean,
    rls_forced     boolean,
    select_policy  boolean,
    insert_policy  boolean,
    update_policy  boolean,
    delete_policy  boolean,
    tenant_index   boolean,
    missing        text[],
    status         text,
    warnings       text[],
    exempt_reason  text)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
SET row_security = on
-- A catalog query: JIT only adds seconds of compilation (cost estimates over 10,000 tables
-- cross jit_above_cost), and the plan has nothing for it to speed up.
SET jit = off
AS $$
WITH setting AS (
    SELECT COALESCE(NULLIF(current_setting('tenantguard.tenant_column', true), ''),
                    'tenant_id')::name AS col,
           COALESCE(NULLIF(current_setting('tenantguard.tenant_setting', true), ''),
                    'app.current_tenant_id') AS tenant_setting
),
-- Set-based throughout: on 100,000 tables a probe per table of pg_depend, pg_inherits and
-- pg_policy costs more than one pass over each.
ext AS MATERIALIZED (   -- tables that belong to an extension
    SELECT d.objid FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.deptype = 'e'
),
-- A partition or child of a protected table is a tenant table whatever its tenant column is
-- called (protect(..., tenant_column => 'org_id')): its first registered parent.
par AS MATERIALIZED (
    SELECT DISTINCT ON (i.inhrelid) i.inhrelid, pr.tenant_column, pr.options
      FROM pg_inherits i JOIN tenantguard.registry pr ON pr.relid = i.inhparent
     ORDER BY i.inhrelid, i.inhseqno
),
pol AS MATERIALIZED (   -- the four isolation policies, per table
    SELECT p.polrelid,
           bool_or(p.polname = 'tenantguard_tenant_select' AND p.polcmd = 'r') AS sel,
           bool_or(p.polname = 'tenantguard_tenant_insert' AND p.polcmd = 'a') AS ins,
           bool_or(p.polname = 'tenantguard_tenant_update' AND p.polcmd = 'w') AS upd,
           bool_or(p.polname = 'tenantguard_tenant_delete' AND p.polcmd = 'd') AS del
      FROM pg_policy p
     WHERE p.polpermissive AND p.polname LIKE 'tenantguard\_tenant\_%'
     GROUP BY p.polrelid
),
ix AS MATERIALIZED (    -- the leading column of each index
    SELECT DISTINCT i.indrelid, i.indkey[0] AS lead FROM pg_index i
),
hs AS MATERIALIZED (    -- the settings each table's hand-written permissive policies read
    SELECT p.polrelid, array_agg(DISTINCT m[1]) AS settings
      FROM pg_policy p
     CROSS JOIN LATERAL regexp_matches(
              COALESCE(pg_get_expr(p.polqual, p.polrelid), '') || ' ' ||
              COALESCE(pg_get_expr(p.polwithcheck, p.polrelid), ''),
              '(?:current_setting|tenant_(?:subtree_)?(?:uuid|bigint|integer|smallint|text)s?)\(''([^'']+)''', 'g') AS m
     WHERE p.polpermissive AND p.polname NOT LIKE 'tenantguard\_%'
     GROUP BY p.polrelid
),
candidates AS (
    SELECT c.oid, n.nspname, c.relname, c.relrowsecurity, c.relforcerowsecurity,
           COALESCE(r.tenant_column, par.tenant_column, s.col) AS col,
           r.relid IS NOT NULL AS registered,
           COALESCE(r.options ->> 'tenant_setting', par.options ->> 'tenant_setting',
                    s.tenant_setting) AS tenant_setting,
           x.reason AS exempt_reason,
           COALESCE(g.gaps, 0) AS shard_gaps,
           ta.attnum AS tattnum
      FROM pg_class c
      JOIN pg_namespace n ON n.oid = c.relnamespace
      CROSS JOIN setting s
      LEFT JOIN tenantguard.registry r ON r.relid = c.oid
      LEFT JOIN tenantguard.exemptions x ON x.relid = c.oid
      -- Citus: a distributed table is protected only where every shard placement is
      -- (_placement_gaps() asks each node); shards, and on a worker Citus tables, are skipped.
      LEFT JOIN tenantguard._placement_gaps() g ON g.relid = c.oid
      LEFT JOIN par ON par.inhrelid = c.oid
      -- The tenant column, found once by name.
      LEFT JOIN pg_attribute ta ON ta.attrelid = c.oid
                               AND ta.attname = COALESCE(r.tenant_column, par.tenant_column, s.col)
                               AND ta.attnum > 0 AND NOT ta.attisdropped
     WHERE c.relkind IN ('r', 'p')
       AND c.relpersistence <> 't'
       AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'tenantguard')
       AND n.nspname NOT LIKE 'pg\_%'
       AND NOT COALESCE(g.skip, false)
       AND (r.relid IS NOT NULL OR par.tenant_column IS NOT NULL OR ta.attnum IS NOT NULL)
       AND c.oid NOT IN (SELECT objid FROM ext)
),
checked AS (
    SELECT k.*,
           k.tattnum IS NOT NULL AS has_column,
           COALESCE(pol.sel, false) AS sel, COALESCE(pol.ins, false) AS ins,
           COALESCE(pol.upd, false) AS upd, COALESCE(pol.del, false) AS del,
           ix.indrelid IS NOT NULL AS idx,
           -- A hand-written permissive policy that reads a setting other than the tenant's is
           -- most likely an admin override any client can switch on with SET.
           COALESCE(EXISTS (SELECT 1 FROM unnest(hs.settings) AS u(setting)
                             WHERE u.setting <> k.tenant_setting), false) AS guc_check
      FROM candidates k
      LEFT JOIN pol ON pol.polrelid = k.oid
      LEFT JOIN ix ON ix.indrelid = k.oid AND ix.lead = k.tattnum
      LEFT JOIN hs ON hs.polrelid = k.oid
),
judged AS (
    SELECT c.*,
           array_remove(ARRAY[
               CASE WHEN NOT c.registered THEN 'not_registered' END,
               CASE WHEN NOT c.has_column THEN 'no_tenant_column' END,
               CASE WHEN NOT c.relrowsecurity THEN 'rls_disabled' END,
               CASE WHEN NOT c.relforcerowsecurity THEN 'rls_not_forced' END,
               CASE WHEN NOT c.sel THEN 'no_select_policy' END,
               CASE WHEN NOT c.ins THEN 'no_insert_policy' END,
               CASE WHEN NOT c.upd THEN 'no_update_policy' END,
               CASE WHEN NOT c.del THEN 'no_delete_policy' END,
               CASE WHEN c.shard_gaps > 0 THEN 'shard_unprotected' END
           ], NULL) AS missing
      FROM checked c
)
SELECT j.nspname, j.relname, j.col, j.relrowsecurity, j.relforcerowsecurity,
       j.sel, j.ins, j.upd, j.del, j.idx, j.missing,
       CASE WHEN j.exempt_reason IS NOT NULL AND NOT j.registered THEN 'exempt'
            WHEN cardinality(j.missing) = 0 THEN 'protected'
            WHEN j.shard_gaps > 0 THEN 'unprotected'
            WHEN NOT (j.registered OR j.relrowsecurity OR j.sel OR j.ins OR j.upd OR j.del)
                 THEN 'unprotected'
            ELSE 'partial' END,
       array_remove(ARRAY[CASE WHEN j.guc_check THEN 'guc_admin_check' END], NULL),
       j.exempt_reason
  FROM judged j
 ORDER BY j.nspname, j.relname
$$;

-- The audit trigger carries the tenant column from 0.2.0 (a shard on a Citus worker has no
-- registry row to find it in): 'tenant=<column>' after the first argument. Rewrite 0.1.0's.
DO $upgrade$
DECLARE
    t record;
    def text;
BEGIN
    FOR t IN
        SELECT g.oid, g.tgrelid, g.tgenabled, r.tenant_column
          FROM pg_catalog.pg_trigger g
          JOIN tenantguard.registry r ON r.relid = g.tgrelid
         WHERE g.tgname = 'tenantguard_audit' AND NOT g.tgisinternal
    LOOP
        def := pg_catalog.pg_get_triggerdef(t.oid);
        -- (the function shows unqualified: the script runs with the extension's schema on the path)
        CONTINUE WHEN def ~ 'audit\(''(skip|keep)_noop'', ''tenant=';
        def := pg_catalog.regexp_replace(
                   def, '(audit\(''(skip|keep)_noop'')',
                   '\1, ' || pg_catalog.replace(pg_catalog.quote_literal('tenant=' || t.tenant_column), '\', '\\'));
        EXECUTE pg_catalog.format('DROP TRIGGER tenantguard_audit ON %s', t.tgrelid::regclass);
        EXECUTE def;
        IF t.tgenabled = 'D' THEN
            EXECUTE pg_catalog.format('ALTER TABLE %s DISABLE TRIGGER tenantguard_audit', t.tgrelid::regclass);
        END IF;
    END LOOP;
END
$upgrade$;

-- Tenant context (0.2.0): lists of tenants, hierarchies, the tenant column's default. protect()
-- takes three more arguments.
-- The same for tables protected with tenant_list: the setting's list of tenants (comma-separated,
-- or a JSON array, or what its JSON path finds), as an array; empty when unset. The policies use
-- them as `tenant_id = ANY ((SELECT tenantguard.tenant_bigints(...)))`.
CREATE FUNCTION tenantguard.tenant_uuids(setting text) RETURNS uuid[]
LANGUAGE c STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'tenantguard_tenant_uuids';
CREATE FUNCTION tenantguard.tenant_bigints(setting text) RETURNS bigint[]
LANGUAGE c STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'tenantguard_tenant_bigints';
CREATE FUNCTION tenantguard.tenant_integers(setting text) RETURNS integer[]
LANGUAGE c STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'tenantguard_tenant_integers';
CREATE FUNCTION tenantguard.tenant_smallints(setting text) RETURNS smallint[]
LANGUAGE c STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'tenantguard_tenant_smallints';
CREATE FUNCTION tenantguard.tenant_texts(setting text) RETURNS text[]
LANGUAGE c STABLE STRICT PARALLEL SAFE AS 'MODULE_PATHNAME', 'tenantguard_tenant_texts';

-- Signed tenant tokens (src/tenant/token.rs).
CREATE FUNCTION tenantguard."set_tenant_token"(
	"token" TEXT /* & str */
) RETURNS TEXT /* Option < String > */
STRICT VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'set_tenant_token_wrapper';
-- The tenant (or list) and its descendants in a hierarchy's tenants table, for tables protected
-- with hierarchy (src/tenant/subtree.rs).
CREATE FUNCTION tenantguard.tenant_subtree_uuid(spec text, tenants oid, key text, parent text, list boolean)
RETURNS uuid[] LANGUAGE c STABLE STRICT PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'tenantguard_subtree_uuid';
CREATE FUNCTION tenantguard.tenant_subtree_bigint(spec text, tenants oid, key text, parent text, list boolean)
RETURNS bigint[] LANGUAGE c STABLE STRICT PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'tenantguard_subtree_bigint';
CREATE FUNCTION tenantguard.tenant_subtree_integer(spec text, tenants oid, key text, parent text, list boolean)
RETURNS integer[] LANGUAGE c STABLE STRICT PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'tenantguard_subtree_integer';
CREATE FUNCTION tenantguard.tenant_subtree_smallint(spec text, tenants oid, key text, parent text, list boolean)
RETURNS smallint[] LANGUAGE c STABLE STRICT PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'tenantguard_subtree_smallint';
CREATE FUNCTION tenantguard.tenant_subtree_text(spec text, tenants oid, key text, parent text, list boolean)
RETURNS text[] LANGUAGE c STABLE STRICT PARALLEL RESTRICTED AS 'MODULE_PATHNAME', 'tenantguard_subtree_text';
-- The statement trigger protect(..., hierarchy => ...) attaches to the tenants table: a change
-- there makes every backend compute the tenants' subtrees again (src/tenant/subtree.rs).
CREATE FUNCTION tenantguard._tenants_changed() RETURNS trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'tenantguard_registry_changed';
DROP FUNCTION tenantguard.protect(regclass, name, name, interval, name, text[], text[], text, jsonb, boolean, boolean, text[], boolean, boolean);
CREATE FUNCTION tenantguard.protect(
    tbl regclass,
    tenant_column name DEFAULT NULL,
    admin_role name DEFAULT 'tenantguard_admin',
    time_window interval DEFAULT NULL,
    time_column name DEFAULT NULL,
    app_roles text[] DEFAULT NULL,
    app_roles_commands text[] DEFAULT ARRAY['SELECT'],
    shared_read text DEFAULT NULL,
    extra_policies jsonb DEFAULT NULL,
    dry_run boolean DEFAULT false,
    audit boolean DEFAULT true,
    audit_exclude text[] DEFAULT NULL,
    updated_at boolean DEFAULT NULL,
    skip_noop_updates boolean DEFAULT true,
    tenant_list boolean DEFAULT false,
    hierarchy text DEFAULT NULL,
    tenant_default boolean DEFAULT false)
RETURNS text
LANGUAGE sql VOLATILE
SET intervalstyle = 'postgres'
SET row_security = on
AS $$
  SELECT tenantguard._protect(tbl, pg_catalog.jsonb_build_object(
           'tenant_column', tenant_column,
           'admin_role', admin_role,
           'time_window', time_window,
           'time_column', time_column,
           'app_roles', app_roles,
           'app_roles_commands', app_roles_commands,
           'shared_read', shared_read,
           'extra_policies', extra_policies,
           'audit', audit,
           'audit_exclude', audit_exclude,
           'updated_at', updated_at,
           'skip_noop_updates', skip_noop_updates,
           'tenant_list', tenant_list,
           'hierarchy', hierarchy,
           'tenant_default', tenant_default,
           'dry_run', dry_run))
$$;
COMMENT ON FUNCTION tenantguard.protect(regclass, name, name, interval, name, text[], text[], text, jsonb, boolean, boolean, text[], boolean, boolean, boolean, text, boolean) IS
  'Enable and force row level security on a table (and its partitions) with tenant isolation and the asked-for policy templates. Idempotent.';

-- Proving and explaining isolation (0.2.0): src/protect/export.rs, sql/prove.sql.
CREATE FUNCTION tenantguard."_export_sql"(
	"tbl" oid /* pg_sys :: Oid */
) RETURNS TEXT /* String */
STRICT STABLE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', '_export_sql_wrapper';
-- Proving and explaining isolation (docs/prove.md): test_isolation(), assert_isolation(),
-- explain_access(), bypass_report(), assert_enforced(), export_sql(), coverage_sql().

-- A value for a column the test row must fill (NOT NULL, no default), by type; NULL when
-- test_isolation() cannot make one up.
CREATE FUNCTION tenantguard._test_value(typ regtype) RETURNS text
LANGUAGE sql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
SELECT CASE (SELECT CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END
               FROM pg_type t WHERE t.oid = typ)
         WHEN 'int2'::regtype THEN (1 + floor(random() * 30000))::int::text
         WHEN 'int4'::regtype THEN (1 + floor(random() * 2000000000))::bigint::text
         WHEN 'int8'::regtype THEN (1 + floor(random() * 9e15))::bigint::text
         WHEN 'numeric'::regtype THEN (floor(random() * 1e6))::text
         WHEN 'float4'::regtype THEN random()::text
         WHEN 'float8'::regtype THEN random()::text
         WHEN 'text'::regtype THEN 'tenantguard-test-' || md5(random()::text)
         WHEN 'varchar'::regtype THEN 'tg' || substr(md5(random()::text), 1, 6)
         WHEN 'bpchar'::regtype THEN 't'
         WHEN 'uuid'::regtype THEN gen_random_uuid()::text
         WHEN 'bool'::regtype THEN 'false'
         WHEN 'date'::regtype THEN current_date::text
         WHEN 'timestamptz'::regtype THEN now()::text
         WHEN 'timestamp'::regtype THEN localtimestamp::text
         WHEN 'jsonb'::regtype THEN '{}'
         WHEN 'json'::regtype THEN '{}'
         WHEN 'bytea'::regtype THEN '\x00'
         END
$$;

-- Sets the tenant for the transaction the way the table's policies read it (its tenant setting,
-- or a JSON object at the setting's path).
CREATE FUNCTION tenantguard._test_set_tenant(spec text, tenant text) RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    name text := split_part(spec, ':', 1);
    path text[];
    value jsonb;
BEGIN
    IF position(':' IN spec) = 0 THEN
        PERFORM set_config(name, tenant, true);
        RETURN;
    END IF;
    -- a.b."c.d" -> {a,b,c.d}
    SELECT array_agg(CASE WHEN m[1] IS NOT NULL THEN replace(m[1], '""', '"') ELSE m[2] END)
      INTO path
      FROM regexp_matches(substr(spec, length(name) + 2), '"((?:[^"]|"")*)"|([^.]+)', 'g') AS m;
    -- The object from the inside out: {"a": {"b": tenant}}.
    value := to_jsonb(tenant);
    FOR i IN REVERSE array_length(path, 1) .. 1 LOOP
        value := jsonb_build_object(path[i], value);
    END LOOP;
    PERFORM set_config(name, value::text, true);
END
$$;

-- The statement that makes a parent row for a foreign key of child (tenant column tcol), to run
-- with the tenant as $1, returning the referencing columns' values as a JSON object; or, when
-- no row can be made, why (text not starting with INSERT). The other values are made when it
-- runs, so that each run makes a new key.
CREATE FUNCTION tenantguard._test_parent_insert(child regclass, tcol name, parent regclass,
                                                 conkey int2[], confkey int2[]) RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    ptcol name;
    cols text[] := ARRAY[]::text[];
    vals text[] := ARRAY[]::text[];
    ret text[] := ARRAY[]::text[];
    c record;
    v text;
BEGIN
    IF parent = child THEN
        RETURN 'it references the table itself';
    END IF;
    -- The parent's tenant column: its registered one, or one of the same name.
    SELECT COALESCE((SELECT reg.tenant_column FROM tenantguard.registry reg WHERE reg.relid = parent),
                    (SELECT att.attname FROM pg_attribute att
                      WHERE att.attrelid = parent AND att.attname = tcol AND NOT att.attisdropped))
      INTO ptcol;
    IF ptcol IS NOT NULL THEN
        cols := cols || quote_ident(ptcol);
        vals := vals || ('$1::' || (SELECT format_type(att.atttypid, att.atttypmod) FROM pg_attribute att
                                     WHERE att.attrelid = parent AND att.attname = ptcol));
    END IF;
    FOR c IN
        SELECT pa.attname AS pcol, pa.atttypid::regtype AS typ, ca.attname AS ccol,
               pa.attnotnull AND NOT pa.atthasdef AND pa.attidentity = '' AND pa.attgenerated = '' AS required
          FROM unnest(conkey, confkey) AS k(ck, pk)
          JOIN pg_attribute ca ON ca.attrelid = child AND ca.attnum = k.ck
          JOIN pg_attribute pa ON pa.attrelid = parent AND pa.attnum = k.pk
    LOOP
        ret := ret || format('%L, %I', c.ccol, c.pcol);
        CONTINUE WHEN c.pcol = ptcol;
        IF c.ccol = tcol THEN
            cols := cols || quote_ident(c.pcol);
            vals := vals || ('$1::' || c.typ::text);
        ELSIF c.required THEN
            v := tenantguard._test_value(c.typ);
            IF v IS NULL THEN
                RETURN format('no test value for column %I of %s', c.pcol, parent::text);
            END IF;
            cols := cols || quote_ident(c.pcol);
            vals := vals || format('tenantguard._test_value(%L)::%s', c.typ, c.typ);
        END IF;
    END LOOP;
    -- The parent's other required columns.
    FOR c IN
        SELECT att.attname, att.atttypid::regtype AS typ,
               EXISTS (SELECT 1 FROM pg_constraint f WHERE f.conrelid = parent AND f.contype = 'f'
                         AND att.attnum = ANY (f.conkey)) AS referencing
          FROM pg_attribute att
         WHERE att.attrelid = parent AND att.attnum > 0 AND NOT att.attisdropped
           AND att.attnotnull AND NOT att.atthasdef AND att.attidentity = '' AND att.attgenerated = ''
           AND NOT quote_ident(att.attname) = ANY (cols)
         ORDER BY att.attnum
    LOOP
        IF c.referencing THEN
            RETURN format('its parent %s needs a row of yet another table (column %I)', parent::text, c.attname);
        END IF;
        v := tenantguard._test_value(c.typ);
        IF v IS NULL THEN
            RETURN format('no test value for column %I of %s', c.attname, parent::text);
        END IF;
        cols := cols || quote_ident(c.attname);
        vals := vals || format('tenantguard._test_value(%L)::%s', c.typ, c.typ);
    END LOOP;
    RETURN format('INSERT INTO %s %s RETURNING jsonb_build_object(%s)::text', parent::text,
                  CASE WHEN cardinality(cols) = 0 THEN 'DEFAULT VALUES'
                       ELSE format('(%s) VALUES (%s)', array_to_string(cols, ', '), array_to_string(vals, ', ')) END,
                  array_to_string(ret, ', '));
END
$$;

-- One protected table (or every one): rows for two tenants that do not exist are made, as the
-- calling role (or as_role), and the checks below run, all in a subtransaction that is rolled
-- back (audit rows included). One row per check.
CREATE FUNCTION tenantguard.test_isolation(tbl regclass DEFAULT NULL, as_role name DEFAULT NULL)
RETURNS TABLE (table_name text, check_name text, ok boolean, detail text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
    c record;
    t text;
    tcol text;
    spec text;
    ty text;
    a text;
    b text;
    cols text[];
    vals_a text[];
    vals_b text[];
    v text;
    n bigint;
    skip text;
    fk record;
    fk_cols text[];
    parents text[];
    ja jsonb;
    jb jsonb;
    results text[][];
BEGIN
    IF as_role IS NOT NULL AND NOT pg_has_role(session_user, as_role, 'MEMBER') THEN
        RAISE EXCEPTION 'permission denied to test isolation as role %', as_role
              USING ERRCODE = 'insufficient_privilege',
                    HINT = 'Pass a role the session can SET ROLE to, or none to test as the current role.';
    END IF;
    IF tbl IS NOT NULL AND NOT EXISTS (SELECT 1 FROM tenantguard.registry WHERE relid = tbl) THEN
        RAISE EXCEPTION 'table "%" is not protected by tenantguard', tbl
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = format('Protect it first: SELECT tenantguard.protect(%L).', tbl::text);
    END IF;
    IF current_setting('tenantguard.require_signed_tenant') = 'on' THEN
        RETURN QUERY SELECT tbl::text, 'setup', NULL::boolean,
            'require_signed_tenant is on: test_isolation() cannot set tenants without a token; run it where it is off';
        RETURN;
    END IF;
    FOR r IN
        SELECT reg.relid, reg.tenant_column, COALESCE(reg.options ->> 'tenant_setting',
               current_setting('tenantguard.tenant_setting')) AS spec
          FROM tenantguard.registry reg JOIN pg_class k ON k.oid = reg.relid
         WHERE (tbl IS NULL OR reg.relid = tbl) AND NOT k.relispartition
         ORDER BY reg.relid::text
    LOOP
        t := r.relid::text;
        tcol := r.tenant_column;
        spec := r.spec;
        SELECT format_type(a.atttypid, a.atttypmod) INTO ty
          FROM pg_attribute a WHERE a.attrelid = r.relid AND a.attname = tcol;
        a := tenantguard._test_value(ty::regtype);
        b := tenantguard._test_value(ty::regtype);
        IF ty IN ('text', 'character varying') OR ty LIKE 'character varying(%' THEN
            a := 'tg-test-a-' || substr(md5(random()::text), 1, 8);
            b := 'tg-test-b-' || substr(md5(random()::text), 1, 8);
        END IF;
        -- The columns the test rows fill: the tenant column, and NOT NULL ones without a default.
        cols := ARRAY[quote_ident(tcol)];
        vals_a := ARRAY[quote_literal(a)];
        vals_b := ARRAY[quote_literal(b)];
        skip := NULL;
        -- A NOT NULL foreign key gets a parent row per tenant, made first (in the subtransaction)
        -- with the same tenant: INSERT INTO parent ... RETURNING the referenced columns, named
        -- as the referencing ones. One level deep: a parent that itself needs a parent is skipped.
        fk_cols := ARRAY[]::text[];
        parents := ARRAY[]::text[];
        FOR fk IN
            SELECT f.conname, f.confrelid, f.conkey, f.confkey
              FROM pg_constraint f
             WHERE f.conrelid = r.relid AND f.contype = 'f'
               AND EXISTS (SELECT 1 FROM pg_attribute att
                            WHERE att.attrelid = r.relid AND att.attnum = ANY (f.conkey)
                              AND att.attname <> tcol AND att.attnotnull AND NOT att.atthasdef
                              AND att.attidentity = '' AND att.attgenerated = '')
             ORDER BY f.conname
        LOOP
            skip := tenantguard._test_parent_insert(r.relid, tcol, fk.confrelid, fk.conkey, fk.confkey);
            IF skip NOT LIKE 'INSERT %' THEN
                skip := format('foreign key %I: %s', fk.conname, skip);
                EXIT;
            END IF;
            parents := parents || skip;
            skip := NULL;
            SELECT fk_cols || array_agg(quote_ident(att.attname) ORDER BY att.attnum) INTO fk_cols
              FROM pg_attribute att
             WHERE att.attrelid = r.relid AND att.attnum = ANY (fk.conkey) AND att.attname <> tcol
               AND NOT quote_ident(att.attname) = ANY (fk_cols);
        END LOOP;
        FOR c IN
            SELECT att.attname, att.atttypid::regtype AS typ,
                   quote_ident(att.attname) = ANY (fk_cols) AS referencing
              FROM pg_attribute att
             WHERE att.attrelid = r.relid AND att.attnum > 0 AND NOT att.attisdropped
               AND att.attname <> tcol AND att.attnotnull AND NOT att.atthasdef
               AND att.attidentity = '' AND att.attgenerated = ''
             ORDER BY att.attnum
        LOOP
            CONTINUE WHEN skip IS NOT NULL OR c.referencing;
            v := tenantguard._test_value(c.typ);
            IF v IS NULL THEN
                skip := format('no test value for column %I of type %s', c.attname, c.typ);
                EXIT;
            END IF;
            cols := cols || quote_ident(c.attname);
            vals_a := vals_a || quote_literal(v);
            vals_b := vals_b || quote_literal(tenantguard._test_value(c.typ));
        END LOOP;
        IF skip IS NOT NULL THEN
            RETURN QUERY SELECT t, 'setup', NULL::boolean, 'skipped: ' || skip;
            CONTINUE;
        END IF;
        BEGIN
            results := ARRAY[]::text[][];
            IF as_role IS NOT NULL THEN
                EXECUTE format('SET LOCAL ROLE %I', as_role);
            END IF;
            -- Row level security must apply to the role at all.
            SELECT CASE WHEN rl.rolsuper THEN 'the role is a superuser'
                        WHEN rl.rolbypassrls THEN 'the role has BYPASSRLS'
                        WHEN NOT k.relrowsecurity THEN 'row level security is disabled'
                        WHEN pg_has_role(current_user, k.relowner, 'USAGE') AND NOT k.relforcerowsecurity
                             THEN 'the role owns the table, which does not force row level security'
                        WHEN current_setting('row_security') = 'off' THEN 'row_security is off'
                   END
              INTO v
              FROM pg_roles rl, pg_class k WHERE rl.rolname = current_user AND k.oid = r.relid;
            results := results || ARRAY[['rls_applies', (v IS NULL)::text, COALESCE(v, 'row level security applies to ' || current_user)]];
            -- Tenant b's row, then tenant a's, each after its parent rows.
            jb := '{}';
            ja := '{}';
            PERFORM tenantguard._test_set_tenant(spec, b);
            FOR n IN 1 .. COALESCE(array_length(parents, 1), 0) LOOP
                EXECUTE parents[n] INTO v USING b;
                jb := jb || v::jsonb;
            END LOOP;
            PERFORM tenantguard._test_set_tenant(spec, a);
            FOR n IN 1 .. COALESCE(array_length(parents, 1), 0) LOOP
                EXECUTE parents[n] INTO v USING a;
                ja := ja || v::jsonb;
            END LOOP;
            -- The referencing columns take the parents' keys.
            cols := cols || fk_cols;
            SELECT vals_b || COALESCE(array_agg(quote_literal(jb ->> x) ORDER BY o), '{}'),
                   vals_a || COALESCE(array_agg(quote_literal(ja ->> x) ORDER BY o), '{}')
              INTO vals_b, vals_a
              FROM unnest(fk_cols) WITH ORDINALITY AS u(x, o);
            PERFORM tenantguard._test_set_tenant(spec, b);
            EXECUTE format('INSERT INTO %s (%s) VALUES (%s)', t, array_to_string(cols, ', '), array_to_string(vals_b, ', '));
            PERFORM tenantguard._test_set_tenant(spec, a);
            EXECUTE format('INSERT INTO %s (%s) VALUES (%s)', t, array_to_string(cols, ', '), array_to_string(vals_a, ', '));
            results := results || ARRAY[['insert_own', 'true', 'the tenant inserts its own row']];
            EXECUTE format('SELECT count(*) FROM %s WHERE %I = %L', t, tcol, a) INTO n;
            results := results || ARRAY[['read_own', (n = 1)::text, format('%s of its 1 row visible', n)]];
            EXECUTE format('SELECT count(*) FROM %s WHERE %I = %L', t, tcol, b) INTO n;
            results := results || ARRAY[['read_other', (n = 0)::text, format('%s of the other tenant''s 1 row visible', n)]];
            EXECUTE format('CREATE TEMP TABLE tenantguard_copy ON COMMIT DROP AS SELECT * FROM %s WHERE %I IN (%L, %L)', t, tcol, a, b);
            EXECUTE format('SELECT count(*) FROM tenantguard_copy WHERE %I = %L', tcol, b) INTO n;
            results := results || ARRAY[['copy_other', (n = 0)::text, format('%s of the other tenant''s rows copied out', n)]];
            DROP TABLE tenantguard_copy;
            EXECUTE format('UPDATE %s SET %I = %I WHERE %I = %L', t, tcol, tcol, tcol, b);
            GET DIAGNOSTICS n = ROW_COUNT;
            results := results || ARRAY[['update_other', (n = 0)::text, format('%s of the other tenant''s rows updated', n)]];
            EXECUTE format('DELETE FROM %s WHERE %I = %L', t, tcol, b);
            GET DIAGNOSTICS n = ROW_COUNT;
            results := results || ARRAY[['delete_other', (n = 0)::text, format('%s of the other tenant''s rows deleted', n)]];
            BEGIN
                EXECUTE format('INSERT INTO %s (%s) VALUES (%s)', t, array_to_string(cols, ', '), array_to_string(vals_b, ', '));
                results := results || ARRAY[['insert_other', 'false', 'a row of the other tenant was inserted']];
            EXCEPTION WHEN insufficient_privilege OR unique_violation THEN
                results := results || ARRAY[['insert_other', 'true', 'refused: ' || SQLERRM]];
            END;
            BEGIN
                EXECUTE format('UPDATE %s SET %I = %L WHERE %I = %L', t, tcol, b, tcol, a);
                GET DIAGNOSTICS n = ROW_COUNT;
                results := results || ARRAY[['move_to_other', (n = 0)::text,
                    CASE WHEN n = 0 THEN 'no row moved' ELSE 'its row was moved to the other tenant' END]];
            EXCEPTION WHEN insufficient_privilege OR foreign_key_violation THEN
                results := results || ARRAY[['move_to_other', 'true', 'refused: ' || SQLERRM]];
            END;
            EXECUTE format('UPDATE %s SET %I = %I WHERE %I = %L', t, tcol, tcol, tcol, a);
            GET DIAGNOSTICS n = ROW_COUNT;
            results := results || ARRAY[['update_own', (n = 1)::text, format('%s of its 1 row updated', n)]];
            EXECUTE format('DELETE FROM %s WHERE %I = %L', t, tcol, a);
            GET DIAGNOSTICS n = ROW_COUNT;
            results := results || ARRAY[['delete_own', (n = 1)::text, format('%s of its 1 row deleted', n)]];
            RAISE EXCEPTION USING ERRCODE = 'TGR01';   -- roll everything back
        EXCEPTION
            WHEN SQLSTATE 'TGR01' THEN NULL;
            WHEN OTHERS THEN
                results := results || ARRAY[['setup', 'false',
                    format('the test rows could not be made or checked: %s (%s)', SQLERRM, SQLSTATE)]];
        END;
        FOR n IN 1 .. COALESCE(array_length(results, 1), 0) LOOP
            RETURN QUERY SELECT t, results[n][1], results[n][2]::boolean, results[n][3];
        END LOOP;
    END LOOP;
END
$$;
COMMENT ON FUNCTION tenantguard.test_isolation(regclass, name) IS
  'Test isolation of one protected table (or all) with made-up rows of two tenants, as the current role or as_role; everything is rolled back. One row per check.';

CREATE FUNCTION tenantguard.assert_isolation(tbl regclass DEFAULT NULL, as_role name DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    bad text[];
BEGIN
    SELECT array_agg(format('%s %s: %s', i.table_name, i.check_name, i.detail) ORDER BY i.table_name, i.check_name)
      INTO bad
      FROM tenantguard.test_isolation(tbl, as_role) i
     WHERE NOT i.ok;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = format('%s isolation check(s) failed: %s', cardinality(bad), array_to_string(bad, '; ')),
            HINT = 'Run tenantguard.test_isolation() for every check, and tenantguard.explain_access() on a row.';
    END IF;
END
$$;

-- Why one row (by its primary key) is or is not visible to a role for a command, with the current
-- tenant setting: whether row level security applies, each applicable policy's verdict, the answer.
-- A role that cannot see the row learns only that (for SELECT, UPDATE and DELETE); for INSERT the
-- row is the one proposed in row_key.
CREATE FUNCTION tenantguard.explain_access(tbl regclass, row_key jsonb, command text DEFAULT 'SELECT',
                                           as_role name DEFAULT current_user)
RETURNS TABLE (step text, policy name, kind text, clause text, verdict boolean, detail text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cmd text := upper(btrim(command));
    code "char";
    match text;
    bypass text;
    visible boolean;
    p record;
    v boolean;
    perm_any boolean := false;
    perm_seen boolean := false;
    restr_fail name;
    source text;
BEGIN
    IF cmd NOT IN ('SELECT', 'INSERT', 'UPDATE', 'DELETE') THEN
        RAISE EXCEPTION 'command must be SELECT, INSERT, UPDATE or DELETE, not "%"', command
              USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF NOT pg_has_role(session_user, as_role, 'MEMBER') THEN
        RAISE EXCEPTION 'permission denied to explain access as role %', as_role
              USING ERRCODE = 'insufficient_privilege',
                    HINT = 'Pass a role the session can SET ROLE to.';
    END IF;
    code := CASE cmd WHEN 'SELECT' THEN 'r' WHEN 'INSERT' THEN 'a' WHEN 'UPDATE' THEN 'w' ELSE 'd' END;
    -- The primary key match, from the key's columns.
    SELECT string_agg(format('t.%1$I IS NOT DISTINCT FROM (jsonb_populate_record(NULL::%2$s, %3$L)).%1$I',
                             a.attname, tbl, row_key), ' AND ')
      INTO match
      FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey)
     WHERE i.indrelid = tbl AND i.indisprimary;
    IF match IS NULL THEN
        RAISE EXCEPTION 'table "%" has no primary key to find the row by', tbl
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = 'explain_access() finds the row by its primary key.';
    END IF;
    SELECT CASE WHEN rl.rolsuper THEN 'the role is a superuser: row level security never applies'
                WHEN rl.rolbypassrls THEN 'the role has BYPASSRLS: row level security never applies'
                WHEN NOT k.relrowsecurity THEN 'row level security is disabled on the table'
                WHEN pg_has_role(rl.oid, k.relowner, 'USAGE') AND NOT k.relforcerowsecurity
                     THEN 'the role owns the table, and the table does not force row level security'
           END
      INTO bypass
      FROM pg_roles rl, pg_class k WHERE rl.rolname = as_role AND k.oid = tbl;
    RETURN QUERY SELECT 'rls_applies', NULL::name, NULL::text, NULL::text, bypass IS NULL,
                        COALESCE(bypass, format('row level security applies to %s on %s', as_role, tbl));
    IF bypass IS NOT NULL THEN
        RETURN QUERY SELECT 'answer', NULL::name, NULL::text, NULL::text, true,
                            'allowed: ' || bypass;
        RETURN;
    END IF;
    -- The row, as the role sees it (INSERT: the proposed row).
    source := CASE WHEN cmd = 'INSERT'
                   THEN format('jsonb_populate_record(NULL::%s, %L) AS t', tbl, row_key)
                   ELSE format('%s t', tbl) END;
    BEGIN
        EXECUTE format('SET LOCAL ROLE %I', as_role);
        IF cmd <> 'INSERT' THEN
            EXECUTE format('SELECT EXISTS (SELECT 1 FROM %s WHERE %s)', source, match) INTO visible;
            IF NOT visible THEN
                RETURN QUERY SELECT 'answer', NULL::name, NULL::text, NULL::text, false,
                    format('not visible to %s with the current tenant: no such row, or no policy lets it be seen', as_role);
                RAISE EXCEPTION USING ERRCODE = 'TGR02';
            END IF;
        END IF;
        FOR p IN
            SELECT po.polname, po.polpermissive, po.polcmd,
                   pg_get_expr(po.polqual, po.polrelid) AS using_expr,
                   pg_get_expr(po.polwithcheck, po.polrelid) AS check_expr
              FROM pg_policy po
             WHERE po.polrelid = tbl AND po.polcmd IN (code, '*')
               AND (0::oid = ANY (po.polroles)
                    OR EXISTS (SELECT 1 FROM unnest(po.polroles) r WHERE pg_has_role(as_role, r, 'MEMBER')))
             ORDER BY po.polpermissive DESC, po.polname
        LOOP
            -- USING decides which rows SELECT, UPDATE and DELETE see; WITH CHECK (or USING when
            -- there is none) which rows INSERT and UPDATE may write.
            IF cmd <> 'INSERT' AND p.using_expr IS NOT NULL THEN
                EXECUTE format('SELECT (%s) FROM %s WHERE %s', p.using_expr, source, match) INTO v;
                RETURN QUERY SELECT 'policy', p.polname,
                    CASE WHEN p.polpermissive THEN 'permissive' ELSE 'restrictive' END, 'USING', COALESCE(v, false),
                    p.using_expr;
                IF p.polpermissive THEN perm_seen := true; perm_any := perm_any OR COALESCE(v, false);
                ELSIF NOT COALESCE(v, false) THEN restr_fail := COALESCE(restr_fail, p.polname); END IF;
            END IF;
            IF cmd IN ('INSERT', 'UPDATE') AND COALESCE(p.check_expr, p.using_expr) IS NOT NULL THEN
                IF cmd = 'INSERT' THEN
                    EXECUTE format('SELECT (%s) FROM %s', COALESCE(p.check_expr, p.using_expr), source) INTO v;
                ELSE
                    EXECUTE format('SELECT (%s) FROM %s WHERE %s', COALESCE(p.check_expr, p.using_expr), source, match) INTO v;
                END IF;
                RETURN QUERY SELECT 'policy', p.polname,
                    CASE WHEN p.polpermissive THEN 'permissive' ELSE 'restrictive' END, 'WITH CHECK', COALESCE(v, false),
                    COALESCE(p.check_expr, p.using_expr);
                IF cmd = 'INSERT' THEN
                    IF p.polpermissive THEN perm_seen := true; perm_any := perm_any OR COALESCE(v, false);
                    ELSIF NOT COALESCE(v, false) THEN restr_fail := COALESCE(restr_fail, p.polname); END IF;
                END IF;
            END IF;
        END LOOP;
        RAISE EXCEPTION USING ERRCODE = 'TGR02';   -- back to the caller's role
    EXCEPTION WHEN SQLSTATE 'TGR02' THEN
        IF visible IS FALSE THEN
            RETURN;
        END IF;
    END;
    RETURN QUERY SELECT 'answer', NULL::name, NULL::text, NULL::text,
        perm_any AND restr_fail IS NULL,
        CASE WHEN NOT perm_seen THEN 'refused: no permissive policy applies to ' || as_role || ' for ' || cmd
             WHEN NOT perm_any THEN 'refused: no permissive policy allows this row'
             WHEN restr_fail IS NOT NULL THEN 'refused: restrictive policy ' || restr_fail || ' does not allow this row'
             ELSE 'allowed: a permissive policy allows it and no restrictive policy refuses it' END;
END
$$;
COMMENT ON FUNCTION tenantguard.explain_access(regclass, jsonb, text, name) IS
  'Why one row (by primary key) is or is not visible to a role for a command with the current tenant setting: whether RLS applies, each policy''s verdict, the answer.';

-- The roles that bypass row level security, directly (superuser, BYPASSRLS) or through a role they
-- can SET ROLE to; whether they can log in; on how many protected tables they hold privileges.
CREATE FUNCTION tenantguard.bypass_report()
RETURNS TABLE (role_name name, how text, via name, can_login boolean, protected_tables_with_privileges integer)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
SET row_security = on
AS $$
WITH bypassers AS (
    SELECT r.oid, r.rolname, CASE WHEN r.rolsuper THEN 'superuser' ELSE 'BYPASSRLS' END AS how
      FROM pg_roles r WHERE r.rolsuper OR r.rolbypassrls
),
reach AS (
    SELECT r.oid, r.rolname, b.how, NULL::name AS via FROM bypassers b JOIN pg_roles r ON r.oid = b.oid
    UNION ALL
    SELECT r.oid, r.rolname, b.how || ' through SET ROLE', b.rolname
      FROM pg_roles r JOIN bypassers b ON b.oid <> r.oid AND pg_has_role(r.oid, b.oid, 'MEMBER')
     WHERE NOT r.rolsuper AND NOT r.rolbypassrls
)
SELECT x.rolname, x.how, x.via, r.rolcanlogin,
       (SELECT count(*)::integer FROM tenantguard.registry reg
         WHERE has_table_privilege(x.oid, reg.relid, 'SELECT, INSERT, UPDATE, DELETE'))
  FROM reach x JOIN pg_roles r ON r.oid = x.oid
 ORDER BY r.rolcanlogin DESC, x.rolname, x.via NULLS FIRST
$$;
COMMENT ON FUNCTION tenantguard.bypass_report() IS
  'Roles that bypass row level security (superuser, BYPASSRLS, or SET ROLE to one), whether they log in, and on how many protected tables they hold privileges.';

-- Raises when the current role would bypass row level security on a protected table: test suites
-- call it first, so that they cannot pass by running as a superuser.
CREATE FUNCTION tenantguard.assert_enforced() RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET row_security = on
AS $$
DECLARE
    why text;
BEGIN
    SELECT CASE WHEN r.rolsuper THEN 'it is a superuser'
                WHEN r.rolbypassrls THEN 'it has BYPASSRLS'
                ELSE (SELECT format('it owns %s, which does not force row level security', string_agg(reg.relid::text, ', ' ORDER BY reg.relid::text))
                        FROM tenantguard.registry reg JOIN pg_class k ON k.oid = reg.relid
                       WHERE pg_has_role(r.oid, k.relowner, 'USAGE')
                         AND (NOT k.relforcerowsecurity OR NOT k.relrowsecurity)
                      HAVING count(*) > 0) END
      INTO why
      FROM pg_roles r WHERE r.rolname = current_user;
    IF why IS NULL AND current_setting('row_security') = 'off' THEN
        why := 'row_security is off';
    END IF;
    IF why IS NOT NULL THEN
        RAISE EXCEPTION 'row level security is not enforced for role %: %', current_user, why
              USING ERRCODE = 'object_not_in_prerequisite_state',
                    HINT = 'Run the tests as the application role: NOSUPERUSER NOBYPASSRLS, not the tables'' owner.';
    END IF;
END
$$;

-- The protection as plain SQL, for a server without tenantguard (src/protect/export.rs).
CREATE FUNCTION tenantguard.export_sql(tbl regclass DEFAULT NULL) RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
SET row_security = on
AS $$
SELECT string_agg(tenantguard._export_sql(r.relid), E'\n' ORDER BY r.relid::text)
  FROM tenantguard.registry r
 WHERE tbl IS NULL OR r.relid = tbl
$$;
COMMENT ON FUNCTION tenantguard.export_sql(regclass) IS
  'Plain SQL that recreates the protection (RLS enabled and forced, the policies without tenantguard functions, the REVOKEs) on a server without tenantguard.';

-- One plain SQL query that reports coverage as coverage() does, for a server without tenantguard:
-- a table with the tenant column (as tenantguard.tenant_column names it now), and what protects it.
CREATE FUNCTION tenantguard.coverage_sql() RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
SELECT format($q$SELECT n.nspname AS schema_name, c.relname AS table_name,
       c.relrowsecurity AS rls_enabled, c.relforcerowsecurity AS rls_forced,
       p.sel AS select_policy, p.ins AS insert_policy, p.upd AS update_policy, p.del AS delete_policy,
       array_remove(ARRAY[
           CASE WHEN NOT c.relrowsecurity THEN 'rls_disabled' END,
           CASE WHEN NOT c.relforcerowsecurity THEN 'rls_not_forced' END,
           CASE WHEN NOT p.sel THEN 'no_select_policy' END,
           CASE WHEN NOT p.ins THEN 'no_insert_policy' END,
           CASE WHEN NOT p.upd THEN 'no_update_policy' END,
           CASE WHEN NOT p.del THEN 'no_delete_policy' END], NULL) AS missing,
       CASE WHEN c.relrowsecurity AND c.relforcerowsecurity AND p.sel AND p.ins AND p.upd AND p.del THEN 'protected'
            WHEN NOT (c.relrowsecurity OR p.sel OR p.ins OR p.upd OR p.del) THEN 'unprotected'
            ELSE 'partial' END AS status
  FROM pg_catalog.pg_class c
  JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 CROSS JOIN LATERAL (
     SELECT COALESCE(bool_or(po.polname = 'tenantguard_tenant_select' AND po.polcmd = 'r'), false) AS sel,
            COALESCE(bool_or(po.polname = 'tenantguard_tenant_insert' AND po.polcmd = 'a'), false) AS ins,
            COALESCE(bool_or(po.polname = 'tenantguard_tenant_update' AND po.polcmd = 'w'), false) AS upd,
            COALESCE(bool_or(po.polname = 'tenantguard_tenant_delete' AND po.polcmd = 'd'), false) AS del
       FROM pg_catalog.pg_policy po WHERE po.polrelid = c.oid AND po.polpermissive) p
 WHERE c.relkind IN ('r', 'p') AND c.relpersistence <> 't'
   AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\_%%'
   AND (EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                 WHERE a.attrelid = c.oid AND a.attname = %L AND a.attnum > 0 AND NOT a.attisdropped)
        OR p.sel OR p.ins OR p.upd OR p.del)
 ORDER BY 1, 2$q$,
    COALESCE(NULLIF(current_setting('tenantguard.tenant_column', true), ''), 'tenant_id'))
$$;
COMMENT ON FUNCTION tenantguard.coverage_sql() IS
  'One plain SQL query that reports coverage like coverage(), for a server without tenantguard.';

-- Adopting tenantguard on a live database (docs/adopting.md): adoption_plan() reads the database
-- and says what protect() would do to each tenant table and what blocks it or makes it risky;
-- the adopt() procedure protects the ready tables one per transaction, with a short lock_timeout,
-- retries with backoff, progress NOTICEs and a log, and resumes where it stopped.

-- One row per run and table that adopt() dealt with: what happened and why. A role reads the
-- rows of tables it owns (tenantguard_admin: all of them).
CREATE TABLE tenantguard.adoption_log (
    run_started timestamptz NOT NULL,
    relid       regclass    NOT NULL,
    outcome     text        NOT NULL CHECK (outcome IN ('protected', 'skipped', 'blocked')),
    reason      text,
    attempts    integer     NOT NULL DEFAULT 0,
    logged_at   timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
    logged_by   name        NOT NULL DEFAULT CURRENT_USER,
    PRIMARY KEY (run_started, relid)
);
COMMENT ON TABLE tenantguard.adoption_log IS
  'What each tenantguard.adopt() run did to each table: protected, skipped (and why), blocked (and why).';
ALTER TABLE tenantguard.adoption_log ENABLE ROW LEVEL SECURITY;
CREATE POLICY adoption_log_read ON tenantguard.adoption_log FOR SELECT
  USING (tenantguard._owns(relid) OR pg_catalog.pg_has_role('tenantguard_admin', 'MEMBER'));
CREATE POLICY adoption_log_insert ON tenantguard.adoption_log FOR INSERT
  WITH CHECK (tenantguard._owns(relid) AND logged_by = CURRENT_USER);
CREATE POLICY adoption_log_delete ON tenantguard.adoption_log FOR DELETE
  USING (tenantguard._owns(relid) OR pg_catalog.pg_has_role('tenantguard_admin', 'MEMBER'));
GRANT SELECT, INSERT, DELETE ON tenantguard.adoption_log TO PUBLIC;

-- The plan. It changes nothing; it counts the NULL tenant values of nullable tenant columns (a
-- scan of each such table the caller may read).
CREATE FUNCTION tenantguard.adoption_plan(schemas name[] DEFAULT NULL)
RETURNS TABLE (
    schema_name    name,
    table_name     name,
    tenant_column  name,
    status         text,      -- protected | exempt | ready | blocked | with_parent
    action         text,      -- what protect() would do
    blockers       text[],    -- what must be fixed first
    risks          text[],    -- what protect() does not need, but the table should have
    fixes          text[],    -- the SQL for each blocker and risk, in order
    null_rows      bigint,
    estimated_rows bigint,
    lock           text)
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    r record;
    d record;
    n bigint;
    b text[];
    k text[];
    f text[];
    sd_fns regprocedure[];
    sd_words text[];
BEGIN
    IF schemas IS NOT NULL AND EXISTS (SELECT 1 FROM unnest(schemas) s
                                        WHERE NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = s)) THEN
        RAISE EXCEPTION 'schema "%" does not exist',
              (SELECT s FROM unnest(schemas) s WHERE NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = s) LIMIT 1)
              USING ERRCODE = 'invalid_schema_name',
                    HINT = 'Pass existing schema names, or NULL for every schema.';
    END IF;
    -- SECURITY DEFINER functions and the words of their bodies (' w1 w2 ... '), split once here
    -- rather than once per table.
    SELECT array_agg(p.oid::regprocedure ORDER BY p.oid::regprocedure::text),
           array_agg(' ' || array_to_string(regexp_split_to_array(
                         lower(COALESCE(pg_get_function_sqlbody(p.oid), p.prosrc)), '[^a-z0-9_$]+'), ' ') || ' '
                     ORDER BY p.oid::regprocedure::text)
      INTO sd_fns, sd_words
      FROM pg_proc p
     WHERE p.prosecdef AND p.pronamespace NOT IN (SELECT oid FROM pg_namespace
                                                   WHERE nspname IN ('pg_catalog', 'information_schema', 'tenantguard'));
    FOR r IN
        WITH locks AS MATERIALIZED (
            SELECT l.relation, count(DISTINCT l.pid) AS sessions,
                   max(now() - a.xact_start) AS oldest
              FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.locktype = 'relation' AND l.granted AND l.pid <> pg_backend_pid()
               AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
             GROUP BY l.relation)
        SELECT c.oid, cv.schema_name, cv.table_name, cv.tenant_column, cv.status AS cov_status,
               c.relispartition, c.relkind, c.relowner, c.reltuples,
               a.attnum, a.attnotnull, a.atttypid,
               o.rolname AS owner, o.rolcanlogin AND NOT o.rolsuper AS owner_logs_in,
               lk.sessions, lk.oldest
          FROM tenantguard.coverage() cv
          JOIN pg_namespace ns ON ns.nspname = cv.schema_name
          JOIN pg_class c ON c.relnamespace = ns.oid AND c.relname = cv.table_name
          JOIN pg_roles o ON o.oid = c.relowner
          LEFT JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = cv.tenant_column
                                  AND a.attnum > 0 AND NOT a.attisdropped
          LEFT JOIN locks lk ON lk.relation = c.oid
         WHERE schemas IS NULL OR cv.schema_name = ANY (schemas)
         ORDER BY cv.schema_name, cv.table_name
    LOOP
        schema_name := r.schema_name;
        table_name := r.table_name;
        tenant_column := r.tenant_column;
        estimated_rows := CASE WHEN r.reltuples >= 0 THEN r.reltuples::bigint END;
        null_rows := NULL;
        b := ARRAY[]::text[];
        k := ARRAY[]::text[];
        f := ARRAY[]::text[];
        lock := format('ACCESS EXCLUSIVE on %s for ENABLE/FORCE ROW LEVEL SECURITY and CREATE POLICY, '
                       'SHARE ROW EXCLUSIVE for CREATE TRIGGER; held for milliseconds, but queued '
                       'behind every open transaction that touched the table, and every statement '
                       'on the table queues behind it while it waits (adopt() bounds that with '
                       'lock_timeout)', r.oid::regclass)
                || CASE WHEN r.relkind = 'p' THEN '; the same on each partition' ELSE '' END
                || CASE WHEN r.sessions > 0
                        THEN format('; now %s other session(s) hold locks on it', r.sessions)
                             -- (how long is known only for sessions the caller may see in
                             -- pg_stat_activity)
                             || COALESCE(format(', the oldest in a transaction open for %s',
                                                date_trunc('second', r.oldest)), '')
                        ELSE '' END;
        IF EXISTS (SELECT 1 FROM tenantguard.registry g WHERE g.relid = r.oid) THEN
            status := 'protected';
            action := CASE WHEN r.cov_status = 'protected' THEN 'nothing: already protected'
                           ELSE 'nothing: registered, but coverage() reports it ' || r.cov_status
                                || '; see its missing column' END;
        ELSIF r.cov_status = 'exempt' THEN
            status := 'exempt';
            action := 'nothing: exempt (' || (SELECT x.reason FROM tenantguard.exemptions x WHERE x.relid = r.oid) || ')';
        ELSIF r.relispartition THEN
            status := 'with_parent';
            action := 'nothing of its own: protect() on its partitioned parent protects it';
        ELSE
            action := 'ENABLE and FORCE ROW LEVEL SECURITY; four tenant policies on '
                      || quote_ident(r.tenant_column)
                      || '; audit and updated_at triggers; REVOKE TRUNCATE and REFERENCES; '
                      || 'registered (SELECT tenantguard.protect(' || quote_literal(r.oid::regclass::text)
                      || ', dry_run => true) shows the statements)';
            -- Blockers: no tenant column of its own; NULL tenant values (those rows would vanish
            -- for every tenant).
            IF r.attnum IS NULL THEN
                b := b || format('no column %I', r.tenant_column);
                f := f || format('ALTER TABLE %s ADD COLUMN %I <type of the tenant key>;', r.oid::regclass, r.tenant_column);
            ELSIF NOT r.attnotnull THEN
                IF has_table_privilege(r.oid, 'SELECT') THEN
                    EXECUTE format('SELECT count(*) FROM %s WHERE %I IS NULL', r.oid::regclass, r.tenant_column)
                       INTO n;
                    null_rows := n;
                END IF;
                IF null_rows IS NULL OR null_rows > 0 THEN
                    b := b || format('%s row(s) with a NULL %I: no tenant could see them once protected',
                                     COALESCE(null_rows::text, 'an unknown number of (no SELECT privilege)'),
                                     r.tenant_column);
                    f := f || format('UPDATE %s SET %I = <the owning tenant> WHERE %I IS NULL; '
                                     'ALTER TABLE %s ADD CONSTRAINT %I CHECK (%I IS NOT NULL) NOT VALID; '
                                     'ALTER TABLE %s VALIDATE CONSTRAINT %I;',
                                     r.oid::regclass, r.tenant_column, r.tenant_column,
                                     r.oid::regclass, r.table_name || '_' || r.tenant_column || '_not_null',
                                     r.tenant_column, r.oid::regclass,
                                     r.table_name || '_' || r.tenant_column || '_not_null');
                ELSE
                    k := k || format('%I is nullable (no NULL rows now)', r.tenant_column);
                    f := f || format('ALTER TABLE %s ADD CONSTRAINT %I CHECK (%I IS NOT NULL) NOT VALID; '
                                     'ALTER TABLE %s VALIDATE CONSTRAINT %I;',
                                     r.oid::regclass, r.table_name || '_' || r.tenant_column || '_not_null',
                                     r.tenant_column, r.oid::regclass,
                                     r.table_name || '_' || r.tenant_column || '_not_null');
                END IF;
            END IF;
            -- Risks: no index leading with the tenant column.
            IF r.attnum IS NOT NULL AND NOT EXISTS (SELECT 1 FROM pg_index i
                                                     WHERE i.indrelid = r.oid AND i.indkey[0] = r.attnum) THEN
                k := k || format('no index leading with %I: every policy check scans the table', r.tenant_column);
                f := f || format('CREATE INDEX CONCURRENTLY ON %s (%I);', r.oid::regclass, r.tenant_column);
            END IF;
            -- Foreign keys, either way, between tenant tables that leave the tenant column out.
            FOR d IN
                SELECT con.conname, con.conrelid::regclass AS child, con.confrelid::regclass AS parent,
                       (SELECT string_agg(quote_ident(x.attname), ', ' ORDER BY u.n)
                          FROM unnest(con.conkey) WITH ORDINALITY u(a, n)
                          JOIN pg_attribute x ON x.attrelid = con.conrelid AND x.attnum = u.a) AS cols,
                       (SELECT string_agg(quote_ident(x.attname), ', ' ORDER BY u.n)
                          FROM unnest(con.confkey) WITH ORDINALITY u(a, n)
                          JOIN pg_attribute x ON x.attrelid = con.confrelid AND x.attnum = u.a) AS refcols,
                       ca.attnum AS c_t, pa.attnum AS p_t
                  FROM pg_constraint con
                  LEFT JOIN pg_attribute ca ON ca.attrelid = con.conrelid AND ca.attname = r.tenant_column AND NOT ca.attisdropped
                  LEFT JOIN pg_attribute pa ON pa.attrelid = con.confrelid AND pa.attname = r.tenant_column AND NOT pa.attisdropped
                 WHERE con.contype = 'f' AND (con.conrelid = r.oid OR con.confrelid = r.oid)
                   AND NOT (COALESCE(ca.attnum = ANY (con.conkey), false)
                            AND COALESCE(pa.attnum = ANY (con.confkey), false))
                 ORDER BY con.conname
            LOOP
                k := k || format('foreign key %I from %s to %s leaves out %I: it can reference another '
                                 'tenant''s row, and reveals whether one exists',
                                 d.conname, d.child, d.parent, r.tenant_column);
                f := f || CASE WHEN d.c_t IS NOT NULL AND d.p_t IS NOT NULL THEN
                    format('CREATE UNIQUE INDEX CONCURRENTLY ON %s (%I, %s); '
                           'ALTER TABLE %s ADD CONSTRAINT %I FOREIGN KEY (%I, %s) REFERENCES %s (%I, %s) NOT VALID; '
                           'ALTER TABLE %s VALIDATE CONSTRAINT %I; ALTER TABLE %s DROP CONSTRAINT %I;',
                           d.parent, r.tenant_column, d.refcols,
                           d.child, d.conname || '_tenant', r.tenant_column, d.cols, d.parent, r.tenant_column, d.refcols,
                           d.child, d.conname || '_tenant', d.child, d.conname)
                    ELSE format('-- give %s a %I column and reference (%I, %s)',
                                CASE WHEN d.c_t IS NULL THEN d.child ELSE d.parent END,
                                r.tenant_column, r.tenant_column, d.refcols) END;
            END LOOP;
            -- Views, materialized views and SECURITY DEFINER functions over the table that would
            -- read it without the policies (what lint() reports once it is protected).
            FOR d IN
                SELECT DISTINCT v.oid::regclass AS obj, v.relkind,
                       COALESCE(v.reloptions::text[] && ARRAY['security_invoker=true', 'security_invoker=on', 'security_invoker=1'], false) AS invoker
                  FROM pg_depend dep
                  JOIN pg_rewrite rw ON rw.oid = dep.objid
                  JOIN pg_class v ON v.oid = rw.ev_class AND v.oid <> r.oid
                 WHERE dep.classid = 'pg_rewrite'::regclass AND dep.refclassid = 'pg_class'::regclass
                   AND dep.refobjid = r.oid AND v.relkind IN ('v', 'm')
                 ORDER BY 1
            LOOP
                CONTINUE WHEN d.relkind = 'v' AND d.invoker;
                IF d.relkind = 'm' THEN
                    k := k || format('materialized view %s holds the rows of every tenant', d.obj);
                    f := f || format('REVOKE ALL ON %s FROM PUBLIC; -- and from every application role, or drop it', d.obj);
                ELSE
                    k := k || format('view %s reads the table with its owner''s rights, around the policies', d.obj);
                    f := f || CASE WHEN current_setting('server_version_num')::int >= 150000
                                   THEN format('ALTER VIEW %s SET (security_invoker = true);', d.obj)
                                   ELSE format('-- PostgreSQL 14 has no security_invoker: give %s an owner that does not bypass RLS, or a WHERE on the tenant', d.obj) END;
                END IF;
            END LOOP;
            FOR i IN 1 .. COALESCE(cardinality(sd_fns), 0) LOOP
                CONTINUE WHEN strpos(sd_words[i], ' ' || lower(r.table_name) || ' ') = 0;
                k := k || format('SECURITY DEFINER function %s reads the table with its owner''s rights', sd_fns[i]);
                f := f || format('ALTER FUNCTION %s SECURITY INVOKER;', sd_fns[i]);
            END LOOP;
            -- The owner as the application's role: it can switch the protection off.
            IF r.owner_logs_in THEN
                k := k || format('the owner %I can log in: if the application connects as the owner, it '
                                 'can ALTER the table and drop the policies', r.owner);
                f := f || format('CREATE ROLE %I NOLOGIN; GRANT %I TO CURRENT_USER; ALTER TABLE %s OWNER TO %I; '
                                 'GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO %I;',
                                 r.owner || '_owner', r.owner || '_owner', r.oid::regclass, r.owner || '_owner',
                                 r.oid::regclass, r.owner);
            END IF;
            status := CASE WHEN cardinality(b) > 0 THEN 'blocked' ELSE 'ready' END;
        END IF;
        blockers := b;
        risks := k;
        fixes := f;
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION tenantguard.adoption_plan(name[]) IS
  'For every tenant table (in the schemas given, or all): what protect() would do, what blocks it or makes it risky with the SQL that fixes it, and the lock it needs. Changes nothing.';

-- schema.table, whatever the search_path.
CREATE FUNCTION tenantguard._adopt_name(t regclass) RETURNS text
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
AS $$ SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = t $$;

-- Protect every ready table, one per transaction. CALL it outside a transaction block.
CREATE PROCEDURE tenantguard.adopt(
    schemas       name[]   DEFAULT NULL,
    lock_timeout  interval DEFAULT '2s',
    max_attempts  integer  DEFAULT 3,
    backoff       interval DEFAULT '1s',
    dry_run       boolean  DEFAULT false)
LANGUAGE plpgsql
AS $$
DECLARE
    run_started timestamptz := pg_catalog.clock_timestamp();
    tbls regclass[];
    blocked regclass[];
    why text[];
    t regclass;
    i integer := 0;
    total integer;
    attempt integer;
    outcome text;
    err text;
    n_protected integer := 0;
    n_skipped integer := 0;
    timeout_ms bigint;
BEGIN
    IF lock_timeout IS NULL OR lock_timeout <= interval '0' OR max_attempts IS NULL OR max_attempts < 1
       OR backoff IS NULL OR backoff < interval '0' THEN
        RAISE EXCEPTION 'adopt() needs lock_timeout > 0, max_attempts >= 1 and backoff >= 0'
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'For example: CALL tenantguard.adopt(lock_timeout => ''2s'', max_attempts => 3, backoff => ''1s'').';
    END IF;
    timeout_ms := greatest(1, (extract(epoch FROM lock_timeout) * 1000)::bigint);
    SELECT array_agg(pg_catalog.format('%I.%I', p.schema_name, p.table_name)::regclass
                     ORDER BY p.schema_name, p.table_name) FILTER (WHERE p.status = 'ready'),
           array_agg(pg_catalog.format('%I.%I', p.schema_name, p.table_name)::regclass
                     ORDER BY p.schema_name, p.table_name) FILTER (WHERE p.status = 'blocked'),
           array_agg(pg_catalog.array_to_string(p.blockers, '; ')
                     ORDER BY p.schema_name, p.table_name) FILTER (WHERE p.status = 'blocked')
      INTO tbls, blocked, why
      FROM tenantguard.adoption_plan(schemas) p;
    total := COALESCE(pg_catalog.cardinality(tbls), 0);
    IF dry_run THEN
        RAISE NOTICE 'adopt (dry run): % table(s) to protect, % blocked', total, COALESCE(pg_catalog.cardinality(blocked), 0);
        FOREACH t IN ARRAY COALESCE(tbls, '{}') LOOP
            i := i + 1;
            BEGIN
                err := tenantguard.protect(t, dry_run => true);
                RAISE NOTICE E'%/% %\nBEGIN;\nSET LOCAL lock_timeout = %;\n%\nCOMMIT;', i, total,
                      tenantguard._adopt_name(t), pg_catalog.quote_literal(timeout_ms || 'ms'), err;
            EXCEPTION WHEN OTHERS THEN
                RAISE NOTICE '%/% % would be skipped: % (%)', i, total, tenantguard._adopt_name(t),
                      SQLERRM, SQLSTATE;
            END;
        END LOOP;
        FOR i IN 1 .. COALESCE(pg_catalog.cardinality(blocked), 0) LOOP
            RAISE NOTICE 'blocked: % (%)', tenantguard._adopt_name(blocked[i]), why[i];
        END LOOP;
        RETURN;
    END IF;
    -- Each table in a transaction of its own: end the caller's (it fails here, with nothing done,
    -- when CALL runs inside a transaction block).
    COMMIT;
    FOREACH t IN ARRAY COALESCE(tbls, '{}') LOOP
        i := i + 1;
        attempt := 0;
        LOOP
            attempt := attempt + 1;
            PERFORM pg_catalog.set_config('lock_timeout', timeout_ms::text, true);
            BEGIN
                -- Protected meanwhile (another session, or an earlier interrupted run): nothing twice.
                IF EXISTS (SELECT 1 FROM tenantguard.registry g WHERE g.relid = t) THEN
                    outcome := 'already';
                ELSE
                    PERFORM tenantguard.protect(t);
                    INSERT INTO tenantguard.adoption_log (run_started, relid, outcome, attempts)
                    VALUES (run_started, t, 'protected', attempt);
                    outcome := 'protected';
                END IF;
            EXCEPTION
                WHEN lock_not_available OR deadlock_detected THEN
                    outcome := 'locked';
                    err := SQLERRM;
                WHEN OTHERS THEN
                    outcome := 'failed';
                    err := pg_catalog.format('%s (%s)', SQLERRM, SQLSTATE);
            END;
            IF outcome = 'protected' THEN
                n_protected := n_protected + 1;
                COMMIT;
                RAISE NOTICE '%/% % protected', i, total, tenantguard._adopt_name(t);
                EXIT;
            ELSIF outcome = 'already' THEN
                COMMIT;
                RAISE NOTICE '%/% % already protected', i, total, tenantguard._adopt_name(t);
                EXIT;
            ELSIF outcome = 'locked' AND attempt < max_attempts THEN
                COMMIT;
                RAISE NOTICE '%/% % locked (attempt % of %), retrying in %', i, total, tenantguard._adopt_name(t), attempt,
                      max_attempts, backoff * (2 ^ (attempt - 1));
                PERFORM pg_catalog.pg_sleep(extract(epoch FROM backoff) * (2 ^ (attempt - 1)));
            ELSE
                n_skipped := n_skipped + 1;
                err := CASE WHEN outcome = 'locked'
                            THEN pg_catalog.format('lock not available within %s after %s attempt(s): %s',
                                                   lock_timeout, attempt, err)
                            ELSE err END;
                IF tenantguard._owns(t) THEN
                    INSERT INTO tenantguard.adoption_log (run_started, relid, outcome, reason, attempts)
                    VALUES (run_started, t, 'skipped', err, attempt);
                END IF;
                COMMIT;
                RAISE NOTICE '%/% % skipped: %', i, total, tenantguard._adopt_name(t), err;
                EXIT;
            END IF;
        END LOOP;
    END LOOP;
    FOR i IN 1 .. COALESCE(pg_catalog.cardinality(blocked), 0) LOOP
        IF tenantguard._owns(blocked[i]) THEN
            INSERT INTO tenantguard.adoption_log (run_started, relid, outcome, reason)
            VALUES (run_started, blocked[i], 'blocked', why[i]);
        END IF;
        RAISE NOTICE 'blocked: % (%)', tenantguard._adopt_name(blocked[i]), why[i];
    END LOOP;
    COMMIT;
    RAISE NOTICE 'adopt: % protected, % skipped, % blocked (this run''s rows in tenantguard.adoption_log)',
          n_protected, n_skipped, COALESCE(pg_catalog.cardinality(blocked), 0);
END
$$;
COMMENT ON PROCEDURE tenantguard.adopt(name[], interval, integer, interval, boolean) IS
  'Protect every ready tenant table, one per transaction, with a short lock_timeout, retries with backoff, progress NOTICEs and tenantguard.adoption_log; run it again to resume. CALL outside a transaction block.';

-- Dropped tables leave adoption_log too.
CREATE OR REPLACE FUNCTION tenantguard._forget(oids oid[]) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
  DELETE FROM tenantguard.registry
   WHERE relid::oid = ANY (oids)
     AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = relid::oid);
  DELETE FROM tenantguard.exemptions
   WHERE relid::oid = ANY (oids)
     AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = relid::oid);
  DELETE FROM tenantguard.adoption_log
   WHERE relid::oid = ANY (oids)
     AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = relid::oid);
$$;
