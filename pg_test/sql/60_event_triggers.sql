-- Event triggers: auto-protect for every DDL form, the guard, exemptions, settings, cleanup,
-- pg_dump/pg_restore, and DROP/CREATE EXTENSION. DDL runs as the non-superuser owner.
\set SHOW_CONTEXT never
\c - postgres
ALTER DATABASE regression RESET tenantguard.auto_protect;
\c - tg_owner
CREATE SCHEMA app;
SET search_path = app, public;
-- CREATE TABLE, CREATE TABLE AS, SELECT INTO, LIKE, INHERITS
CREATE TABLE a_plain (id int, tenant_id text);
CREATE TABLE a_ctas AS SELECT 1 AS id, 'acme'::text AS tenant_id;
SELECT 2 AS id, 'acme'::text AS tenant_id INTO a_select_into;
CREATE TABLE a_like (LIKE a_plain);
CREATE TABLE a_inherits (extra int) INHERITS (a_plain);
CREATE TABLE a_no_tenant (id int);
-- partitioned: parent, PARTITION OF, ATTACH PARTITION
CREATE TABLE a_parted (id int, tenant_id text) PARTITION BY LIST (id);
CREATE TABLE a_part1 PARTITION OF a_parted FOR VALUES IN (1);
CREATE TABLE a_loose (id int, tenant_id text);
SELECT tenantguard.unprotect('a_loose');
SELECT tenantguard.exempt('a_loose', 'about to be attached');
SELECT tenantguard.unexempt('a_loose');
ALTER TABLE a_parted ATTACH PARTITION a_loose FOR VALUES IN (2);
-- A partition of a table protected with another tenant column is protected like its parent
-- (and coverage() lists one that is not, whatever its column is called).
CREATE TABLE a_org (id int, org_id text) PARTITION BY LIST (id);
SELECT tenantguard.protect('a_org', tenant_column => 'org_id');
CREATE TABLE a_org1 PARTITION OF a_org FOR VALUES IN (1);
\c - postgres
SET tenantguard.auto_protect = off;
CREATE TABLE app.a_org2 PARTITION OF app.a_org FOR VALUES IN (2);
RESET tenantguard.auto_protect;
SELECT table_name, tenant_column, status FROM tenantguard.coverage()
 WHERE table_name::text LIKE 'a_org%' ORDER BY table_name;
SELECT tenantguard.protect('app.a_org2', tenant_column => 'org_id');
\c - tg_owner
SET search_path = app, public;
-- A table protected with other options, attached as a partition, takes the parent's.
CREATE TABLE a_org3 (id int, org_id text);
SELECT tenantguard.protect('a_org3', tenant_column => 'org_id', admin_role => NULL);
ALTER TABLE a_org ATTACH PARTITION a_org3 FOR VALUES IN (3);
SELECT policy_name FROM tenantguard.policies('a_org3') ORDER BY 1;
-- ADD COLUMN, RENAME COLUMN ... TO tenant_id (an inheritance child gains the column too)
CREATE TABLE a_added (id int);
CREATE TABLE a_added_child (extra int) INHERITS (a_added);
ALTER TABLE a_added ADD COLUMN tenant_id uuid;
CREATE TABLE a_renamed (id int, org text);
ALTER TABLE a_renamed RENAME COLUMN org TO tenant_id;
-- Not tenant tables, or not for auto-protect: temp tables
CREATE TEMP TABLE a_temp (tenant_id text);
SELECT table_name, status FROM tenantguard.coverage() WHERE schema_name = 'app' ORDER BY table_name;
SELECT relname FROM pg_class WHERE relname = 'a_temp' AND relrowsecurity;

-- Auto-protected tables isolate like any other (the partition attached to a protected parent too).
\c - postgres
INSERT INTO app.a_parted VALUES (1, 'acme'), (2, 'globex');
\c - tg_owner
SET search_path = app, public;
GRANT USAGE ON SCHEMA app TO tg_app;
GRANT SELECT ON a_parted, a_part1, a_loose TO tg_app;
\c - tg_app
SET app.current_tenant_id = 'globex';
SELECT id, tenant_id FROM app.a_parted;
SELECT id, tenant_id FROM app.a_part1;
SELECT id, tenant_id FROM app.a_loose;

-- The guard: each of these is refused while the table is protected.
\c - tg_owner
SET search_path = app, public;
ALTER TABLE a_plain DISABLE ROW LEVEL SECURITY;
\echo sqlstate :LAST_ERROR_SQLSTATE
ALTER TABLE a_plain NO FORCE ROW LEVEL SECURITY;
\echo sqlstate :LAST_ERROR_SQLSTATE
DROP POLICY tenantguard_tenant_select ON a_plain;
\echo sqlstate :LAST_ERROR_SQLSTATE
ALTER POLICY tenantguard_tenant_select ON a_plain USING (true);
\echo sqlstate :LAST_ERROR_SQLSTATE
ALTER POLICY tenantguard_tenant_select ON a_plain RENAME TO whatever;
\echo sqlstate :LAST_ERROR_SQLSTATE
ALTER TABLE a_plain DROP COLUMN tenant_id CASCADE;
\echo sqlstate :LAST_ERROR_SQLSTATE
ALTER TABLE a_plain RENAME COLUMN tenant_id TO tenant;
\echo sqlstate :LAST_ERROR_SQLSTATE
-- Retyping the tenant column, or dropping it without CASCADE, is refused before PostgreSQL's
-- own dependency errors (whose hint says CASCADE), with the unprotect() hint.
ALTER TABLE a_plain DROP COLUMN tenant_id;
\echo sqlstate :LAST_ERROR_SQLSTATE
ALTER TABLE a_plain ALTER COLUMN tenant_id TYPE varchar(20);
\echo sqlstate :LAST_ERROR_SQLSTATE
-- A multi-subcommand ALTER TABLE is judged by its end state.
ALTER TABLE a_plain DISABLE ROW LEVEL SECURITY, ENABLE ROW LEVEL SECURITY;
-- Hand-written policies and other DDL are not the guard's business.
CREATE POLICY mine ON a_plain AS RESTRICTIVE USING (id IS NOT NULL);
DROP POLICY mine ON a_plain;
ALTER TABLE a_plain ADD COLUMN note text;
SELECT status FROM tenantguard.coverage() WHERE table_name = 'a_plain';
-- unprotect() is the sanctioned way out, and its script works as a migration.
BEGIN;
SELECT tenantguard.unprotect_sql('a_plain') AS script \gset
:script
SELECT status FROM tenantguard.coverage() WHERE table_name = 'a_plain';
ROLLBACK;
-- Run statement by statement in autocommit instead, it changes nothing: the guard refuses each
-- change (the hint says to run the script in one transaction), and the registry row stays.
:script
SELECT status FROM tenantguard.coverage() WHERE table_name = 'a_plain';
SELECT tenantguard.unprotect('a_plain');
ALTER TABLE a_plain ENABLE ROW LEVEL SECURITY;
ALTER TABLE a_plain DISABLE ROW LEVEL SECURITY;
-- A re-protect dry run is a runnable script on a guarded table.
SELECT tenantguard.protect('a_like');
-- (run it in one transaction, as migration tools do: the change is declared per transaction)
SELECT tenantguard.protect('a_like', admin_role => NULL, dry_run => true) AS script \gset
BEGIN;
:script
COMMIT;
SELECT policy_name FROM tenantguard.policies('a_like');
SELECT polname FROM pg_policy WHERE polrelid = 'a_like'::regclass ORDER BY 1;
-- The guard setting is superuser-only; a superuser can switch it off for an emergency.
SET tenantguard.guard = off;
\echo sqlstate :LAST_ERROR_SQLSTATE
\c - postgres
SET search_path = app, public;
BEGIN;
SET LOCAL tenantguard.guard = off;
ALTER TABLE a_like NO FORCE ROW LEVEL SECURITY;
SELECT status, missing FROM tenantguard.coverage() WHERE table_name = 'a_like';
ROLLBACK;

-- Modes: warn and off (superuser-only settings; set per database or role in real life).
SET tenantguard.auto_protect = warn;
CREATE TABLE app.m_warn (tenant_id int);
SET tenantguard.auto_protect = off;
CREATE TABLE app.m_off (tenant_id int);
RESET tenantguard.auto_protect;
SET tenantguard.exclude_schemas = 'staging, other';
CREATE SCHEMA staging AUTHORIZATION tg_owner;
CREATE TABLE staging.s1 (tenant_id int);
RESET tenantguard.exclude_schemas;
SELECT schema_name, table_name, status FROM tenantguard.coverage()
 WHERE table_name IN ('m_warn', 'm_off', 's1') ORDER BY 1, 2;
\c - tg_owner
SELECT tenantguard.current_tenant();  -- loads the library, so its settings are known
SET tenantguard.auto_protect = off;
\echo sqlstate :LAST_ERROR_SQLSTATE

-- Exempt: a deliberate exception, shown by coverage() with its reason; auto-protect leaves it.
SET search_path = app, public;
CREATE TABLE e_lookup (id int);
SELECT tenantguard.exempt('e_lookup', 'shared reference data');
ALTER TABLE e_lookup ADD COLUMN tenant_id int;
SELECT table_name, status, exempt_reason FROM tenantguard.coverage() WHERE table_name = 'e_lookup';
SELECT tenantguard.exempt('a_added', 'holds no tenant data after all');
SELECT table_name, status, exempt_reason FROM tenantguard.coverage() WHERE table_name = 'a_added';
SELECT tenantguard.exempt('a_added', '');
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT tenantguard.exempt('a_added', NULL);
\echo sqlstate :LAST_ERROR_SQLSTATE
-- protect() ends an exemption.
SELECT tenantguard.protect('a_added');
SELECT table_name, status, exempt_reason FROM tenantguard.coverage() WHERE table_name = 'a_added';

-- Dropping a protected table, or its schema, removes it from the registry.
DROP TABLE a_ctas;
SELECT count(*) AS a_ctas_rows FROM tenantguard.registry WHERE relid::text LIKE '%a_ctas%';
\c - postgres
SELECT count(*) AS app_tables_registered FROM tenantguard.registry r
  JOIN pg_class c ON c.oid = r.relid JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'app';
DROP SCHEMA app CASCADE;
SELECT count(*) AS orphans FROM tenantguard.registry r WHERE NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = r.relid);
SELECT count(*) AS orphan_exemptions FROM tenantguard.exemptions x WHERE NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.oid = x.relid);
DROP SCHEMA staging CASCADE;
