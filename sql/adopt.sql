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
