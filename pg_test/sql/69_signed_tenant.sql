-- Signed tenant tokens (src/tenant/token.rs), as the NOSUPERUSER NOBYPASSRLS application role with
-- tenantguard.require_signed_tenant on. The keys are in pg_test/regress.conf; the tokens below come
-- from scripts/make_test_tokens.py (test keys, valid until 2100).
\set SHOW_CONTEXT never
\set tok_acme 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImhzMSJ9.eyJ0ZW5hbnRfaWQiOiJhY21lIiwic3ViIjoidXNlci1vZi1hY21lIiwiZXhwIjo0MTAyNDQ0ODAwfQ.wztS7eCD6IOBE0wfZBQRLO66kkO5AUozLUrwlUfr8qA'
\set tok_globex 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImhzMSJ9.eyJ0ZW5hbnRfaWQiOiJnbG9iZXgiLCJzdWIiOiJ1c2VyLW9mLWdsb2JleCIsImV4cCI6NDEwMjQ0NDgwMH0.74VmJGQndvjMvFS_KhbbxHQalhag88WZSiu7Brmaqcw'
\set tok_acme_hs2 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImhzMiJ9.eyJ0ZW5hbnRfaWQiOiJhY21lIiwic3ViIjoidXNlci1vZi1hY21lIiwiZXhwIjo0MTAyNDQ0ODAwfQ.amSk3re420cqdtt6MqaXd49onHS386HBt1-4LB1xEAs'
\set tok_acme_ed 'eyJhbGciOiJFZERTQSIsInR5cCI6IkpXVCIsImtpZCI6ImVkMSJ9.eyJ0ZW5hbnRfaWQiOiJhY21lIiwic3ViIjoidXNlci1vZi1hY21lIiwiZXhwIjo0MTAyNDQ0ODAwfQ.xpiVrlWHcHC2sEJnaI458JTjnGi1SZ9j7bZFoEcyQebK16wFekgxSPwoMWS7NHMfABubJ7pvBh8BWLkWHXeEAw'
\set tok_acme_rs 'eyJhbGciOiJSUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6InJzMSJ9.eyJ0ZW5hbnRfaWQiOiJhY21lIiwic3ViIjoidXNlci1vZi1hY21lIiwiZXhwIjo0MTAyNDQ0ODAwfQ.PFOM_QFzeIwzzKVMdvwGXAFxNc75OV5DyzOIzov2kMxKpz5_pqTtfpTz7xMU1qLTQT8zmDpYIWNUmbHgMqoGWVu3A43u9poszZLksS8QzF0TzwIoCHjhSp9kQoIP-Hpe8HJIjz_1RGHlN3FofX6vX_ia5XNYQyaeVVh9UP0QQ4G6U3OmhP_7121ySHBM9DLcj6-DEnbY0U713-GQaPmYGiLkpV7EamudmqL0jYHxJZzUlrWI2DwumJtnrlMCjzK-CRRAr43x9IDtcgLOAPkaGxBHBeqCX_nsxikrHMVn0T9ojUP9nI-k7C0LtiEn9qbzc9BB_pCX4MeyRW6Otcyd6w'
\set tok_list 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImhzMSJ9.eyJ0ZW5hbnRfaWQiOlsiYWNtZSIsImdsb2JleCJdLCJzdWIiOiJ1c2VyLW9mLVsnYWNtZScsICdnbG9iZXgnXSIsImV4cCI6NDEwMjQ0NDgwMH0.ihCDPNt-qSv8uzJ8DhMZH6wP4-2aUTe6fj_ICt56AHM'
\set tok_expired 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImhzMSJ9.eyJ0ZW5hbnRfaWQiOiJhY21lIiwic3ViIjoidXNlci1vZi1hY21lIiwiZXhwIjo5NDY2ODQ4MDB9.Y36LecKgZ8_JhBWMNlEKIgYcjOaPb12f3W1TLl19h8c'
\set tok_not_yet 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImhzMSJ9.eyJ0ZW5hbnRfaWQiOiJhY21lIiwic3ViIjoidXNlci1vZi1hY21lIiwiZXhwIjo0MTAyNDQ4NDAwLCJuYmYiOjQxMDI0NDQ4MDB9.R5tSxy5WLIuOgt5hn3UPeDIs4mrT6Tnjv6SAnyuuugU'
\set tok_no_exp 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImhzMSJ9.eyJ0ZW5hbnRfaWQiOiJhY21lIn0.yl8Fpdt7JfubGWmHj88LUXQDHouqqETL3NIDVsKL7js'
\set tok_no_tenant 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImhzMSJ9.eyJzdWIiOiJ4IiwiZXhwIjo0MTAyNDQ0ODAwfQ.zDE4eWvJQ7_RSlHeTsHLoDMHdJeg_jKgWiiJ0C2zVY0'
\set tok_no_kid 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ0ZW5hbnRfaWQiOiJhY21lIiwic3ViIjoidXNlci1vZi1hY21lIiwiZXhwIjo0MTAyNDQ0ODAwfQ.J_Im5eMxMQj7UtdxhEov95LlxO_k_MhcGF60jzXI1pA'
\set tok_unknown_kid 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6Im5vcGUifQ.eyJ0ZW5hbnRfaWQiOiJhY21lIiwic3ViIjoidXNlci1vZi1hY21lIiwiZXhwIjo0MTAyNDQ0ODAwfQ.qc2GZZc-BndVtLi7xyEpPFGgdwumzHBS6AeVmdps7N4'
\set tok_wrong_secret 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImhzMSJ9.eyJ0ZW5hbnRfaWQiOiJnbG9iZXgiLCJzdWIiOiJ1c2VyLW9mLWdsb2JleCIsImV4cCI6NDEwMjQ0NDgwMH0.z4KBCG6ynkkPnZytFiDxHe65xeeGD3VwXNb3yNDupLA'
\set tok_alg_none 'eyJhbGciOiAibm9uZSIsICJ0eXAiOiAiSldUIn0.eyJ0ZW5hbnRfaWQiOiAiZ2xvYmV4IiwgInN1YiI6ICJ1c2VyLW9mLWdsb2JleCIsICJleHAiOiA0MTAyNDQ0ODAwfQ.'
\set tok_edited 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImhzMSJ9.eyJ0ZW5hbnRfaWQiOiJnbG9iZXgiLCJzdWIiOiJ1c2VyLW9mLWdsb2JleCIsImV4cCI6NDEwMjQ0NDgwMH0.wztS7eCD6IOBE0wfZBQRLO66kkO5AUozLUrwlUfr8qA'
\set tok_confused_pem 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6InJzMSJ9.eyJ0ZW5hbnRfaWQiOiJnbG9iZXgiLCJzdWIiOiJ1c2VyLW9mLWdsb2JleCIsImV4cCI6NDEwMjQ0NDgwMH0.WHZ01ih6Q4qXwMcRN4y2zskC4wmjn400xTvMzQ6Gp0o'
\set tok_confused_n 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6InJzMSJ9.eyJ0ZW5hbnRfaWQiOiJnbG9iZXgiLCJzdWIiOiJ1c2VyLW9mLWdsb2JleCIsImV4cCI6NDEwMjQ0NDgwMH0.hXHk-TJY_boIrfX7iOzswLJq3aTAtA_wcj4rzAvNDQA'
\set tok_confused_ed 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCIsImtpZCI6ImVkMSJ9.eyJ0ZW5hbnRfaWQiOiJnbG9iZXgiLCJzdWIiOiJ1c2VyLW9mLWdsb2JleCIsImV4cCI6NDEwMjQ0NDgwMH0.7wusxpwARttbgDA1iU7OlpRHZ779kqU5QK_Fq28xOGU'
\c - postgres
ALTER DATABASE regression SET tenantguard.auto_protect = off;
\c - tg_owner
CREATE SCHEMA signed;
GRANT USAGE ON SCHEMA signed TO tg_app;
SET search_path = signed;
CREATE TABLE accounts (id int PRIMARY KEY, tenant_id text NOT NULL, secret text);
INSERT INTO accounts VALUES (1, 'acme', 'acme secret'), (2, 'globex', 'globex secret');
SELECT tenantguard.protect('accounts') IS NOT NULL AS protected;
CREATE TABLE shared (id int PRIMARY KEY, tenant_id text NOT NULL);
INSERT INTO shared VALUES (1, 'acme'), (2, 'globex'), (3, 'initech');
SELECT tenantguard.protect('shared', tenant_list => true) IS NOT NULL AS protected;
GRANT SELECT, INSERT ON accounts, shared TO tg_app;
-- A SECURITY DEFINER function of the tables' owner (not a superuser) that tries to read the keys,
-- and one that sets the tenant setting for its caller.
CREATE FUNCTION read_keys() RETURNS text LANGUAGE sql SECURITY DEFINER
  AS $$ SELECT current_setting('tenantguard.token_keys') $$;
CREATE FUNCTION become(t text) RETURNS bigint LANGUAGE sql SECURITY DEFINER
  AS $$ SELECT pg_catalog.set_config('app.current_tenant_id', t, true);
        SELECT count(*) FROM signed.accounts $$;
GRANT EXECUTE ON FUNCTION read_keys(), become(text) TO tg_app;
\c - postgres
ALTER ROLE tg_app SET tenantguard.require_signed_tenant = on;
\c - tg_app
SET search_path = signed;
-- The role cannot switch it off.
SET tenantguard.require_signed_tenant = off;
\echo sqlstate :LAST_ERROR_SQLSTATE
-- A tenant set any other way counts as unset.
SET app.current_tenant_id = 'globex';
SELECT count(*) AS plain_set FROM accounts;
BEGIN;
SELECT tenantguard.set_tenant('globex');
SELECT count(*) AS set_tenant, tenantguard.current_tenant() FROM accounts;
INSERT INTO accounts VALUES (3, 'globex', 'planted');
\echo sqlstate :LAST_ERROR_SQLSTATE
ROLLBACK;
SELECT become('globex') AS security_definer_set;
RESET app.current_tenant_id;

-- A valid token sets the tenant for its transaction: reads, writes, current_tenant().
BEGIN;
SELECT tenantguard.set_tenant_token(:'tok_acme');
SELECT id, secret, tenantguard.current_tenant() FROM accounts;
INSERT INTO accounts VALUES (4, 'acme', 'acme two');
INSERT INTO accounts VALUES (5, 'globex', 'planted');
\echo sqlstate :LAST_ERROR_SQLSTATE
ROLLBACK;
-- Replayed in a later transaction without set_tenant_token(): nothing.
SELECT count(*) AS replayed FROM accounts;
-- Every configured algorithm, and the second HMAC key (rotation, by kid).
BEGIN; SELECT tenantguard.set_tenant_token(:'tok_acme_hs2') AS hs256_second_key; SELECT count(*) FROM accounts; COMMIT;
BEGIN; SELECT tenantguard.set_tenant_token(:'tok_acme_ed') AS eddsa; SELECT count(*) FROM accounts; COMMIT;
BEGIN; SELECT tenantguard.set_tenant_token(:'tok_acme_rs') AS rs256; SELECT count(*) FROM accounts; COMMIT;
-- A list of tenants from the token, on a table protected with tenant_list.
BEGIN; SELECT tenantguard.set_tenant_token(:'tok_list'); SELECT id FROM shared ORDER BY id; COMMIT;
-- The token's subject is the application user in the audit trail.
BEGIN;
SELECT tenantguard.set_tenant_token(:'tok_acme') IS NOT NULL;
INSERT INTO accounts VALUES (6, 'acme', 'audited');
SELECT app_user, tenant_id FROM tenantguard.audit_log WHERE table_schema = 'signed' AND record_key = '{"id": 6}';
ROLLBACK;

-- Refused, each with 28000, and the tenant stays what it was.
BEGIN;
SELECT tenantguard.set_tenant_token(:'tok_acme') IS NOT NULL;
SAVEPOINT s;
SELECT tenantguard.set_tenant_token(:'tok_edited');
\echo sqlstate :LAST_ERROR_SQLSTATE
ROLLBACK TO s;
SELECT tenantguard.set_tenant_token(:'tok_alg_none');
\echo sqlstate :LAST_ERROR_SQLSTATE
ROLLBACK TO s;
SELECT tenantguard.set_tenant_token(:'tok_confused_pem');
\echo sqlstate :LAST_ERROR_SQLSTATE
ROLLBACK TO s;
SELECT tenantguard.set_tenant_token(:'tok_confused_n');
\echo sqlstate :LAST_ERROR_SQLSTATE
ROLLBACK TO s;
SELECT tenantguard.set_tenant_token(:'tok_confused_ed');
\echo sqlstate :LAST_ERROR_SQLSTATE
ROLLBACK TO s;
SELECT tenantguard.set_tenant_token(:'tok_expired');
\echo sqlstate :LAST_ERROR_SQLSTATE
ROLLBACK TO s;
SELECT tenantguard.set_tenant_token(:'tok_not_yet');
\echo sqlstate :LAST_ERROR_SQLSTATE
ROLLBACK TO s;
SELECT tenantguard.set_tenant_token(:'tok_no_exp');
\echo sqlstate :LAST_ERROR_SQLSTATE
ROLLBACK TO s;
SELECT tenantguard.set_tenant_token(:'tok_wrong_secret');
\echo sqlstate :LAST_ERROR_SQLSTATE
ROLLBACK TO s;
SELECT tenantguard.set_tenant_token(:'tok_unknown_kid');
\echo sqlstate :LAST_ERROR_SQLSTATE
ROLLBACK TO s;
SELECT tenantguard.set_tenant_token(:'tok_no_kid');
\echo sqlstate :LAST_ERROR_SQLSTATE
ROLLBACK TO s;
SELECT tenantguard.set_tenant_token(:'tok_no_tenant');
\echo sqlstate :LAST_ERROR_SQLSTATE
ROLLBACK TO s;
SELECT tenantguard.set_tenant_token('not a token');
\echo sqlstate :LAST_ERROR_SQLSTATE
ROLLBACK TO s;
SELECT id AS still_acme FROM accounts;
COMMIT;
-- A tenant a token set in a savepoint that is rolled back is gone.
BEGIN;
SAVEPOINT a;
SELECT tenantguard.set_tenant_token(:'tok_globex') IS NOT NULL;
ROLLBACK TO a;
SELECT count(*) AS after_rollback_to FROM accounts;
COMMIT;

-- The keys cannot be read by the role, nor through the owner's SECURITY DEFINER function.
-- (The message's wording differs between majors; the SQLSTATE is what is asserted.)
\set VERBOSITY sqlstate
SHOW tenantguard.token_keys;
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT current_setting('tenantguard.token_keys');
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT current_setting('tenantguard.token_keys', true);
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT count(*) AS in_pg_settings FROM pg_settings WHERE name LIKE 'tenantguard.token%keys%';
SELECT count(*) FROM pg_file_settings;
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT count(*) AS in_role_settings FROM pg_db_role_setting WHERE array_to_string(setconfig, ',') LIKE '%token_keys%';
SELECT read_keys();
\echo sqlstate :LAST_ERROR_SQLSTATE
\set VERBOSITY default
-- Nor set from SQL by anyone but a superuser, nor for a database or role (reload-only setting).
SET tenantguard.token_keys = '{"keys": []}';
\echo sqlstate :LAST_ERROR_SQLSTATE
\c - postgres
ALTER ROLE tg_app SET tenantguard.token_keys = '{"keys": []}';
\echo sqlstate :LAST_ERROR_SQLSTATE
ALTER ROLE tg_app RESET tenantguard.require_signed_tenant;
ALTER DATABASE regression RESET tenantguard.auto_protect;
