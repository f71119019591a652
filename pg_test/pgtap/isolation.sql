-- A pgTAP test of tenant isolation, the way an application's test suite would write it
-- (docs/prove.md). Run by scripts/pgtap_test.sh with pg_prove, connected as tg_app: a
-- NOSUPERUSER NOBYPASSRLS role that owns no table. Everything is rolled back.
BEGIN;
SELECT plan(9);

-- First: a suite that runs as a role that bypasses RLS proves nothing.
SELECT lives_ok('SELECT tenantguard.assert_enforced()', 'tg_app does not bypass row level security');

-- Every check on every protected table passes as this role.
SELECT is((SELECT count(*) FROM tenantguard.test_isolation() WHERE NOT ok), 0::bigint,
          'test_isolation(): no failed check');
SELECT cmp_ok((SELECT count(DISTINCT table_name) FROM tenantguard.test_isolation()), '>=', 2::bigint,
              'test_isolation() covers both protected tables');
SELECT lives_ok('SELECT tenantguard.assert_isolation()', 'assert_isolation() passes');
SELECT lives_ok($$SELECT tenantguard.assert_isolation('shop.orders')$$, 'assert_isolation(one table) passes');

-- The same calls report a planted hole: the owner's role (granted to tg_app for this test only)
-- adds a permissive policy that lets every tenant read every row.
SET LOCAL ROLE tg_owner;
CREATE POLICY open_read ON shop.orders FOR SELECT USING (true);
RESET ROLE;
SELECT ok((SELECT count(*) FROM tenantguard.test_isolation('shop.orders') WHERE NOT ok) > 0,
          'test_isolation() reports the planted policy');
SELECT throws_ok($$SELECT tenantguard.assert_isolation('shop.orders')$$, '55000', NULL,
                 'assert_isolation() raises 55000 on the planted policy');
-- And nothing it did persists: no rows, no audit rows.
SELECT is((SELECT count(*) FROM shop.orders), 0::bigint, 'no rows left behind (no tenant set)');
SELECT is((SELECT count(*) FROM tenantguard.audit_log WHERE table_name = 'orders'), 0::bigint,
          'no audit rows left behind');

SELECT * FROM finish();
ROLLBACK;
