-- The visibility matrix: what each kind of reader sees of every tenantguard object that returns
-- data. Readers: the application role of tenant acme (SELECT on the table), a role of acme without
-- privileges on the table, a role of acme with SELECT on some columns, the application role as
-- another tenant (globex) and with no tenant set, the table's owner (tenant acme), an admin, and
-- a pg_read_all_stats member (tenant acme, SELECT on the table). Every object shows a reader no
-- more than it could read directly: table rows and columns through the table's privileges and
-- policies, other roles' statement text only to superusers, admins and pg_read_all_stats (as
-- pg_stat_statements does), and catalog-like metadata (registry, exemptions, waivers, coverage,
-- lint, policies) exactly as the catalogs it is made of show it to everyone.
\set SHOW_CONTEXT never
\c - postgres
-- This file protects its tables itself (auto-protect is back to its default at the end).
ALTER DATABASE regression SET tenantguard.auto_protect = off;
CREATE SCHEMA mx AUTHORIZATION tg_owner;
CREATE ROLE mx_clerk LOGIN NOSUPERUSER NOBYPASSRLS;
CREATE ROLE mx_partial LOGIN NOSUPERUSER NOBYPASSRLS;
CREATE ROLE mx_admin LOGIN NOSUPERUSER NOBYPASSRLS IN ROLE tenantguard_admin;
CREATE ROLE mx_stats LOGIN NOSUPERUSER NOBYPASSRLS IN ROLE pg_read_all_stats;
GRANT USAGE ON SCHEMA mx TO PUBLIC;
\c - tg_owner
CREATE TABLE mx.notes (id int PRIMARY KEY, tenant_id text NOT NULL, body text, secret text);
SELECT tenantguard.protect('mx.notes') IS NOT NULL AS protected;
CREATE TABLE mx.lookup (id int, tenant_id text);
SELECT tenantguard.exempt('mx.lookup', 'shared reference data') IS NOT NULL AS exempted;
GRANT SELECT, INSERT, UPDATE ON mx.notes TO tg_app, mx_stats;
GRANT SELECT (id, tenant_id, body) ON mx.notes TO mx_partial;
\c - postgres
INSERT INTO tenantguard.lint_waivers (code, object, reason) VALUES ('no_tenant_index', 'mx.lookup', 'tiny');
-- Rows of two tenants, changed by the application role; slow statements by two roles of acme and
-- one of globex, each with a literal only that role should be able to read back.
SELECT tenantguard.reset_slow_queries() >= 0 AS reset;
ALTER ROLE tg_app SET tenantguard.slow_query_ms = 20;
ALTER ROLE mx_stats SET tenantguard.slow_query_ms = 20;
\c - tg_app
SET app.user_id = 'mx-producer';
SET app.current_tenant_id = 'acme';
INSERT INTO mx.notes VALUES (1, 'acme', 'a1', 'acme-secret-1'), (2, 'acme', 'a2', 'acme-secret-2');
UPDATE mx.notes SET secret = 'acme-secret-1b', body = 'a1b' WHERE id = 1;
SELECT pg_sleep(0.03), 'app literal acme' AS literal;
SET app.current_tenant_id = 'globex';
INSERT INTO mx.notes VALUES (3, 'globex', 'g1', 'globex-secret');
SELECT pg_sleep(0.03), 'app literal globex' AS literal;
\c - mx_stats
SET app.user_id = 'mx-producer';
SET app.current_tenant_id = 'acme';
SELECT pg_sleep(0.03), 'stats literal acme' AS literal;
\c - postgres
ALTER ROLE tg_app RESET tenantguard.slow_query_ms;
ALTER ROLE mx_stats RESET tenantguard.slow_query_ms;
SELECT tenantguard.flush_slow_queries() >= 3 AS flushed;
-- What everyone may read of the catalogs the metadata objects are made of.
CREATE TABLE public.mx_catalog AS
  SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           WHERE n.nspname = 'mx' AND c.relkind = 'r') AS tables,
         (SELECT count(*) FROM pg_policies WHERE schemaname = 'mx') AS policies;
GRANT SELECT ON public.mx_catalog TO PUBLIC;

-- One row per object: a summary of what the calling role sees of it.
CREATE FUNCTION public.mx_sees() RETURNS TABLE (object text, sees text)
LANGUAGE plpgsql AS $$
BEGIN
  RETURN QUERY
  SELECT 'audit_log', format('%s rows, tenants {%s}, secret shown: %s, keys shown: %s',
                             count(*), string_agg(DISTINCT a.tenant_id, ','),
                             COALESCE(bool_or(a.old_values ? 'secret' OR a.new_values ? 'secret'
                                              OR 'secret' = ANY (a.changed_columns)), false),
                             count(a.record_key))
    FROM tenantguard.audit_log a WHERE a.table_name = 'notes';
  RETURN QUERY
  SELECT 'slow_queries', format('%s rows, tenants {%s}, texts shown: {%s}', count(*),
                                string_agg(DISTINCT q.tenant_id, ','),
                                string_agg(substring(q.query FROM '''([a-z ]+)'''), ',' ORDER BY q.query))
    FROM tenantguard.slow_queries q WHERE q.app_user = 'mx-producer';
  RETURN QUERY
  SELECT 'slow_queries()', format('%s rows, %s texts', count(*), count(q.query))
    FROM tenantguard.slow_queries() q WHERE q.app_user = 'mx-producer';
  RETURN QUERY
  SELECT 'slow_query_log', format('%s rows, tenants {%s}, texts shown: {%s}', count(*),
                                  string_agg(DISTINCT l.tenant_id, ','),
                                  string_agg(substring(l.query FROM '''([a-z ]+)'''), ',' ORDER BY l.query))
    FROM tenantguard.slow_query_log l WHERE l.app_user = 'mx-producer';
  RETURN QUERY
  SELECT 'registry', CASE WHEN count(*) = (SELECT tables - 1 FROM public.mx_catalog)
                          THEN 'every protected table, as pg_class shows it' ELSE count(*)::text END
    FROM tenantguard.registry r WHERE r.relid::text LIKE 'mx.%';
  RETURN QUERY
  SELECT 'exemptions', string_agg(format('%s: %s', x.relid, x.reason), ',')
    FROM tenantguard.exemptions x WHERE x.relid::text LIKE 'mx.%';
  RETURN QUERY
  SELECT 'lint_waivers', string_agg(format('%s %s', w.code, w.object), ',')
    FROM tenantguard.lint_waivers w WHERE w.object LIKE 'mx.%';
  RETURN QUERY
  SELECT 'coverage()', string_agg(format('%s %s', c.table_name, c.status), ', ' ORDER BY c.table_name)
    FROM tenantguard.coverage() c WHERE c.schema_name = 'mx';
  RETURN QUERY
  SELECT 'lint()', format('%s findings on mx', count(*))
    FROM tenantguard.lint() l WHERE l.object LIKE '%mx.%';
  RETURN QUERY
  SELECT 'policies()', CASE WHEN count(*) = (SELECT policies FROM public.mx_catalog)
                            THEN 'every policy, as pg_policies shows it' ELSE count(*)::text END
    FROM tenantguard.policies('mx.notes');
END $$;

\c - tg_app
SET app.current_tenant_id = 'acme';
\echo '== the application role of tenant acme (SELECT on the table)'
SELECT * FROM public.mx_sees();
\c - mx_clerk
SET app.current_tenant_id = 'acme';
\echo '== another role of tenant acme, without privileges on the table'
SELECT * FROM public.mx_sees();
\c - mx_partial
SET app.current_tenant_id = 'acme';
\echo '== a role of tenant acme with SELECT on some columns (not secret)'
SELECT * FROM public.mx_sees();
\c - tg_app
SET app.current_tenant_id = 'globex';
\echo '== another tenant (globex)'
SELECT * FROM public.mx_sees();
\c - tg_app
\echo '== no tenant set'
SELECT * FROM public.mx_sees();
\c - tg_owner
SET app.current_tenant_id = 'acme';
\echo '== the table owner (not a superuser), tenant acme'
SELECT * FROM public.mx_sees();
\c - mx_admin
\echo '== an admin (member of tenantguard_admin), no tenant set'
SELECT * FROM public.mx_sees();
\c - mx_stats
SET app.current_tenant_id = 'acme';
\echo '== a pg_read_all_stats member of tenant acme (SELECT on the table)'
SELECT * FROM public.mx_sees();
\c - postgres
DROP FUNCTION public.mx_sees();
DROP TABLE public.mx_catalog;
\c - postgres
ALTER DATABASE regression RESET tenantguard.auto_protect;
