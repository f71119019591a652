-- lint(): every path around row level security that the catalogs show, one row per finding.
-- Set-based over the catalogs (plus the deparsed text of hand-written policies, where only the
-- expression says it), so it stays fast on databases with thousands of tables.

CREATE TABLE tenantguard.lint_waivers (
    code      text        NOT NULL,
    object    text        NOT NULL,
    reason    text,
    waived_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    waived_by name        NOT NULL DEFAULT CURRENT_USER,
    PRIMARY KEY (code, object)
);
COMMENT ON TABLE tenantguard.lint_waivers IS
  'Findings of tenantguard.lint() silenced on purpose, keyed by code and object. Written by the DBA (the extension owner).';
SELECT pg_catalog.pg_extension_config_dump('tenantguard.lint_waivers', '');
GRANT SELECT ON tenantguard.lint_waivers TO PUBLIC;

CREATE FUNCTION tenantguard.lint()
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
COMMENT ON FUNCTION tenantguard.lint() IS
  'One row per way around row level security the catalogs show: level, stable code, object, detail and the SQL that fixes it.';

CREATE FUNCTION tenantguard.assert_lint(min_level text DEFAULT 'error') RETURNS void
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET row_security = on
AS $$
DECLARE
    rank_min int;
    bad text[];
BEGIN
    rank_min := CASE lower(min_level) WHEN 'error' THEN 0 WHEN 'warn' THEN 1 WHEN 'info' THEN 2 END;
    IF rank_min IS NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'invalid_parameter_value',
            MESSAGE = format('assert_lint: unknown level %L', min_level),
            HINT = 'Use error, warn or info.';
    END IF;
    SELECT array_agg(format('%s %s %s', l.level, l.code, l.object)
                     ORDER BY l.level, l.code, l.object)
      INTO bad
      FROM tenantguard.lint() l
     WHERE CASE l.level WHEN 'error' THEN 0 WHEN 'warn' THEN 1 ELSE 2 END <= rank_min;
    IF bad IS NOT NULL THEN
        RAISE EXCEPTION USING
            ERRCODE = 'object_not_in_prerequisite_state',
            MESSAGE = format('%s unwaived tenantguard lint finding(s) at level %s or above: %s',
                             cardinality(bad), lower(min_level), array_to_string(bad, '; ')),
            HINT = 'SELECT * FROM tenantguard.lint() shows each fix; waive a deliberate one in tenantguard.lint_waivers.';
    END IF;
END;
$$;
COMMENT ON FUNCTION tenantguard.assert_lint(text) IS
  'Raise an error listing unwaived lint findings at min_level or above; for migrations and CI.';
