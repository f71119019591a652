-- Tenant context for real stacks, as the NOSUPERUSER NOBYPASSRLS application role (and the
-- owner where said): tenantguard.tenant_scope, JSON claims (PostgREST), lists of tenants,
-- hierarchies, the tenant column's default; each with the attacks that concern it.
\set SHOW_CONTEXT never
-- The tables here are protected by hand, with their options.
\c - postgres
ALTER DATABASE regression SET tenantguard.auto_protect = off;
\c - tg_owner
CREATE SCHEMA modes;
GRANT USAGE ON SCHEMA modes TO tg_app;
SET search_path = modes;

-- 1. tenant_scope = transaction: a tenant set for the session counts as unset.
CREATE TABLE scoped (id int PRIMARY KEY, tenant_id text NOT NULL);
INSERT INTO scoped VALUES (1, 'acme'), (2, 'globex');
SELECT tenantguard.protect('scoped');
GRANT SELECT, INSERT ON scoped TO tg_app;
\c - postgres
ALTER ROLE tg_app SET tenantguard.tenant_scope = transaction;
\c - tg_app
SET search_path = modes;
SHOW tenantguard.tenant_scope;
-- The role cannot switch it back (a superuser-only setting).
SET tenantguard.tenant_scope = 'any';
\echo sqlstate :LAST_ERROR_SQLSTATE
-- Session-level, by each route: nothing, and one WARNING per transaction naming the fix.
SET app.current_tenant_id = 'acme';
SELECT count(*) AS session_set FROM scoped;
SELECT count(*) AS session_set_again FROM scoped;
SELECT set_config('app.current_tenant_id', 'acme', false) IS NOT NULL;
SELECT count(*) AS set_config_session FROM scoped;
SELECT tenantguard.set_tenant('acme', false);
INSERT INTO scoped VALUES (3, 'acme');
\echo sqlstate :LAST_ERROR_SQLSTATE
-- A session-level SET inside the transaction still survives it: unset too.
BEGIN;
SET app.current_tenant_id = 'acme';
SELECT count(*) AS session_set_in_transaction FROM scoped;
COMMIT;
-- For the transaction, by each route: counts.
BEGIN;
SET LOCAL app.current_tenant_id = 'acme';
SELECT count(*) AS set_local FROM scoped;
COMMIT;
BEGIN;
SELECT tenantguard.set_tenant('acme');
SELECT count(*) AS set_tenant_local, tenantguard.current_tenant() FROM scoped;
COMMIT;
BEGIN;
SELECT set_config('app.current_tenant_id', 'globex', true) IS NOT NULL;
SELECT id FROM scoped;
COMMIT;
-- A SET LOCAL over a session value counts for the transaction; after it, nothing.
BEGIN;
SET LOCAL app.current_tenant_id = 'globex';
SELECT id AS local_over_session FROM scoped;
COMMIT;
SELECT count(*) AS after_commit, tenantguard.current_tenant() FROM scoped;
RESET app.current_tenant_id;
\c - postgres
ALTER ROLE tg_app RESET tenantguard.tenant_scope;
\c - tg_app
SET search_path = modes;
-- With the default (any), the session value counts, as before.
SET app.current_tenant_id = 'acme';
SELECT count(*) AS scope_any FROM scoped;
RESET app.current_tenant_id;

-- 2. JSON claims: the tenant at a path in request.jwt.claims, set per transaction as PostgREST
-- does (set_config(..., true) with the verified JWT's claims).
\c - postgres
CREATE ROLE tg_claims LOGIN NOSUPERUSER NOBYPASSRLS;
ALTER ROLE tg_claims SET tenantguard.tenant_setting = 'request.jwt.claims:app_metadata.tenant_id';
GRANT USAGE ON SCHEMA modes TO tg_claims;
\c - tg_owner
SET search_path = modes;
SET tenantguard.tenant_setting = 'request.jwt.claims:app_metadata.tenant_id';
\echo sqlstate :LAST_ERROR_SQLSTATE
\c - postgres
SET search_path = modes;
SET tenantguard.tenant_setting = 'request.jwt.claims:app_metadata.tenant_id';
CREATE TABLE claimed (id int PRIMARY KEY, tenant_id uuid NOT NULL, v text);
ALTER TABLE claimed OWNER TO tg_owner;
INSERT INTO claimed VALUES (1, 'aaaaaaaa-0000-0000-0000-000000000001', 'a'),
                           (2, 'bbbbbbbb-0000-0000-0000-000000000002', 'b');
SELECT tenantguard.protect('claimed', tenant_default => true);
SELECT policy_name, using_expr FROM tenantguard.policies('claimed') WHERE policy_name LIKE '%select';
GRANT SELECT, INSERT, UPDATE ON claimed TO tg_claims;
-- Bad specs are refused with the setting's name.
SET tenantguard.tenant_setting = 'request.jwt.claims:app..x';
SELECT tenantguard.protect('claimed');
\echo sqlstate :LAST_ERROR_SQLSTATE
SET tenantguard.tenant_setting = 'search_path:x';
SELECT tenantguard.protect('claimed');
\echo sqlstate :LAST_ERROR_SQLSTATE
\c - tg_claims
SET search_path = modes;
BEGIN;
SELECT set_config('request.jwt.claims',
  '{"sub": "u1", "role": "authenticated", "app_metadata": {"tenant_id": "AAAAAAAA-0000-0000-0000-000000000001"}}', true) IS NOT NULL;
SELECT id, v, tenantguard.current_tenant() FROM claimed;
-- The default: the claims' tenant, typed; no tenant_id needed in the INSERT.
INSERT INTO claimed (id, v) VALUES (3, 'a3');
SELECT id, tenant_id FROM claimed ORDER BY id;
-- Another tenant's row: refused.
INSERT INTO claimed VALUES (4, 'bbbbbbbb-0000-0000-0000-000000000002', 'forged');
\echo sqlstate :LAST_ERROR_SQLSTATE
ROLLBACK;
-- Claims without the path, with a list there, or not JSON: no tenant.
BEGIN;
SELECT set_config('request.jwt.claims', '{"sub": "u1"}', true) IS NOT NULL;
SELECT count(*) AS no_path FROM claimed;
INSERT INTO claimed (id, v) VALUES (5, 'no tenant');
\echo sqlstate :LAST_ERROR_SQLSTATE
ROLLBACK;
BEGIN;
SELECT set_config('request.jwt.claims', '{"app_metadata": {"tenant_id": ["aaaaaaaa-0000-0000-0000-000000000001", "bbbbbbbb-0000-0000-0000-000000000002"]}}', true) IS NOT NULL;
SELECT count(*) AS list_where_one_is_expected FROM claimed;
ROLLBACK;
BEGIN;
SELECT set_config('request.jwt.claims', 'not json', true) IS NOT NULL;
SELECT count(*) AS not_json FROM claimed;
ROLLBACK;
-- The claims are plain SQL settings: a client that can run SQL can write them by hand, as it
-- could SET the tenant. tenantguard cannot tell them from PostgREST's (docs/reference.md).
BEGIN;
SELECT set_config('request.jwt.claims', '{"app_metadata": {"tenant_id": "bbbbbbbb-0000-0000-0000-000000000002"}}', true) IS NOT NULL;
SELECT id AS hand_written_claims FROM claimed;
ROLLBACK;
-- set_tenant() cannot write into a JSON value.
SELECT tenantguard.set_tenant('x');
\echo sqlstate :LAST_ERROR_SQLSTATE

-- 3. Lists of tenants: reads see each, writes may use each, an unset or empty list sees nothing.
\c - tg_owner
SET search_path = modes;
CREATE TABLE listed (id int PRIMARY KEY, tenant_id bigint NOT NULL);
CREATE INDEX ON listed (tenant_id);
INSERT INTO listed SELECT g, g % 5 FROM generate_series(1, 20) g;
SELECT tenantguard.protect('listed', tenant_list => true);
GRANT SELECT, INSERT, UPDATE, DELETE ON listed TO tg_app;
SELECT tenantguard.protect('listed', tenant_list => true, tenant_default => true);
\echo sqlstate :LAST_ERROR_SQLSTATE
\c - tg_app
SET search_path = modes;
SELECT count(*) AS no_list FROM listed;
SET app.current_tenant_id = '1, 3';
SELECT tenant_id, count(*) FROM listed GROUP BY 1 ORDER BY 1;
-- Spellings of the same tenants: the same rows.
SET app.current_tenant_id = '[1, "03"]';
SELECT tenant_id, count(*) FROM listed GROUP BY 1 ORDER BY 1;
INSERT INTO listed VALUES (100, 3);
INSERT INTO listed VALUES (101, 2);
\echo sqlstate :LAST_ERROR_SQLSTATE
UPDATE listed SET tenant_id = 2 WHERE id = 100;
\echo sqlstate :LAST_ERROR_SQLSTATE
UPDATE listed SET tenant_id = 1 WHERE id = 100;
DELETE FROM listed WHERE tenant_id = 2;
SET app.current_tenant_id = '';
SELECT count(*) AS empty_list FROM listed;
SET app.current_tenant_id = ' , ';
SELECT count(*) AS blank_items FROM listed;
SET app.current_tenant_id = '1,x';
SELECT count(*) FROM listed;
\echo sqlstate :LAST_ERROR_SQLSTATE
-- A client that extends the list itself reads what it added, as a client that sets another
-- tenant does: the list is as trustworthy as the setting (signed tenants close this).
SET app.current_tenant_id = '1,3,2';
SELECT count(*) AS extended_list FROM listed;
-- The tenant index serves the list (evaluated once for the scan).
SET enable_seqscan = off;
EXPLAIN (COSTS OFF) SELECT * FROM listed;
RESET enable_seqscan;
RESET app.current_tenant_id;

-- 4. Hierarchies: a tenant reads its descendants' rows; writes stay its own.
\c - tg_owner
SET search_path = modes;
CREATE TABLE orgs (id bigint PRIMARY KEY, parent_id bigint, name text);
-- 1 > 2 > 3 > 5 > 6, and 4 alone; 7 and 8 each other's parent (a cycle).
INSERT INTO orgs VALUES (1, NULL, 'root'), (2, 1, 'b'), (3, 2, 'c'), (4, NULL, 'other'),
                        (5, 3, 'd'), (6, 5, 'e'), (7, 8, 'x'), (8, 7, 'y');
-- The tenants table is itself protected: the hierarchy is read as the extension's owner.
SELECT tenantguard.protect('orgs', tenant_column => 'id');
CREATE TABLE docs (id int PRIMARY KEY, tenant_id bigint NOT NULL);
INSERT INTO docs SELECT g, g FROM generate_series(1, 8) g;
SELECT tenantguard.protect('docs', hierarchy => 'orgs(parent_id)');
GRANT SELECT, INSERT, UPDATE, DELETE ON docs TO tg_app;
SELECT tenantguard.protect('docs', hierarchy => 'orgs(nope)');
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT tenantguard.protect('docs', hierarchy => 'no_such_table(parent_id)');
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT tenantguard.protect('docs', hierarchy => 'orgs');
\echo sqlstate :LAST_ERROR_SQLSTATE
CREATE TABLE text_docs (id int, tenant_id text NOT NULL);
SELECT tenantguard.protect('text_docs', hierarchy => 'orgs(parent_id)');
\echo sqlstate :LAST_ERROR_SQLSTATE
DROP TABLE text_docs;
\c - tg_app
SET search_path = modes;
SET app.current_tenant_id = '2';
SELECT array_agg(tenant_id ORDER BY tenant_id) AS subtree_of_2 FROM docs;
SET app.current_tenant_id = '5';
SELECT array_agg(tenant_id ORDER BY tenant_id) AS subtree_of_5 FROM docs;
-- A cycle ends; a tenant not in the tenants table sees its own rows only.
SET app.current_tenant_id = '7';
SELECT array_agg(tenant_id ORDER BY tenant_id) AS cycle FROM docs;
SET app.current_tenant_id = '99';
SELECT count(*) AS unknown_tenant FROM docs;
-- Writes: the tenant's own rows, not its descendants'.
SET app.current_tenant_id = '2';
INSERT INTO docs VALUES (20, 2);
INSERT INTO docs VALUES (21, 3);
\echo sqlstate :LAST_ERROR_SQLSTATE
UPDATE docs SET id = id WHERE tenant_id = 3;
DELETE FROM docs WHERE tenant_id = 5;
-- Depth is bounded by tenantguard.hierarchy_max_depth (10 by default; superuser-only).
SET tenantguard.hierarchy_max_depth = 1;
\echo sqlstate :LAST_ERROR_SQLSTATE
-- Called with a table no protected table names as its hierarchy, the function reads as the
-- caller: it is no way into a table the caller may not read.
RESET app.current_tenant_id;
\c - tg_owner
CREATE TABLE modes.private_tree (id bigint PRIMARY KEY, up bigint);
INSERT INTO modes.private_tree VALUES (2, NULL), (30, 2);
-- One it may read and change: without the trigger protect() attaches to a hierarchy's tenants
-- table, a subtree holds for the transaction that computed it, and a change shows in the next.
CREATE TABLE modes.shared_tree (id bigint PRIMARY KEY, up bigint);
INSERT INTO modes.shared_tree VALUES (2, NULL), (30, 2);
GRANT SELECT, INSERT ON modes.shared_tree TO tg_app;
\c - tg_app
SET app.current_tenant_id = '2';
SELECT tenantguard.tenant_subtree_bigint('app.current_tenant_id', 'modes.private_tree'::regclass, 'id', 'up', false);
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT tenantguard.tenant_subtree_bigint('app.current_tenant_id', 'modes.shared_tree'::regclass, 'id', 'up', false) AS shared;
INSERT INTO modes.shared_tree VALUES (31, 2);
SELECT tenantguard.tenant_subtree_bigint('app.current_tenant_id', 'modes.shared_tree'::regclass, 'id', 'up', false) AS next_transaction;
RESET app.current_tenant_id;
\c - postgres
SET search_path = modes;
SET tenantguard.hierarchy_max_depth = 1;
SET ROLE tg_app;
SET app.current_tenant_id = '1';
SELECT array_agg(tenant_id ORDER BY tenant_id) AS depth_1 FROM docs;
RESET ROLE;
RESET tenantguard.hierarchy_max_depth;
-- A backend keeps the subtrees it computed; a change of the tenants table (its trigger sends an
-- invalidation) makes it compute them again.
SET ROLE tg_app;
SET app.current_tenant_id = '3';
SELECT array_agg(tenant_id ORDER BY tenant_id) AS before_new_org FROM docs;
RESET ROLE;
INSERT INTO orgs VALUES (9, 3, 'new');
INSERT INTO docs VALUES (90, 9);
SET ROLE tg_app;
SELECT array_agg(tenant_id ORDER BY tenant_id) AS after_new_org FROM docs;
RESET ROLE;
DELETE FROM orgs WHERE id = 9;
SET ROLE tg_app;
SELECT array_agg(tenant_id ORDER BY tenant_id) AS after_removed_org FROM docs;
RESET ROLE;

-- 5. The registry, coverage, dry_run and unprotect know the new options.
SELECT relid, options ->> 'tenant_list' AS list, options -> 'hierarchy' AS hierarchy,
       options ->> 'tenant_default' AS default_tenant
  FROM tenantguard.registry
 WHERE relid IN (SELECT oid FROM pg_class WHERE relnamespace = 'modes'::regnamespace) ORDER BY 1;
SELECT table_name, status FROM tenantguard.coverage() WHERE schema_name = 'modes' ORDER BY 1;
SET tenantguard.tenant_setting = 'request.jwt.claims:app_metadata.tenant_id';
SELECT tenantguard.protect('claimed', tenant_default => false, dry_run => true);
SELECT tenantguard.unprotect_sql('claimed');
SELECT tenantguard.unprotect('claimed');
SELECT pg_get_expr(adbin, adrelid) AS default_left FROM pg_attrdef WHERE adrelid = 'modes.claimed'::regclass;
SELECT tenantguard.protect('claimed', tenant_default => true);
RESET tenantguard.tenant_setting;
\c - postgres
ALTER DATABASE regression RESET tenantguard.auto_protect;
