-- Two tenants, every supported key type, as the application role and as the table owner.
\set SHOW_CONTEXT never
\c - tg_owner
CREATE TABLE items_uuid (id int PRIMARY KEY, tenant_id uuid NOT NULL, v text);
CREATE TABLE items_text (id int PRIMARY KEY, tenant_id text NOT NULL, v text);
CREATE TABLE items_big  (id int PRIMARY KEY, tenant_id bigint NOT NULL, v text);
CREATE TABLE items_int  (id int PRIMARY KEY, tenant_id integer NOT NULL, v text);
INSERT INTO items_uuid VALUES (1, 'aaaaaaaa-0000-0000-0000-000000000001', 'a1'), (2, 'aaaaaaaa-0000-0000-0000-000000000001', 'a2'),
                              (3, 'bbbbbbbb-0000-0000-0000-000000000002', 'b1');
INSERT INTO items_text VALUES (1, 'acme', 'a1'), (2, 'acme', 'a2'), (3, 'globex', 'b1');
INSERT INTO items_big  VALUES (1, 10000000001, 'a1'), (2, 10000000001, 'a2'), (3, 20000000002, 'b1');
INSERT INTO items_int  VALUES (1, 1, 'a1'), (2, 1, 'a2'), (3, 2, 'b1');
GRANT SELECT, INSERT, UPDATE, DELETE ON items_uuid, items_text, items_big, items_int TO tg_app;

-- Before: nothing protected, and assert_coverage() says which tables.
SELECT table_name, rls_enabled, rls_forced, select_policy, insert_policy, update_policy,
       delete_policy, tenant_index, missing, status
  FROM tenantguard.coverage() ORDER BY table_name;
SELECT tenantguard.assert_coverage();
\echo sqlstate :LAST_ERROR_SQLSTATE

SELECT tenantguard.protect('items_uuid');
SELECT tenantguard.protect('items_text');
SELECT tenantguard.protect('items_big');
SELECT tenantguard.protect('items_int');
-- Idempotent: a second call changes nothing, not even the registry row.
SELECT xmin AS reg_xmin FROM tenantguard.registry WHERE relid = 'items_uuid'::regclass \gset
SELECT tenantguard.protect('items_uuid');
SELECT xmin = :'reg_xmin'::xid AS registry_untouched FROM tenantguard.registry WHERE relid = 'items_uuid'::regclass;
SELECT count(*) AS tenantguard_policies FROM pg_policy WHERE polrelid = 'items_uuid'::regclass;

SELECT table_name, rls_enabled, rls_forced, select_policy, insert_policy, update_policy,
       delete_policy, missing, status
  FROM tenantguard.coverage() ORDER BY table_name;
SELECT tenantguard.assert_coverage();

-- The application role, tenant A then tenant B.
\c - tg_app
SELECT tenantguard.set_tenant('aaaaaaaa-0000-0000-0000-000000000001', false);
SELECT tenantguard.current_tenant();
SELECT id, v FROM items_uuid ORDER BY id;
SET app.current_tenant_id = 'globex';
SELECT id, v FROM items_text ORDER BY id;
SET app.current_tenant_id = '10000000001';
SELECT id, v FROM items_big ORDER BY id;
SET app.current_tenant_id = '2';
SELECT id, v FROM items_int ORDER BY id;

-- Writing into the other tenant is refused; moving a row to the other tenant is refused.
SET app.current_tenant_id = 'aaaaaaaa-0000-0000-0000-000000000001';
INSERT INTO items_uuid VALUES (10, 'bbbbbbbb-0000-0000-0000-000000000002', 'sneaky');
\echo sqlstate :LAST_ERROR_SQLSTATE
UPDATE items_uuid SET tenant_id = 'bbbbbbbb-0000-0000-0000-000000000002' WHERE id = 1;
\echo sqlstate :LAST_ERROR_SQLSTATE
-- Own-tenant writes work.
INSERT INTO items_uuid VALUES (4, 'aaaaaaaa-0000-0000-0000-000000000001', 'a3');
UPDATE items_uuid SET v = v || '!' WHERE id IN (1, 3);
-- Deleting and updating the other tenant's rows touches nothing.
DELETE FROM items_uuid WHERE id = 3;
UPDATE items_uuid SET v = 'stolen' WHERE tenant_id = 'bbbbbbbb-0000-0000-0000-000000000002';
SET app.current_tenant_id = 'acme';
INSERT INTO items_text VALUES (11, 'globex', 'sneaky');
\echo sqlstate :LAST_ERROR_SQLSTATE
UPDATE items_text SET tenant_id = 'globex' WHERE id = 1;
\echo sqlstate :LAST_ERROR_SQLSTATE
DELETE FROM items_text WHERE tenant_id = 'globex';
SET app.current_tenant_id = '1';
INSERT INTO items_int VALUES (12, 2, 'sneaky');
\echo sqlstate :LAST_ERROR_SQLSTATE
DELETE FROM items_int WHERE id = 3;

-- Unset and empty tenants see nothing and never hit a cast error.
RESET app.current_tenant_id;
SELECT count(*) AS unset_sees FROM items_uuid;
SET app.current_tenant_id = '';
SELECT count(*) AS empty_sees_uuid FROM items_uuid;
SELECT count(*) AS empty_sees_big FROM items_big;
SELECT count(*) AS empty_sees_text FROM items_text;
INSERT INTO items_text VALUES (13, '', 'no tenant');
\echo sqlstate :LAST_ERROR_SQLSTATE
-- A malformed value for a uuid column is an error with a real SQLSTATE, not a leak.
SET app.current_tenant_id = 'not-a-uuid';
SELECT count(*) FROM items_uuid;
\echo sqlstate :LAST_ERROR_SQLSTATE
-- SQL in the tenant value is just a value.
SET app.current_tenant_id = 'acme'' OR ''1''=''1';
SELECT count(*) AS injected_sees FROM items_text;

-- Transaction-scoped tenant (transaction-mode pooler): gone after COMMIT.
RESET app.current_tenant_id;
BEGIN;
SELECT tenantguard.set_tenant('globex');
SELECT id, v FROM items_text ORDER BY id;
COMMIT;
SELECT tenantguard.current_tenant() IS NULL AS tenant_cleared;
SELECT count(*) AS after_commit_sees FROM items_text;

-- The owner is bound too (FORCE ROW LEVEL SECURITY).
\c - tg_owner
SELECT count(*) AS owner_without_tenant FROM items_uuid;
SET app.current_tenant_id = 'bbbbbbbb-0000-0000-0000-000000000002';
SELECT id, v FROM items_uuid ORDER BY id;
INSERT INTO items_uuid VALUES (20, 'aaaaaaaa-0000-0000-0000-000000000001', 'owner sneaky');
\echo sqlstate :LAST_ERROR_SQLSTATE
DELETE FROM items_uuid WHERE tenant_id = 'aaaaaaaa-0000-0000-0000-000000000001';
UPDATE items_uuid SET tenant_id = 'aaaaaaaa-0000-0000-0000-000000000001';
\echo sqlstate :LAST_ERROR_SQLSTATE

-- What is really in the table (superuser): every write above that should have failed did.
\c - postgres
SELECT id, tenant_id, v FROM items_uuid ORDER BY id;
SELECT id, tenant_id, v FROM items_text ORDER BY id;
SELECT id, tenant_id, v FROM items_int ORDER BY id;
