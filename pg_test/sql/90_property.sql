-- Property-based isolation test. A seeded random workload (2,000 statements drawn from the shapes
-- of the attack suite) runs against a protected table as three roles (application, non-superuser
-- owner, admin) and five tenants. Each statement is mirrored on a model table without row level
-- security, where visibility is written out explicitly: a role sees and writes the rows of its
-- tenant; the admin sees and writes every row. The outcome (ok or SQLSTATE) must match, and after
-- every statement each tenant's visible rows, and the admin's, must equal the model's.
-- Change the seed below to explore; a failure names the statement and reproduces from the seed.
\set SHOW_CONTEXT never
\c - postgres
CREATE SCHEMA prop AUTHORIZATION tg_owner;
GRANT USAGE ON SCHEMA prop TO tg_app, tenantguard_admin;
SET ROLE tg_owner;
CREATE TABLE prop.items (tenant_id int NOT NULL, id int NOT NULL, v int NOT NULL,
                         PRIMARY KEY (tenant_id, id));
RESET ROLE;
GRANT SELECT, INSERT, UPDATE, DELETE ON prop.items TO tg_app, tenantguard_admin;
CREATE TABLE prop.model (tenant_id int NOT NULL, id int NOT NULL, v int NOT NULL,
                         PRIMARY KEY (tenant_id, id));
INSERT INTO prop.items SELECT t, k, t * 100 + k FROM generate_series(1, 5) t, generate_series(1, 10) k;
INSERT INTO prop.model SELECT * FROM prop.items;
SELECT status FROM tenantguard.coverage() WHERE schema_name = 'prop';
CREATE TABLE prop.result (seed float8, statements int, divergences int, outcomes jsonb, first_divergence text);

DO $$
DECLARE
    seed constant float8 := 0.4242;
    n constant int := 2000;
    roles constant text[] := ARRAY['tg_app', 'tg_owner', 'tg_support'];
    r text; admin boolean; t int; t2 int; k int; val int; shape int;
    stmt text; model_stmt text; predicted text; real_out text; model_out text;
    vis text; got text; want text;
    divergences int := 0; first_bad text; outcomes jsonb := '{}';
BEGIN
    PERFORM setseed(seed);
    FOR i IN 1..n LOOP
        r := roles[1 + floor(random() * 3)::int];
        admin := r = 'tg_support';
        t := 1 + floor(random() * 5)::int;
        t2 := 1 + floor(random() * 5)::int;
        k := 1 + floor(random() * 12)::int;
        val := floor(random() * 1000)::int;
        shape := floor(random() * 7)::int;
        vis := CASE WHEN admin THEN 'true' ELSE format('tenant_id = %s', t) END;
        predicted := NULL;
        CASE shape
        WHEN 0 THEN  -- INSERT, possibly into another tenant
            stmt := format('INSERT INTO prop.items VALUES (%s, %s, %s)', t2, k, val);
            model_stmt := format('INSERT INTO prop.model VALUES (%s, %s, %s)', t2, k, val);
            IF NOT admin AND t2 <> t THEN predicted := '42501'; END IF;
        WHEN 1 THEN  -- UPDATE of a value
            stmt := format('UPDATE prop.items SET v = v + 1 WHERE id = %s', k);
            model_stmt := format('UPDATE prop.model SET v = v + 1 WHERE id = %s AND %s', k, vis);
        WHEN 2 THEN  -- UPDATE moving rows to a tenant
            stmt := format('UPDATE prop.items SET tenant_id = %s WHERE id = %s', t2, k);
            model_stmt := format('UPDATE prop.model SET tenant_id = %s WHERE id = %s AND %s', t2, k, vis);
            IF NOT admin AND t2 <> t
               AND EXISTS (SELECT 1 FROM prop.model m WHERE m.id = k AND m.tenant_id = t) THEN
                predicted := '42501';
            END IF;
        WHEN 3 THEN  -- DELETE
            stmt := format('DELETE FROM prop.items WHERE id = %s', k);
            model_stmt := format('DELETE FROM prop.model WHERE id = %s AND %s', k, vis);
        WHEN 4 THEN  -- INSERT ... ON CONFLICT DO UPDATE aimed at a tenant's key
            stmt := format('INSERT INTO prop.items VALUES (%s, %s, %s) ON CONFLICT (tenant_id, id) '
                           'DO UPDATE SET v = excluded.v', t2, k, val);
            model_stmt := format('INSERT INTO prop.model VALUES (%s, %s, %s) ON CONFLICT (tenant_id, id) '
                                 'DO UPDATE SET v = excluded.v', t2, k, val);
            IF NOT admin AND t2 <> t THEN predicted := '42501'; END IF;
        WHEN 5 THEN  -- UPDATE ... FROM the same protected table
            stmt := format('UPDATE prop.items i SET v = i.v + o.v FROM prop.items o '
                           'WHERE o.tenant_id = i.tenant_id AND o.id = i.id + 1 AND i.id = %s', k);
            model_stmt := format('UPDATE prop.model i SET v = i.v + o.v FROM prop.model o '
                                 'WHERE o.tenant_id = i.tenant_id AND o.id = i.id + 1 AND i.id = %s '
                                 'AND %s', k,
                                 CASE WHEN admin THEN 'true'
                                      ELSE format('i.tenant_id = %s AND o.tenant_id = %s', t, t) END);
        ELSE         -- INSERT ... SELECT from the protected table
            stmt := format('INSERT INTO prop.items SELECT tenant_id, id %% 12 + 1, v FROM prop.items '
                           'WHERE id = %s ON CONFLICT DO NOTHING', k);
            model_stmt := format('INSERT INTO prop.model SELECT tenant_id, id %% 12 + 1, v FROM prop.model '
                                 'WHERE id = %s AND %s ON CONFLICT DO NOTHING', k, vis);
        END CASE;

        BEGIN
            EXECUTE format('SET ROLE %I', r);
            PERFORM set_config('app.current_tenant_id', t::text, true);
            EXECUTE stmt;
            real_out := 'ok';
        EXCEPTION WHEN OTHERS THEN
            real_out := SQLSTATE;
        END;
        RESET ROLE;
        BEGIN
            IF predicted IS NOT NULL THEN
                model_out := predicted;
            ELSE
                EXECUTE model_stmt;
                model_out := 'ok';
            END IF;
        EXCEPTION WHEN OTHERS THEN
            model_out := SQLSTATE;
        END;
        outcomes := jsonb_set(outcomes, ARRAY[real_out],
                              to_jsonb(COALESCE((outcomes ->> real_out)::int, 0) + 1));
        IF real_out <> model_out THEN
            divergences := divergences + 1;
            first_bad := COALESCE(first_bad, format('#%s %s as %s, tenant %s: got %s, model %s',
                                                    i, stmt, r, t, real_out, model_out));
        END IF;

        -- Every tenant, as the application role and as the owner, sees exactly its model rows;
        -- the admin sees all of them.
        FOR s IN 1..5 LOOP
            FOREACH r IN ARRAY ARRAY['tg_app', 'tg_owner'] LOOP
                EXECUTE format('SET ROLE %I', r);
                PERFORM set_config('app.current_tenant_id', s::text, true);
                SELECT string_agg(format('%s/%s/%s', tenant_id, id, v), ',' ORDER BY tenant_id, id)
                  INTO got FROM prop.items;
                RESET ROLE;
                SELECT string_agg(format('%s/%s/%s', tenant_id, id, v), ',' ORDER BY tenant_id, id)
                  INTO want FROM prop.model WHERE tenant_id = s;
                IF got IS DISTINCT FROM want THEN
                    divergences := divergences + 1;
                    first_bad := COALESCE(first_bad, format('#%s %s: tenant %s as %s sees %s, model %s',
                                                            i, stmt, s, r, got, want));
                END IF;
            END LOOP;
        END LOOP;
        SET ROLE tg_support;
        PERFORM set_config('app.current_tenant_id', '', true);
        SELECT string_agg(format('%s/%s/%s', tenant_id, id, v), ',' ORDER BY tenant_id, id) INTO got FROM prop.items;
        RESET ROLE;
        SELECT string_agg(format('%s/%s/%s', tenant_id, id, v), ',' ORDER BY tenant_id, id) INTO want FROM prop.model;
        IF got IS DISTINCT FROM want THEN
            divergences := divergences + 1;
            first_bad := COALESCE(first_bad, format('#%s %s: admin sees %s, model %s', i, stmt, got, want));
        END IF;
    END LOOP;
    INSERT INTO prop.result VALUES (seed, n, divergences, outcomes, first_bad);
END
$$;
SELECT seed, statements, divergences, first_divergence FROM prop.result;
-- The workload exercised both sides: statements that succeeded and ones row level security refused.
SELECT (outcomes ->> 'ok')::int > 500 AS many_ok, (outcomes ->> '42501')::int > 100 AS many_refused,
       (SELECT count(*) FROM prop.items) = (SELECT count(*) FROM prop.model) AS same_row_count
  FROM prop.result;
DROP SCHEMA prop CASCADE;
