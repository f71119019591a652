-- Audit trail and updated_at triggers: every operation, exclusions, no-op updates, TRUNCATE,
-- rollbacks, tenant visibility, awkward types, keys, renames, the guard, purge_audit().
\set SHOW_CONTEXT never
\c - tg_owner
CREATE TABLE accounts (
  id bigint PRIMARY KEY, tenant_id text NOT NULL, email text, password_hash text,
  balance numeric(12,2), updated_at timestamptz NOT NULL DEFAULT now());
GRANT SELECT, INSERT, UPDATE, DELETE ON accounts TO tg_app;
-- Excluding a column the table lacks is refused, and nothing is attached.
SELECT tenantguard.protect('accounts', audit_exclude => ARRAY['no_such_column']);
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT count(*) AS triggers FROM pg_trigger WHERE tgrelid = 'accounts'::regclass;
SELECT tenantguard.protect('accounts', audit_exclude => ARRAY['password_hash']);
SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'accounts'::regclass ORDER BY tgname;
-- Idempotent.
SELECT tenantguard.protect('accounts', audit_exclude => ARRAY['password_hash']);
-- Nobody writes the audit log by hand, not even the owner of an audited table.
INSERT INTO tenantguard.audit_log (occurred_at, statement_at, txid, table_schema, table_name, table_oid,
                                   op, db_user, session_user_name)
VALUES (now(), now(), 1, 'public', 'accounts', 0, 'INSERT', 'x', 'x');
\echo sqlstate :LAST_ERROR_SQLSTATE
DELETE FROM tenantguard.audit_log;
\echo sqlstate :LAST_ERROR_SQLSTATE
-- Nor the table behind the view.
INSERT INTO tenantguard._audit_log (occurred_at, statement_at, txid, table_schema, table_name, table_oid,
                                    op, db_user, session_user_name)
VALUES (now(), now(), 1, 'public', 'accounts', 0, 'INSERT', 'x', 'x');
\echo sqlstate :LAST_ERROR_SQLSTATE
DELETE FROM tenantguard._audit_log;
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT count(*) FROM tenantguard._audit_log;
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT tenantguard.purge_audit('0 seconds');
\echo sqlstate :LAST_ERROR_SQLSTATE

-- The application writes as tenant acme, then globex, with an application user set.
\c - tg_app
SET application_name = 'billing-api';
SET app.user_id = 'alice@acme';
SELECT tenantguard.set_tenant('acme', false);
INSERT INTO accounts (id, tenant_id, email, password_hash, balance)
VALUES (1, 'acme', 'a@acme', 'secret-1', 10), (2, 'acme', 'b@acme', 'secret-2', 20);
UPDATE accounts SET balance = balance + 5, password_hash = 'secret-1b' WHERE id = 1;
-- A no-op update writes nothing and keeps updated_at.
SELECT updated_at AS before_noop FROM accounts WHERE id = 2 \gset
UPDATE accounts SET email = email WHERE id = 2;
SELECT updated_at = :'before_noop' AS updated_at_kept FROM accounts WHERE id = 2;
DELETE FROM accounts WHERE id = 2;
-- Rolled back: no audit rows. Savepoint rolled back: only the surviving change.
BEGIN;
INSERT INTO accounts (id, tenant_id, email) VALUES (3, 'acme', 'gone@acme');
ROLLBACK;
BEGIN;
INSERT INTO accounts (id, tenant_id, email) VALUES (4, 'acme', 'kept@acme');
SAVEPOINT s;
INSERT INTO accounts (id, tenant_id, email) VALUES (5, 'acme', 'gone@acme');
UPDATE accounts SET email = 'changed' WHERE id = 4;
ROLLBACK TO SAVEPOINT s;
COMMIT;
SELECT tenantguard.set_tenant('globex', false);
SET app.user_id = 'gina@globex';
INSERT INTO accounts (id, tenant_id, email) VALUES (10, 'globex', 'g@globex');
UPDATE accounts SET balance = 1 WHERE id = 10 RETURNING updated_at = now() AS updated_at_is_now;

-- What acme sees: its own rows only, excluded column absent, changed columns listed.
SELECT tenantguard.set_tenant('acme', false);
SELECT op, tenant_id, record_key, old_values ->> 'balance' AS old_balance,
       new_values ->> 'balance' AS new_balance, changed_columns,
       (old_values ? 'password_hash') OR (new_values ? 'password_hash') AS has_secret,
       db_user, session_user_name, app_user, application_name, table_schema, table_name,
       table_oid = 'accounts'::regclass AS oid_ok, statement_at <= occurred_at AS times_ok,
       txid > 0 AS txid_ok
  FROM tenantguard.audit_log WHERE table_oid = 'accounts'::regclass ORDER BY id;
-- The committed transaction with a savepoint left exactly one row.
SELECT count(*) AS rows_for_id_4_and_5 FROM tenantguard.audit_log
 WHERE record_key IN ('{"id": 4}', '{"id": 5}');
-- globex sees only its rows; no tenant sees nothing.
SELECT tenantguard.set_tenant('globex', false);
SELECT op, tenant_id, app_user FROM tenantguard.audit_log WHERE table_oid = 'accounts'::regclass ORDER BY id;
SELECT tenantguard.set_tenant(NULL, false);
SELECT count(*) AS without_tenant FROM tenantguard.audit_log;
-- The audit rows' txid is the writing transaction's.
SELECT tenantguard.set_tenant('acme', false);
BEGIN;
INSERT INTO accounts (id, tenant_id) VALUES (6, 'acme');
SELECT txid = txid_current() AS same_txid FROM tenantguard.audit_log
 WHERE table_oid = 'accounts'::regclass AND record_key = '{"id": 6}';
COMMIT;
-- The time window (a superuser setting) limits what tenants see.
\c - postgres
ALTER ROLE tg_app SET tenantguard.audit_window = '1 hour';
UPDATE tenantguard._audit_log SET occurred_at = occurred_at - interval '2 hours'
 WHERE table_oid = 'accounts'::regclass AND record_key = '{"id": 1}' AND op = 'INSERT';
\c - tg_app
SELECT tenantguard.set_tenant('acme', false);
SELECT op FROM tenantguard.audit_log
 WHERE table_oid = 'accounts'::regclass AND record_key = '{"id": 1}' ORDER BY id;
\c - postgres
ALTER ROLE tg_app RESET tenantguard.audit_window;
-- Members of tenantguard_admin see every tenant's rows.
CREATE ROLE tg_auditor LOGIN NOSUPERUSER NOBYPASSRLS IN ROLE tenantguard_admin;
\c - tg_auditor
SELECT tenant_id, count(*) FROM tenantguard.audit_log WHERE table_oid = 'accounts'::regclass
 GROUP BY 1 ORDER BY 1;

-- TRUNCATE writes one statement-level row, with the session's tenant.
\c - tg_owner
SELECT tenantguard.set_tenant('acme', false);
TRUNCATE accounts;
SELECT op, tenant_id, record_key, old_values FROM tenantguard.audit_log
 WHERE table_oid = 'accounts'::regclass AND op = 'TRUNCATE';

-- Keys: composite, and none (record_key is NULL). Awkward types give what to_jsonb() gives.
CREATE TYPE mood AS ENUM ('sad', 'happy');
CREATE DOMAIN positive AS integer CHECK (VALUE > 0);
CREATE TABLE odd (
  tenant_id uuid NOT NULL, line int NOT NULL, tags text[], doc jsonb, js json, amount numeric,
  raw bytea, feeling mood, qty positive, ratio float8, at timestamp, day date, small int2,
  flag boolean, ch char(3), ref uuid, twice int GENERATED ALWAYS AS (qty * 2) STORED,
  PRIMARY KEY (tenant_id, line));
CREATE TABLE nokey (tenant_id text, note text);
SELECT tenantguard.protect('odd');
SELECT tenantguard.protect('nokey');
SELECT tenantguard.set_tenant('6f1c2a4e-0000-4000-8000-000000000001', false);
INSERT INTO odd (tenant_id, line, tags, doc, js, amount, raw, feeling, qty, ratio, at, day, small, flag, ch, ref)
VALUES ('6f1c2a4e-0000-4000-8000-000000000001', 1, ARRAY['a', NULL, 'c"q'], '{"n": [1, {"x": null}]}',
        '{"j": 1}', 12345678901234567890.123, '\xdeadbeef', 'happy', 7, 0.1, '2024-02-29 23:59:59.5',
        '2024-03-01', -3, true, 'ab', 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'),
       ('6f1c2a4e-0000-4000-8000-000000000001', 2, '{}', '"just a string"', 'null', 'NaN', '', NULL,
        NULL, '-Infinity', 'infinity', '-infinity', NULL, false, NULL, NULL);
SELECT a.record_key, a.new_values = to_jsonb(o) AS same_as_to_jsonb,
       a.tenant_id = o.tenant_id::text AS tenant_as_text, a.new_values ->> 'ref' AS ref
  FROM tenantguard.audit_log a JOIN odd o ON a.record_key = jsonb_build_object('line', o.line, 'tenant_id', o.tenant_id)
 WHERE a.table_oid = 'odd'::regclass ORDER BY o.line;
UPDATE odd SET qty = 8 WHERE line = 1;
SELECT changed_columns FROM tenantguard.audit_log WHERE table_oid = 'odd'::regclass AND op = 'UPDATE';
SELECT tenantguard.set_tenant('t1', false);
INSERT INTO nokey VALUES ('t1', 'no primary key');
SELECT op, record_key IS NULL AS key_is_null, new_values FROM tenantguard.audit_log
 WHERE table_oid = 'nokey'::regclass;

-- A table renamed after protect(): audit rows name it as it is called at the time of the change.
ALTER TABLE nokey RENAME TO renamed_nokey;
INSERT INTO renamed_nokey VALUES ('t1', 'after rename');
SELECT table_name, new_values ->> 'note' AS note FROM tenantguard.audit_log
 WHERE table_oid = 'renamed_nokey'::regclass ORDER BY id;

-- Partitions carry the triggers; rows name the partition.
CREATE TABLE parted (id int, tenant_id text NOT NULL) PARTITION BY LIST (tenant_id);
CREATE TABLE parted_t1 PARTITION OF parted FOR VALUES IN ('t1');
SELECT tenantguard.protect('parted');
INSERT INTO parted VALUES (1, 't1');
SELECT table_name, op FROM tenantguard.audit_log WHERE table_oid = 'parted_t1'::regclass;
SELECT count(*) AS triggers_on_partitioned FROM pg_trigger WHERE tgrelid = 'parted'::regclass;

-- updated_at: timestamp without time zone, keep_noop mode, explicit request without the column,
-- a column of the wrong type, and updated_at => false.
CREATE TABLE stamps (id int PRIMARY KEY, tenant_id text, v int, updated_at timestamp);
SELECT tenantguard.protect('stamps', skip_noop_updates => false, audit => false);
SELECT tgname FROM pg_trigger WHERE tgrelid = 'stamps'::regclass ORDER BY tgname;
INSERT INTO stamps VALUES (1, 't1', 1, NULL);
UPDATE stamps SET v = v WHERE id = 1 RETURNING updated_at = now()::timestamp AS stamped_even_if_noop;
CREATE TABLE nostamp (id int, tenant_id text);
SELECT tenantguard.protect('nostamp', updated_at => true);
\echo sqlstate :LAST_ERROR_SQLSTATE
CREATE TABLE badstamp (id int, tenant_id text, updated_at date);
SELECT tenantguard.protect('badstamp', updated_at => true);
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT tenantguard.protect('badstamp');
SELECT tgname FROM pg_trigger WHERE tgrelid = 'badstamp'::regclass ORDER BY tgname;
SELECT tenantguard.protect('stamps', updated_at => false, audit => false);

-- The guard: attached triggers cannot be dropped, disabled or renamed; unprotect() removes them.
DROP TRIGGER tenantguard_audit ON odd;
\echo sqlstate :LAST_ERROR_SQLSTATE
ALTER TABLE odd DISABLE TRIGGER tenantguard_audit;
\echo sqlstate :LAST_ERROR_SQLSTATE
ALTER TABLE odd DISABLE TRIGGER ALL;
\echo sqlstate :LAST_ERROR_SQLSTATE
ALTER TRIGGER tenantguard_audit ON odd RENAME TO something_else;
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT tenantguard.unprotect('odd');
SELECT count(*) AS triggers_left FROM pg_trigger WHERE tgrelid = 'odd'::regclass;
-- A user's own trigger on the table is left alone by protect() and unprotect().
CREATE FUNCTION noop_trigger() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END $$;
CREATE TRIGGER mine BEFORE INSERT ON odd FOR EACH ROW EXECUTE FUNCTION noop_trigger();
SELECT tenantguard.protect('odd', audit => false);
SELECT tenantguard.unprotect('odd');
SELECT tgname FROM pg_trigger WHERE tgrelid = 'odd'::regclass;
-- Attaching tenantguard's audit trigger by hand to a table it does not audit is refused.
CREATE TRIGGER forged AFTER INSERT ON odd FOR EACH ROW EXECUTE FUNCTION tenantguard.audit();
INSERT INTO odd (tenant_id, line) VALUES ('6f1c2a4e-0000-4000-8000-000000000001', 9);
\echo sqlstate :LAST_ERROR_SQLSTATE
DROP TRIGGER forged ON odd;
SELECT tenantguard.audit();
\echo sqlstate :LAST_ERROR_SQLSTATE

-- purge_audit(): admins only, in batches, reports the count; bad arguments are refused.
-- Six more rows made old, so that 7 go: two full batches of 3 and a last one of 1.
\c - postgres
UPDATE tenantguard._audit_log SET occurred_at = occurred_at - interval '2 hours'
 WHERE id IN (SELECT id FROM tenantguard._audit_log
               WHERE occurred_at >= now() - interval '1 hour' ORDER BY id LIMIT 6);
\c - tg_auditor
SELECT count(*) AS all_rows FROM tenantguard.audit_log \gset
SELECT count(*) AS older_than_1h FROM tenantguard.audit_log WHERE occurred_at < now() - interval '1 hour';
SELECT tenantguard.purge_audit('1 hour', batch_size => 3) AS purged;
SELECT count(*) AS older_than_1h_after FROM tenantguard.audit_log WHERE occurred_at < now() - interval '1 hour';
SELECT :all_rows - count(*) AS gone FROM tenantguard.audit_log;
SELECT tenantguard.purge_audit('1 hour', batch_size => 1) AS purged_again;
SELECT tenantguard.purge_audit('-1 day');
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT tenantguard.purge_audit('1 day', batch_size => 0);
\echo sqlstate :LAST_ERROR_SQLSTATE
\c - postgres
DROP ROLE tg_auditor;
-- If audit_log is not a plain table with plain indexes (here: an expression index), the trigger
-- writes through a kept INSERT plan as the audit log's owner: the writing role still needs no
-- privilege on it, and the row is the same.
\c - postgres
CREATE INDEX audit_log_expr ON tenantguard._audit_log ((lower(op)));
\c - tg_app
SELECT tenantguard.set_tenant('acme', false);
INSERT INTO accounts (id, tenant_id, email) VALUES (20, 'acme', 'via@plan');
SELECT op, tenant_id, record_key, new_values ->> 'email' AS email, db_user
  FROM tenantguard.audit_log WHERE table_oid = 'accounts'::regclass AND record_key = '{"id": 20}';
\c - postgres
DROP INDEX tenantguard.audit_log_expr;
\c - tg_app
SELECT tenantguard.set_tenant('acme', false);
INSERT INTO accounts (id, tenant_id, email) VALUES (21, 'acme', 'direct@again');
SELECT op, record_key FROM tenantguard.audit_log
 WHERE table_oid = 'accounts'::regclass AND record_key = '{"id": 21}';

-- Excluded columns never appear in the log, not even in changed_columns; an UPDATE that changes
-- only an excluded column still writes its row (something changed).
\c - tg_owner
CREATE TABLE logins (id int PRIMARY KEY, tenant_id uuid NOT NULL, email text, password_hash text,
                     updated_at timestamptz);
GRANT SELECT, INSERT, UPDATE, DELETE ON logins TO tg_app;
SELECT tenantguard.protect('logins', audit_exclude => ARRAY['password_hash']);
SELECT tenantguard.set_tenant('6f1c2a4e-0000-4000-8000-0000000000aa', false);
INSERT INTO logins VALUES (1, '6f1c2a4e-0000-4000-8000-0000000000aa', 'l@acme', 'pw-1', NULL);
UPDATE logins SET password_hash = 'pw-2';
UPDATE logins SET password_hash = 'pw-3', email = 'l2@acme';
-- Renaming an excluded column carries the exclusion to the new name.
ALTER TABLE logins RENAME COLUMN password_hash TO pw;
UPDATE logins SET pw = 'pw-4', email = 'l3@acme';
SELECT op, changed_columns, (old_values ?| ARRAY['password_hash', 'pw'])
                            OR (new_values ?| ARRAY['password_hash', 'pw']) AS has_secret
  FROM tenantguard.audit_log WHERE table_oid = 'logins'::regclass ORDER BY id;
SELECT tenantguard.protect('logins', audit_exclude => ARRAY['pw']);
-- Idempotent with tenantguard on the search_path too.
SET search_path = public, tenantguard;
SELECT tenantguard.protect('logins', audit_exclude => ARRAY['pw']);
RESET search_path;
-- updated_at dropped later: UPDATEs keep working (the trigger stands aside), and protect()
-- detaches it. A domain over timestamptz counts as timestamptz.
ALTER TABLE logins DROP COLUMN updated_at;
UPDATE logins SET email = 'l4@acme';
SELECT tenantguard.protect('logins', audit_exclude => ARRAY['pw']);
CREATE DOMAIN stamp AS timestamptz;
CREATE TABLE domstamp (id int PRIMARY KEY, tenant_id text, v int, updated_at stamp);
SELECT tenantguard.protect('domstamp', audit => false);
SELECT tenantguard.set_tenant('t1', false) AS tenant;
INSERT INTO domstamp VALUES (1, 't1', 1, '2000-01-01');
BEGIN;
UPDATE domstamp SET v = 2 RETURNING updated_at = now() AS domain_stamped;
COMMIT;
-- The time window's column follows a rename the same way: protect() with the new name then
-- changes nothing.
CREATE TABLE windowed (id int PRIMARY KEY, tenant_id text, created_at timestamptz DEFAULT now());
SELECT tenantguard.protect('windowed', time_window => '30 days', audit => false);
ALTER TABLE windowed RENAME COLUMN created_at TO made_at;
SELECT tenantguard.protect('windowed', time_window => '30 days', time_column => 'made_at', audit => false);
-- A tenant whose setting spells its uuid differently (upper case, braces) still reads its
-- audit rows, as it reads the table's rows.
\c - tg_app
SET app.current_tenant_id = '6F1C2A4E-0000-4000-8000-0000000000AA';
SELECT count(*) AS table_rows FROM logins;
SELECT count(*) AS audit_rows FROM tenantguard.audit_log WHERE table_oid = 'logins'::regclass;
SET app.current_tenant_id = '{6f1c2a4e000040008000-0000000000aa}';
SELECT count(*) AS audit_rows_braces FROM tenantguard.audit_log WHERE table_oid = 'logins'::regclass;
SET app.current_tenant_id = '6f1c2a4e-0000-4000-8000-0000000000ab';
SELECT count(*) AS other_tenant FROM tenantguard.audit_log WHERE table_oid = 'logins'::regclass;
