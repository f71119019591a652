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
