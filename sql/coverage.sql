-- coverage() and assert_coverage(): which tenant tables are protected, from any client.
-- Set-based over the catalogs so that it stays fast on databases with thousands of tables.

CREATE FUNCTION tenantguard.coverage()
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
COMMENT ON FUNCTION tenantguard.coverage() IS
  'One row per tenant table (a table with the tenant column, or a protected table): what protects it and what is missing.';

CREATE FUNCTION tenantguard.assert_coverage() RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET row_security = on
AS $$
DECLARE
    bad text[];
BEGIN
    SELECT array_agg(format('%I.%I (%s: %s)', c.schema_name, c.table_name, c.status,
                            array_to_string(c.missing, ', '))
                     ORDER BY c.schema_name, c.table_name)
      INTO bad
      FROM tenantguard.coverage() c
     WHERE c.status NOT IN ('protected', 'exempt');
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = format('%s tenant table(s) not fully protected: %s',
                             cardinality(bad), array_to_string(bad, '; ')),
            HINT = 'Call tenantguard.protect() on each table listed, or tenantguard.exempt() it with a reason.';
    END IF;
END;
$$;
COMMENT ON FUNCTION tenantguard.assert_coverage() IS
  'Raise an error listing every tenant table that is not fully protected; for the end of migrations and CI.';
