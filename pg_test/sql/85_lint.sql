-- lint(): each check creates the problem, sees the finding, applies the finding's own fix (run
-- with \gexec where the fix is SQL), and sees it gone. Then waivers and assert_lint().
\set SHOW_CONTEXT never
\c - postgres
CREATE SCHEMA lnt AUTHORIZATION tg_owner;
SET tenantguard.auto_protect = off;
\set show 'SELECT level, code, object FROM tenantguard.lint() WHERE object ~ ''lnt\\.|^tg_bypass$'' ORDER BY code, object'
\set fixes 'SELECT fix FROM tenantguard.lint() WHERE object ~ ''lnt\\.|^tg_bypass$'' AND code = '

-- Tables: unprotected, not forced, no policies, nullable tenant column, no tenant index
CREATE TABLE lnt.t1 (id int, tenant_id int NOT NULL);
CREATE INDEX ON lnt.t1 (tenant_id);
CREATE TABLE lnt.t2 (tenant_id int NOT NULL);
CREATE INDEX ON lnt.t2 (tenant_id);
ALTER TABLE lnt.t2 ENABLE ROW LEVEL SECURITY;
CREATE POLICY own ON lnt.t2 AS RESTRICTIVE USING (tenant_id = 1);
CREATE TABLE lnt.t3 (tenant_id int NOT NULL);
CREATE INDEX ON lnt.t3 (tenant_id);
ALTER TABLE lnt.t3 ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
CREATE TABLE lnt.t4 (tenant_id int);
SELECT tenantguard.protect('lnt.t4');
:show;
:fixes 'tenant_table_unprotected' \gexec
:fixes 'rls_not_forced' \gexec
:fixes 'rls_without_policies' \gexec
:fixes 'tenant_column_nullable' \gexec
:fixes 'no_tenant_index' \gexec
:show;

-- Privileges: TRUNCATE / REFERENCES granted (on a table not yet protected), a BYPASSRLS login role
CREATE TABLE lnt.t5 (tenant_id int NOT NULL);
CREATE INDEX ON lnt.t5 (tenant_id);
GRANT TRUNCATE, REFERENCES ON lnt.t5 TO tg_app;
CREATE ROLE tg_bypass LOGIN BYPASSRLS;
GRANT USAGE ON SCHEMA lnt TO tg_bypass;
GRANT SELECT ON lnt.t1 TO tg_bypass;
:show;
:fixes 'truncate_granted' \gexec
:fixes 'references_granted' \gexec
:fixes 'bypassrls_login_role' \gexec
:fixes 'tenant_table_unprotected' \gexec
:show;
-- A superuser with LOGIN is reported at info level.
SELECT level, code FROM tenantguard.lint() WHERE code = 'bypassrls_login_role' AND object = current_user;

-- Hand-written policies on a protected table
CREATE POLICY open_door ON lnt.t1 USING (true);
CREATE POLICY by_id ON lnt.t1 USING (id < 10);
-- Uses the tenant column but not the tenant: still widens. A write check of true is always true.
CREATE POLICY any_tenant ON lnt.t1 USING (tenant_id IS NOT NULL);
CREATE POLICY open_write ON lnt.t1
  USING (tenant_id = current_setting('app.current_tenant_id')::int) WITH CHECK (true);
CREATE POLICY admin_override ON lnt.t1
  USING (tenant_id = current_setting('app.current_tenant_id')::int OR current_setting('app.user_role', true) = 'super_admin');
CREATE POLICY cast_column ON lnt.t1 AS RESTRICTIVE USING ((tenant_id)::text = current_setting('app.current_tenant_id'));
-- The same override through tenantguard's own setting readers is found too (the tenant's
-- setting read by them is not a finding).
CREATE POLICY admin_fn ON lnt.t1
  USING (tenant_id = tenantguard.tenant_integer('app.current_tenant_id')
         OR tenantguard.tenant_text('app.is_admin') = 'yes');
:show;
SELECT detail FROM tenantguard.lint() WHERE code = 'guc_admin_check' AND object ~ 'lnt\.' ORDER BY 1;
-- The fix for a cast tenant column names the reader tenantguard's policies use for its type.
SELECT fix FROM tenantguard.lint() WHERE code = 'policy_defeats_index' AND object ~ 'lnt\.';
:fixes 'permissive_policy_always_true' \gexec
:fixes 'permissive_policy_widens' \gexec
:fixes 'guc_admin_check' \gexec
:fixes 'policy_defeats_index' \gexec
:show;

-- Views, materialized views, SECURITY DEFINER functions
-- (views without security_invoker: 86_attacks_pg15.sql, and 86_views_pg14.sql on PostgreSQL 14)
CREATE MATERIALIZED VIEW lnt.mv1 AS SELECT * FROM lnt.t1;
CREATE FUNCTION lnt.f1() RETURNS int SECURITY DEFINER LANGUAGE sql AS 'SELECT 1';
CREATE FUNCTION lnt.f2() RETURNS bigint SECURITY DEFINER SET search_path = pg_catalog
  LANGUAGE sql AS 'SELECT count(*) FROM lnt.t1';
-- A SQL-standard body (no prosrc) is read too.
CREATE FUNCTION lnt.f3() RETURNS bigint SECURITY DEFINER SET search_path = pg_catalog
  BEGIN ATOMIC SELECT count(*) FROM lnt.t1; END;
:show;
:fixes 'materialized_view_over_tenant_table' \gexec
:fixes 'security_definer_search_path' \gexec
:fixes 'security_definer_reads_tenant_table' \gexec
:show;

-- Existence oracles: a unique index and a foreign key without the tenant column
CREATE UNIQUE INDEX t1_id_key ON lnt.t1 (id);
CREATE TABLE lnt.child (tenant_id int NOT NULL, t1_id int REFERENCES lnt.t1 (id));
CREATE INDEX ON lnt.child (tenant_id);
SELECT tenantguard.protect('lnt.child');
-- A table without the tenant column whose foreign key points into a protected table: inserting a
-- key there tells whether another tenant has it.
CREATE TABLE lnt.outside (t1_id int REFERENCES lnt.t1 (id));
:show;
DROP TABLE lnt.outside;
:fixes 'foreign_key_without_tenant' \gexec
:fixes 'unique_without_tenant' \gexec
:show;
SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'lnt.child'::regclass AND contype = 'f';
-- A unique constraint (not just an index) is replaced the same way.
ALTER TABLE lnt.t1 ADD CONSTRAINT t1_id_unique UNIQUE (id);
:show;
:fixes 'unique_without_tenant' \gexec
:show;
-- A primary key without the tenant column (info): no foreign key references it, so the fix
-- makes it (tenant_id, id); one that is referenced gets advice instead.
CREATE TABLE lnt.pk (id int PRIMARY KEY, tenant_id int NOT NULL);
CREATE INDEX ON lnt.pk (tenant_id);
SELECT tenantguard.protect('lnt.pk');
SELECT level, code, object, fix FROM tenantguard.lint() WHERE object = 'lnt.pk_pkey';
:fixes 'unique_without_tenant' \gexec
SELECT count(*) AS pk_findings_left FROM tenantguard.lint() WHERE object = 'lnt.pk_pkey';
SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = 'lnt.pk'::regclass AND contype = 'p';
CREATE TABLE lnt.pk2 (id int PRIMARY KEY, tenant_id int NOT NULL);
CREATE TABLE lnt.pk2_ref (tenant_id int NOT NULL, pk2_id int REFERENCES lnt.pk2 (id));
SELECT level, code, fix FROM tenantguard.lint() WHERE object = 'lnt.pk2_pkey';
DROP TABLE lnt.pk2_ref, lnt.pk2, lnt.pk;

-- A partition of a protected table that is not protected itself
CREATE TABLE lnt.pp (tenant_id int NOT NULL, at date) PARTITION BY RANGE (at);
CREATE INDEX ON lnt.pp (tenant_id);
SELECT tenantguard.protect('lnt.pp');
CREATE TABLE lnt.pp_2026 PARTITION OF lnt.pp FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
:show;
:fixes 'unprotected_partition' \gexec
:show;

-- Waivers and assert_lint(), in a database of their own
CREATE DATABASE tg_lint;
\c tg_lint postgres
CREATE EXTENSION tenantguard;
CREATE TABLE items (id int, tenant_id int NOT NULL);
CREATE INDEX ON items (tenant_id);
SELECT tenantguard.assert_lint();
SELECT tenantguard.assert_lint('warn');
SELECT tenantguard.assert_lint('info');
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT tenantguard.assert_lint('severe');
\echo sqlstate :LAST_ERROR_SQLSTATE
CREATE VIEW items_view AS SELECT * FROM items;
SELECT tenantguard.assert_lint();
\echo sqlstate :LAST_ERROR_SQLSTATE
-- A waiver is keyed by code and object; the reason is optional.
INSERT INTO tenantguard.lint_waivers (code, object)
VALUES ('view_without_security_invoker', 'public.items_view');
SELECT count(*) AS findings_after_waiver FROM tenantguard.lint() WHERE object = 'public.items_view';
SELECT tenantguard.assert_lint();
-- Only the extension owner writes waivers.
\c tg_lint tg_app
INSERT INTO tenantguard.lint_waivers (code, object, reason) VALUES ('x', 'y', 'z');
\echo sqlstate :LAST_ERROR_SQLSTATE
\c regression postgres
DROP DATABASE tg_lint;
DROP SCHEMA lnt CASCADE;
DROP ROLE tg_bypass;
