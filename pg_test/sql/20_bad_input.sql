-- Bad input: a real SQLSTATE, a message that names the object, a hint, and nothing changed.
\set SHOW_CONTEXT never
\c - tg_owner
CREATE TABLE no_tenant (id int PRIMARY KEY, v text);
CREATE TABLE odd_type (id int PRIMARY KEY, tenant_id numeric);
CREATE TABLE org_keyed (id int PRIMARY KEY, org_id uuid NOT NULL);
CREATE VIEW items_view AS SELECT * FROM items_text;
CREATE MATERIALIZED VIEW items_mv AS SELECT 1 AS tenant_id;
CREATE TEMP TABLE scratch (tenant_id int);

CREATE TABLE before AS
  SELECT (SELECT count(*) FROM pg_policy) AS policies,
         (SELECT count(*) FROM tenantguard.registry) AS registered,
         (SELECT count(*) FROM pg_class WHERE relrowsecurity) AS rls_tables;

SELECT tenantguard.protect('no_tenant');
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT tenantguard.protect('org_keyed', 'organisation_id');
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT tenantguard.protect('odd_type');
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT tenantguard.protect('items_view');
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT tenantguard.protect('items_mv');
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT tenantguard.protect('pg_catalog.pg_class');
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT tenantguard.protect('scratch');
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT tenantguard.protect('does_not_exist');
\echo sqlstate :LAST_ERROR_SQLSTATE
-- Not the owner.
\c - tg_other
SELECT tenantguard.protect('no_tenant', 'id');
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT tenantguard.unprotect('items_text');
\echo sqlstate :LAST_ERROR_SQLSTATE
-- Nor can anyone but the owner write the registry directly.
INSERT INTO tenantguard.registry (relid, tenant_column, rls_was_enabled, rls_was_forced)
VALUES ('no_tenant', 'id', false, false);
\echo sqlstate :LAST_ERROR_SQLSTATE
DELETE FROM tenantguard.registry;
\c - tg_owner

-- Nothing changed.
SELECT b.policies = (SELECT count(*) FROM pg_policy) AS same_policies,
       b.registered = (SELECT count(*) FROM tenantguard.registry) AS same_registry,
       b.rls_tables = (SELECT count(*) FROM pg_class WHERE relrowsecurity) AS same_rls
  FROM before b;
DROP TABLE before;

-- A named tenant column works.
SELECT tenantguard.protect('org_keyed', tenant_column => 'org_id');
SELECT table_name, tenant_column, status FROM tenantguard.coverage() WHERE table_name = 'org_keyed';

-- Quoted identifiers are quoted in the generated SQL.
CREATE SCHEMA "Odd Schema";
CREATE TABLE "Odd Schema"."Table; DROP TABLE items_text" ("Tenant Id" text);
SELECT tenantguard.protect('"Odd Schema"."Table; DROP TABLE items_text"', 'Tenant Id', dry_run => true);
SELECT tenantguard.protect('"Odd Schema"."Table; DROP TABLE items_text"', 'Tenant Id');
SELECT to_regclass('items_text') IS NOT NULL AS items_text_still_there;
SET app.current_tenant_id = 'x';
INSERT INTO "Odd Schema"."Table; DROP TABLE items_text" VALUES ('x');
SELECT * FROM "Odd Schema"."Table; DROP TABLE items_text";
