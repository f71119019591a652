-- Policy templates: admin override, time window, role-based access, shared read, extra policies,
-- combined on one table, read and written by four principals.
\set SHOW_CONTEXT never
\c - postgres
CREATE ROLE tg_support LOGIN NOSUPERUSER NOBYPASSRLS IN ROLE tenantguard_admin;
SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname = 'tenantguard_admin';
\c - tg_owner
CREATE TABLE tenants (id text PRIMARY KEY, business_type text, status text);
INSERT INTO tenants VALUES ('acme', 'retailer', 'active'), ('globex', 'wholesaler', 'active'),
                           ('initech', 'wholesaler', 'inactive');
GRANT SELECT ON tenants TO PUBLIC;
CREATE TABLE catalog (id int PRIMARY KEY, tenant_id text NOT NULL, created_at timestamptz NOT NULL, name text);
INSERT INTO catalog VALUES
  (1, 'acme',    now() - interval '1 day',    'acme new'),
  (2, 'acme',    now() - interval '200 days', 'acme old'),
  (3, 'globex',  now() - interval '1 day',    'globex new'),
  (4, 'globex',  now() - interval '200 days', 'globex old'),
  (5, 'initech', now() - interval '1 day',    'initech new');
GRANT SELECT, INSERT, UPDATE, DELETE ON catalog TO tg_app, tenantguard_admin;

-- The dry run is the exact script, and changes nothing.
SELECT tenantguard.protect('catalog',
         time_window => '90 days',
         app_roles => ARRAY['admin', 'finance_manager'],
         shared_read => $$tenant_id IN (SELECT id FROM tenants WHERE business_type = 'wholesaler' AND status = 'active')$$,
         dry_run => true);
SELECT count(*) AS policies_after_dry_run FROM pg_policy WHERE polrelid = 'catalog'::regclass;
SELECT tenantguard.protect('catalog',
         time_window => '90 days',
         app_roles => ARRAY['admin', 'finance_manager'],
         shared_read => $$tenant_id IN (SELECT id FROM tenants WHERE business_type = 'wholesaler' AND status = 'active')$$);
SELECT policy_name, template, command, kind, roles, using_expr, check_expr, present
  FROM tenantguard.policies('catalog');
-- Same arguments again: nothing changes.
SELECT tenantguard.protect('catalog',
         time_window => '90 days',
         app_roles => ARRAY['admin', 'finance_manager'],
         shared_read => $$tenant_id IN (SELECT id FROM tenants WHERE business_type = 'wholesaler' AND status = 'active')$$);
SELECT options FROM tenantguard.registry WHERE relid = 'catalog'::regclass;

-- Principal 1: tenant acme, application role finance_manager.
\c - tg_app
SET app.current_tenant_id = 'acme';
SET app.user_role = 'finance_manager';
SELECT id, name FROM catalog ORDER BY id;                  -- own new row + globex's shared new row
INSERT INTO catalog VALUES (6, 'acme', now(), 'acme added');
INSERT INTO catalog VALUES (7, 'globex', now(), 'planted in globex');
\echo sqlstate :LAST_ERROR_SQLSTATE
UPDATE catalog SET name = 'defaced' WHERE id = 3;           -- shared read is read-only: 0 rows
DELETE FROM catalog WHERE id = 3;                          -- 0 rows
UPDATE catalog SET tenant_id = 'globex' WHERE id = 1;       -- refused
\echo sqlstate :LAST_ERROR_SQLSTATE
-- Principal 2: tenant acme, application role clerk: the restrictive role check hides everything.
SET app.user_role = 'clerk';
SELECT id, name FROM catalog ORDER BY id;
RESET app.user_role;
SELECT count(*) AS no_role_sees FROM catalog;
-- Forging the seed's admin flag does nothing.
SET app.user_role = 'super_admin';
SELECT count(*) AS forged_admin_sees FROM catalog;
-- Principal 3: tenant globex, role admin.
SET app.current_tenant_id = 'globex';
SET app.user_role = 'admin';
SELECT id, name FROM catalog ORDER BY id;
-- Principal 4: a member of tenantguard_admin reads and writes every tenant (within the window,
-- and with an allowed application role: restrictive templates bind admins too).
\c - tg_support
SET app.user_role = 'admin';
SELECT id, tenant_id, name FROM catalog ORDER BY id;
UPDATE catalog SET name = name || ' (checked)' WHERE id IN (1, 3, 5);
INSERT INTO catalog VALUES (8, 'initech', now(), 'added by support');
RESET app.user_role;
SELECT count(*) AS admin_without_app_role FROM catalog;
\c - postgres
SELECT id, tenant_id, name FROM catalog ORDER BY id;

-- Re-protect with other arguments: the new set replaces the old atomically; a user's policy stays.
\c - tg_owner
CREATE POLICY my_own_policy ON catalog AS RESTRICTIVE FOR DELETE USING (id > 0);
SELECT tenantguard.protect('catalog', admin_role => NULL,
         extra_policies => '[{"name": "no_drafts", "command": "SELECT", "permissive": false, "using": "name NOT LIKE ''draft%''"}]');
SELECT policy_name, template, command, kind FROM tenantguard.policies('catalog');
SELECT polname FROM pg_policy WHERE polrelid = 'catalog'::regclass ORDER BY polname;
\c - tg_support
SELECT count(*) AS support_after_admin_removed FROM catalog;
\c - tg_app
SET app.current_tenant_id = 'acme';
SELECT id, name FROM catalog ORDER BY id;

-- Bad arguments: each a coded error, and nothing changed.
\c - tg_owner
CREATE TABLE snap AS
  SELECT polname, pg_get_expr(polqual, polrelid) AS q FROM pg_policy WHERE polrelid = 'catalog'::regclass;
SELECT tenantguard.protect('catalog', time_window => '30 days', time_column => 'updated');
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT tenantguard.protect('catalog', time_window => '30 days', time_column => 'name');
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT tenantguard.protect('catalog', time_window => NULL, time_column => 'created_at');
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT tenantguard.protect('catalog', time_window => '-5 days');
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT tenantguard.protect('catalog', shared_read => 'name');
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT tenantguard.protect('catalog', shared_read => 'tenant_id = ');
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT tenantguard.protect('catalog', shared_read => 'tenants.status = ''active''');
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT tenantguard.protect('catalog', shared_read => 'no_such_column = 1');
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT tenantguard.protect('catalog', shared_read => 'true) WITH CHECK (true');
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT tenantguard.protect('catalog', shared_read => 'true); DROP TABLE tenants; SELECT (true');
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT tenantguard.protect('catalog', shared_read => 'true --');
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT tenantguard.protect('catalog', extra_policies => '[{"name": "x", "using": "true) WITH CHECK (true"}]');
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT tenantguard.protect('catalog', extra_policies => '[{"name": "x", "using": "true); DROP TABLE tenants; SELECT (1"}]');
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT tenantguard.protect('catalog', admin_role => 'no_such_role');
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT tenantguard.protect('catalog', app_roles => ARRAY[]::text[]);
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT tenantguard.protect('catalog', app_roles => ARRAY['admin'], app_roles_commands => ARRAY['TRUNCATE']);
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT tenantguard.protect('catalog', extra_policies => '[{"name": "x", "command": "INSERT", "using": "true"}]');
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT tenantguard.protect('catalog', extra_policies => '{"name": "x"}');
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT tenantguard.protect('catalog', extra_policies => '[{"name": "Bad Name", "using": "true"}]');
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT tenantguard.protect('catalog', extra_policies => '[{"name": "x", "permissive": true, "as": "restrictive", "using": "true"}]');
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT count(*) = (SELECT count(*) FROM snap)
       AND NOT EXISTS (SELECT polname, pg_get_expr(polqual, polrelid) FROM pg_policy
                        WHERE polrelid = 'catalog'::regclass EXCEPT SELECT * FROM snap) AS unchanged
  FROM pg_policy WHERE polrelid = 'catalog'::regclass;
SELECT to_regclass('tenants') IS NOT NULL AS tenants_still_there;
DROP TABLE snap;
-- extra_policies may say restrictive the way CREATE POLICY does, and with_check for check.
SELECT tenantguard.protect('catalog', dry_run => true, extra_policies =>
  '[{"name": "r1", "as": "RESTRICTIVE", "command": "UPDATE", "using": "true", "with_check": "name <> ''''"},
    {"name": "r2", "restrictive": true, "command": "SELECT", "using": "true"}]') ~ 'AS RESTRICTIVE FOR UPDATE.*AS RESTRICTIVE FOR SELECT' AS aliases_understood;
-- time_column defaults to created_at.
SELECT tenantguard.protect('catalog', time_window => '30 days');
SELECT policy_name, using_expr FROM tenantguard.policies('catalog') WHERE template = 'time_window';

-- A time window on a date column, and role-based access on writes.
CREATE TABLE ledger (id int, tenant_id text, booked date, amount numeric);
INSERT INTO ledger VALUES (1, 'acme', current_date, 10), (2, 'acme', current_date - 400, 20);
GRANT SELECT, INSERT, UPDATE, DELETE ON ledger TO tg_app;
SELECT tenantguard.protect('ledger', time_window => '1 year', time_column => 'booked',
         app_roles => ARRAY['finance_manager'], app_roles_commands => ARRAY['select', 'insert', 'update', 'delete']);
\c - tg_app
SET app.current_tenant_id = 'acme';
SET app.user_role = 'finance_manager';
SELECT id, amount FROM ledger ORDER BY id;
INSERT INTO ledger VALUES (3, 'acme', current_date, 30);
SET app.user_role = 'clerk';
INSERT INTO ledger VALUES (4, 'acme', current_date, 40);
\echo sqlstate :LAST_ERROR_SQLSTATE
DELETE FROM ledger;
\c - postgres
SELECT id, amount FROM ledger ORDER BY id;

-- Round trip with templates: protect -> unprotect leaves pg_policy, flags and registry as before.
\c - tg_owner
CREATE TABLE rt (id int, tenant_id text, created_at timestamptz);
CREATE POLICY mine ON rt USING (true);
CREATE TABLE rt_before AS
  SELECT (SELECT array_agg(polname ORDER BY polname) FROM pg_policy WHERE polrelid = 'rt'::regclass) AS pols,
         (SELECT (relrowsecurity, relforcerowsecurity)::text FROM pg_class WHERE oid = 'rt'::regclass) AS flags,
         (SELECT count(*) FROM tenantguard.registry) AS reg;
SELECT tenantguard.protect('rt', time_window => '7 days', app_roles => ARRAY['a'], shared_read => 'id < 0');
SELECT tenantguard.unprotect_sql('rt');
SELECT tenantguard.unprotect('rt');
SELECT b.pols = (SELECT array_agg(polname ORDER BY polname) FROM pg_policy WHERE polrelid = 'rt'::regclass) AS same_policies,
       b.flags = (SELECT (relrowsecurity, relforcerowsecurity)::text FROM pg_class WHERE oid = 'rt'::regclass) AS same_flags,
       b.reg = (SELECT count(*) FROM tenantguard.registry) AS same_registry
  FROM rt_before b;
DROP TABLE rt_before;

-- A hand-written admin check on a client-settable setting is flagged by coverage().
CREATE POLICY admin_override_policy ON rt
  USING (tenant_id = current_setting('app.current_tenant_id') OR current_setting('app.user_role', true) = 'super_admin');
SELECT table_name, warnings FROM tenantguard.coverage() WHERE table_name = 'rt';
