-- Tables created by another extension's script are not auto-protected, and coverage() and lint()
-- leave them out (they belong to that extension).
\c - postgres
CREATE EXTENSION tg_fixture;
SELECT relname, relrowsecurity FROM pg_class WHERE relname = 'tg_fixture_lookup';
SELECT count(*) AS registered FROM tenantguard.registry WHERE relid = 'tg_fixture_lookup'::regclass;
SELECT count(*) AS in_coverage FROM tenantguard.coverage() WHERE table_name = 'tg_fixture_lookup';
SELECT count(*) AS in_lint FROM tenantguard.lint() WHERE object LIKE '%tg_fixture_lookup%';
-- The same table created by hand is protected.
CREATE TABLE tg_fixture_copy (tenant_id int, code text);
SELECT relname, relrowsecurity FROM pg_class WHERE relname = 'tg_fixture_copy';
DROP TABLE tg_fixture_copy;
DROP EXTENSION tg_fixture;
