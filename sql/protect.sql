-- protect(), unprotect(), exempt() and the other SQL-facing wrappers of the Rust entry points
-- (src/protect/api.rs). Each takes the table as regclass, so a name is resolved (and quoted)
-- by PostgreSQL, and passes its arguments on as values.
CREATE FUNCTION tenantguard.exempt(tbl regclass, reason text) RETURNS text
LANGUAGE sql VOLATILE
SET row_security = on
AS $$ SELECT tenantguard._exempt(tbl, reason) $$;
COMMENT ON FUNCTION tenantguard.exempt(regclass, text) IS
  'Record a deliberate exception: the table stays unprotected, auto-protect skips it, coverage() shows it as exempt.';

CREATE FUNCTION tenantguard.unexempt(tbl regclass) RETURNS text
LANGUAGE sql VOLATILE
SET row_security = on
AS $$ SELECT tenantguard._unexempt(tbl) $$;

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

CREATE FUNCTION tenantguard.policies(tbl regclass)
RETURNS TABLE (policy_name name, template text, command text, kind text, roles name[],
               using_expr text, check_expr text, present boolean)
LANGUAGE sql STABLE
SET search_path = pg_catalog, pg_temp
SET row_security = on
AS $$
  SELECT (x.p ->> 'name')::name, x.p ->> 'template', x.p ->> 'command',
         CASE WHEN (x.p ->> 'permissive')::boolean THEN 'permissive' ELSE 'restrictive' END,
         CASE WHEN jsonb_array_length(x.p -> 'roles') = 0 THEN ARRAY['public']::name[]
              ELSE ARRAY(SELECT jsonb_array_elements_text(x.p -> 'roles'))::name[] END,
         COALESCE(pg_get_expr(pol.polqual, pol.polrelid), x.p ->> 'using'),
         COALESCE(pg_get_expr(pol.polwithcheck, pol.polrelid), x.p ->> 'check'),
         pol.oid IS NOT NULL
    FROM tenantguard.registry r
   CROSS JOIN LATERAL jsonb_array_elements(r.policies) WITH ORDINALITY AS x(p, ord)
    LEFT JOIN pg_policy pol ON pol.polrelid = r.relid AND pol.polname = (x.p ->> 'name')
   WHERE r.relid = tbl
   ORDER BY x.ord
$$;
COMMENT ON FUNCTION tenantguard.policies(regclass) IS
  'The policies tenantguard generated for a table: template, command, permissive/restrictive, roles, expressions.';

CREATE FUNCTION tenantguard.unprotect(tbl regclass) RETURNS text
LANGUAGE sql VOLATILE
SET row_security = on
AS $$ SELECT tenantguard._unprotect(tbl, false) $$;
COMMENT ON FUNCTION tenantguard.unprotect(regclass) IS
  'Remove exactly what protect() created; policies written by users stay.';

CREATE FUNCTION tenantguard.unprotect_sql(tbl regclass) RETURNS text
LANGUAGE sql VOLATILE
SET row_security = on
AS $$ SELECT tenantguard._unprotect(tbl, true) $$;
COMMENT ON FUNCTION tenantguard.unprotect_sql(regclass) IS
  'The SQL unprotect() would run, for the rollback half of a migration.';
