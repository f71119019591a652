-- After a lifecycle step (ALTER EXTENSION tenantguard UPDATE, pg_upgrade to a newer major, a dump
-- restored on a newer major), on the database populate.sql filled: everything is intact and
-- working. Run with pg_regress --use-existing; the same expected output for every step.
\set SHOW_CONTEXT never
SELECT extversion FROM pg_extension WHERE extname = 'tenantguard' \gset
SELECT :'extversion' = (SELECT default_version FROM pg_available_extensions WHERE name = 'tenantguard')
       AS current_version;
-- The registry: its keys (regclass) name the tables; options and tenant columns as protected.
SELECT relid, tenant_column, options ->> 'tenant_setting' AS setting, options ->> 'audit' AS audit,
       jsonb_array_length(policies) AS policies, triggers
  FROM tenantguard.registry ORDER BY relid::text;
SELECT relid, reason FROM tenantguard.exemptions;
SELECT code, object, reason FROM tenantguard.lint_waivers;
-- Row level security and tenantguard's policies, as PostgreSQL has them.
SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, count(p.polname) AS policies
  FROM pg_class c LEFT JOIN pg_policy p ON p.polrelid = c.oid
 WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
 GROUP BY 1, 2, 3 ORDER BY 1;
SELECT table_name, status FROM tenantguard.coverage() ORDER BY table_name;
SELECT tenantguard.assert_coverage();
-- The audit rows, as a superuser sees them.
SELECT table_name, op, tenant_id, record_key, app_user FROM tenantguard.audit_log ORDER BY id;
SELECT count(*) AS slow_query_log_rows FROM tenantguard.slow_query_log
 WHERE query LIKE '%lifecycle_slow_query%';

-- Isolation, as the application role.
SET ROLE lc_app;
SET app.user_role = 'clerk';
SET app.current_tenant_id = 'a0000000-0000-0000-0000-00000000000a';
SELECT id, v FROM k_uuid ORDER BY id;
SET app.current_tenant_id = 'acme';
SELECT 'k_text' AS t, count(*) FROM k_text UNION ALL SELECT 't_templates', count(*) FROM t_templates
UNION ALL SELECT 'events', count(*) FROM events UNION ALL SELECT 'no_audit', count(*) FROM no_audit;
SET app.current_tenant_id = '007';
SELECT id, v FROM k_int ORDER BY id;
-- Attacks: another tenant's rows are neither read, written, moved nor deleted.
SET app.current_tenant_id = 'acme';
INSERT INTO k_text VALUES (10, 'globex', 'planted');
\echo sqlstate :LAST_ERROR_SQLSTATE
UPDATE k_text SET v = 'stolen' WHERE tenant_id = 'globex';
UPDATE k_text SET tenant_id = 'globex' WHERE id = 1;
\echo sqlstate :LAST_ERROR_SQLSTATE
DELETE FROM k_text WHERE tenant_id = 'globex';
TRUNCATE k_text;
\echo sqlstate :LAST_ERROR_SQLSTATE
COPY (SELECT tenant_id, id FROM k_text ORDER BY id) TO STDOUT;
SELECT id FROM t_templates ORDER BY id;   -- globex's shared row is readable, not writable
UPDATE t_templates SET secret = 'x' WHERE id = 3;
-- The audit trail a tenant sees: its own rows, the excluded column never.
SELECT table_name, op, record_key, (new_values ? 'secret') AS secret_shown
  FROM tenantguard.audit_log ORDER BY id;
SET app.current_tenant_id = '';
SELECT count(*) AS no_tenant_rows FROM k_uuid;
RESET ROLE;
RESET app.user_role;
RESET app.current_tenant_id;
SELECT tenant_id, id, v FROM k_text ORDER BY id;

-- The guard still refuses; auto-protect still protects; protect() finds nothing to change.
ALTER TABLE k_text DISABLE ROW LEVEL SECURITY;
\echo sqlstate :LAST_ERROR_SQLSTATE
DROP POLICY tenantguard_tenant_select ON k_uuid;
\echo sqlstate :LAST_ERROR_SQLSTATE
SET tenantguard.auto_protect = on;
SET ROLE lc_owner;
CREATE TABLE after_lifecycle (id int PRIMARY KEY, tenant_id text NOT NULL);
SELECT tenantguard.protect('k_uuid');
SELECT tenantguard.protect('events', tenant_column => 'org_id');
RESET ROLE;
SELECT table_name, status FROM tenantguard.coverage() WHERE table_name = 'after_lifecycle';
-- New writes are audited.
SET ROLE lc_app;
SET app.current_tenant_id = 'globex';
INSERT INTO k_text VALUES (4, 'globex', 'after');
RESET ROLE;
SELECT op, tenant_id, record_key FROM tenantguard.audit_log WHERE table_name = 'k_text' ORDER BY id DESC LIMIT 1;
