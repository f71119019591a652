-- Proving and explaining isolation: test_isolation() and assert_isolation(), explain_access(),
-- bypass_report() and assert_enforced(), export_sql() applied where tenantguard is not installed,
-- coverage_sql(). Each would fail if the function lied: a broken policy, a bypassing role and a
-- view are planted.
\set SHOW_CONTEXT never
\c - tg_owner
CREATE SCHEMA prove;
GRANT USAGE ON SCHEMA prove TO tg_app;
SET search_path = prove;
CREATE TABLE invoices (id int PRIMARY KEY, tenant_id uuid NOT NULL, amount numeric NOT NULL,
                       issued date NOT NULL, memo text, CHECK (amount >= 0));
CREATE TABLE notes (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, tenant_id text NOT NULL,
                    body text NOT NULL DEFAULT '');
CREATE TABLE lines (id int PRIMARY KEY, tenant_id uuid NOT NULL,
                    invoice_id int NOT NULL REFERENCES invoices (id));
CREATE TABLE parts (id int PRIMARY KEY, tenant_id uuid NOT NULL,
                    parent_id int NOT NULL REFERENCES parts (id));
-- (Auto-protect may have protected them already; protect() is idempotent.)
SELECT tenantguard.protect(t) IS NOT NULL AS protected FROM unnest(ARRAY['invoices', 'notes', 'lines', 'parts']) t;
GRANT SELECT, INSERT, UPDATE, DELETE ON invoices, notes, lines, parts TO tg_app;
\c - postgres
INSERT INTO prove.invoices VALUES (1, 'aaaaaaaa-0000-0000-0000-000000000001', 10, '2026-01-01', 'a');
\c - tg_app
SET search_path = prove;

-- 1. test_isolation() as the application role: every check passes on the three tables (lines
-- gets a parent invoice of each tenant first); the table whose NOT NULL column must reference a
-- row of itself is skipped, saying why.
SELECT table_name, check_name, ok FROM tenantguard.test_isolation() WHERE table_name LIKE 'prove.%'
 ORDER BY table_name, check_name;
SELECT table_name, detail FROM tenantguard.test_isolation('prove.parts');
SELECT tenantguard.assert_isolation('prove.invoices');
-- Nothing stayed behind (rows, audit rows).
\c - postgres
SELECT (SELECT count(*) FROM prove.invoices) AS invoices, (SELECT count(*) FROM prove.notes) AS notes,
       (SELECT count(*) FROM tenantguard._audit_log WHERE tenant_id LIKE 'tg-test-%') AS audit_rows_left;
-- As a superuser the same checks fail (row level security does not apply), and say so.
SELECT check_name, ok, detail FROM tenantguard.test_isolation('prove.notes')
 WHERE check_name IN ('rls_applies', 'read_other');
SELECT tenantguard.assert_isolation('prove.notes');
\echo sqlstate :LAST_ERROR_SQLSTATE
-- A planted permissive policy that lets every row through: read_other fails for the app role.
CREATE POLICY leaky ON prove.notes FOR SELECT USING (true);
SELECT check_name, ok FROM tenantguard.test_isolation('prove.notes', 'tg_app')
 WHERE NOT ok OR check_name = 'read_other';
SELECT tenantguard.assert_isolation('prove.notes', 'tg_app');
\echo sqlstate :LAST_ERROR_SQLSTATE
DROP POLICY leaky ON prove.notes;
-- Testing as a role the session cannot become is refused.
\c - tg_other
SELECT * FROM tenantguard.test_isolation(NULL, 'tg_app');
\echo sqlstate :LAST_ERROR_SQLSTATE

-- 2. explain_access(): why a row is (not) visible.
\c - tg_app
SET search_path = prove;
SET app.current_tenant_id = 'aaaaaaaa-0000-0000-0000-000000000001';
SELECT step, policy, kind, clause, verdict FROM tenantguard.explain_access('invoices', '{"id": 1}');
SELECT step, policy, clause, verdict, detail FROM tenantguard.explain_access('invoices', '{"id": 1}', 'update')
 WHERE step = 'answer' OR clause = 'WITH CHECK';
-- A proposed INSERT of another tenant's row: refused, and by which policy.
SELECT step, policy, verdict, detail FROM tenantguard.explain_access('invoices',
  '{"id": 2, "tenant_id": "bbbbbbbb-0000-0000-0000-000000000002", "amount": 1, "issued": "2026-01-02"}', 'INSERT');
-- Another tenant learns only that the row is not visible: no policy, no verdict.
SET app.current_tenant_id = 'bbbbbbbb-0000-0000-0000-000000000002';
SELECT step, policy, verdict, detail FROM tenantguard.explain_access('invoices', '{"id": 1}');
SELECT step, verdict, detail FROM tenantguard.explain_access('invoices', '{"id": 999}');
SELECT * FROM tenantguard.explain_access('invoices', '{"id": 1}', 'MERGE');
\echo sqlstate :LAST_ERROR_SQLSTATE
RESET app.current_tenant_id;
-- For a superuser row level security does not apply at all.
\c - postgres
SELECT step, verdict, detail FROM tenantguard.explain_access('prove.invoices', '{"id": 1}');

-- 3. Who bypasses row level security: a planted BYPASSRLS login role, and a role that can SET
-- ROLE to it.
CREATE ROLE prove_bypass LOGIN BYPASSRLS;
CREATE ROLE prove_member LOGIN IN ROLE prove_bypass;
GRANT SELECT ON prove.invoices TO prove_bypass;
SELECT role_name, how, via, can_login, protected_tables_with_privileges > 0 AS privileged
  FROM tenantguard.bypass_report() WHERE role_name LIKE 'prove_%' ORDER BY 1;
-- assert_enforced(): for test suites, first thing.
SELECT tenantguard.assert_enforced();
\echo sqlstate :LAST_ERROR_SQLSTATE
\c - prove_member
SELECT tenantguard.assert_enforced();
\echo sqlstate :LAST_ERROR_SQLSTATE
SET ROLE prove_bypass;
SELECT tenantguard.assert_enforced();
\echo sqlstate :LAST_ERROR_SQLSTATE
\c - tg_app
SELECT tenantguard.assert_enforced();
\c - postgres
DROP OWNED BY prove_bypass;
DROP ROLE prove_member;
DROP ROLE prove_bypass;

-- 4. export_sql(): the protection as plain SQL, applied to a database where tenantguard is not
-- installed; isolation and some of the attack suite there; coverage_sql() reports it the same.
SELECT tenantguard.export_sql('prove.invoices') AS export \gset
SELECT position('tenantguard.' IN :'export') AS mentions_tenantguard_functions;
SELECT tenantguard.coverage_sql() AS coverage_query \gset
CREATE DATABASE tg_portable;
\c tg_portable postgres
SELECT count(*) AS tenantguard_installed FROM pg_extension WHERE extname = 'tenantguard';
-- (The admin policy names tenantguard_admin, a role of this cluster: roles are cluster-wide.)
CREATE SCHEMA prove;
GRANT USAGE ON SCHEMA prove TO tg_app;
CREATE TABLE prove.invoices (id int PRIMARY KEY, tenant_id uuid NOT NULL, amount numeric NOT NULL,
                             issued date NOT NULL, memo text);
CREATE TABLE prove.plain (id int, tenant_id uuid);
GRANT ALL ON prove.invoices TO tg_app;
INSERT INTO prove.invoices VALUES (1, 'aaaaaaaa-0000-0000-0000-000000000001', 10, '2026-01-01', 'acme'),
                                  (2, 'bbbbbbbb-0000-0000-0000-000000000002', 20, '2026-01-01', 'globex');
:export
:coverage_query;
\c tg_portable tg_app
SET search_path = prove;
SELECT count(*) AS no_tenant FROM invoices;
SET app.current_tenant_id = 'aaaaaaaa-0000-0000-0000-000000000001';
SELECT id, memo FROM invoices;
INSERT INTO invoices VALUES (3, 'bbbbbbbb-0000-0000-0000-000000000002', 1, '2026-01-01', 'planted');
\echo sqlstate :LAST_ERROR_SQLSTATE
UPDATE invoices SET memo = 'stolen' WHERE tenant_id = 'bbbbbbbb-0000-0000-0000-000000000002';
DELETE FROM invoices WHERE id = 2;
UPDATE invoices SET tenant_id = 'bbbbbbbb-0000-0000-0000-000000000002' WHERE id = 1;
\echo sqlstate :LAST_ERROR_SQLSTATE
TRUNCATE invoices;
\echo sqlstate :LAST_ERROR_SQLSTATE
WITH d AS (DELETE FROM invoices WHERE memo = 'globex' RETURNING *) SELECT count(*) AS deleted FROM d;
SET app.current_tenant_id = 'not-a-uuid';
SELECT count(*) FROM invoices;
\echo sqlstate :LAST_ERROR_SQLSTATE
SET app.current_tenant_id = '';
SELECT count(*) AS empty_tenant FROM invoices;
SET row_security = off;
SELECT count(*) FROM invoices;
\echo sqlstate :LAST_ERROR_SQLSTATE
\c tg_portable postgres
SELECT id, memo FROM prove.invoices ORDER BY id;
\c regression postgres
DROP DATABASE tg_portable;
