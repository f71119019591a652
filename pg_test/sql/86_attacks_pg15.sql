-- min_version: 15
-- Attacks and checks on features PostgreSQL 15 added: MERGE aimed at another tenant's rows,
-- views WITH (security_invoker), and lint()'s fix for a view without it. Runs after
-- 80_attacks.sql, on its tables (globex's rows must stay exactly as they were).
\set SHOW_CONTEXT never
\c - tg_app
SET search_path = atk;
SET app.current_tenant_id = 'acme';
-- MERGE matching another tenant's rows: they are not visible, so nothing matches them
MERGE INTO accounts a USING (VALUES ('globex', 3)) v(t, id) ON a.tenant_id = v.t AND a.id = v.id
  WHEN MATCHED THEN UPDATE SET secret = 'merged'
  WHEN NOT MATCHED THEN DO NOTHING;
MERGE INTO accounts a USING (VALUES (3, 'gus')) v(id, name) ON a.id = v.id AND a.name = v.name
  WHEN MATCHED THEN DELETE
  WHEN NOT MATCHED THEN INSERT VALUES ('globex', 3, 'merged-in', 'x');
\echo sqlstate :LAST_ERROR_SQLSTATE
-- MERGE inserting into acme's own tenant works; updating acme's row works
MERGE INTO accounts a USING (VALUES ('acme', 50)) v(t, id) ON a.tenant_id = v.t AND a.id = v.id
  WHEN NOT MATCHED THEN INSERT VALUES ('acme', 50, 'merged-own', 'x');
MERGE INTO accounts a USING (VALUES ('acme', 50)) v(t, id) ON a.tenant_id = v.t AND a.id = v.id
  WHEN MATCHED THEN UPDATE SET tenant_id = 'globex';
\echo sqlstate :LAST_ERROR_SQLSTATE
-- A view with security_invoker reads as the caller: only acme's rows
\c - tg_owner
SET search_path = atk;
CREATE VIEW invoker_view WITH (security_invoker = true) AS SELECT tenant_id, id, secret FROM accounts;
GRANT SELECT ON invoker_view TO tg_app;
\c - tg_app
SET search_path = atk;
SET app.current_tenant_id = 'acme';
SELECT tenant_id, id FROM invoker_view ORDER BY id;
\c - postgres
SELECT * FROM atk.globex_state;
-- lint(): a view without security_invoker is found, its fix applied, the finding gone
SET tenantguard.auto_protect = off;
CREATE SCHEMA lnt15 AUTHORIZATION tg_owner;
CREATE TABLE lnt15.t (id int, tenant_id int NOT NULL);
CREATE INDEX ON lnt15.t (tenant_id);
SELECT tenantguard.protect('lnt15.t') IS NOT NULL AS protected;
CREATE VIEW lnt15.v AS SELECT * FROM lnt15.t;
SELECT level, code, object, fix FROM tenantguard.lint() WHERE object = 'lnt15.v';
SELECT fix FROM tenantguard.lint() WHERE object = 'lnt15.v' \gexec
SELECT count(*) AS left_over FROM tenantguard.lint() WHERE object = 'lnt15.v';
DROP SCHEMA lnt15 CASCADE;
