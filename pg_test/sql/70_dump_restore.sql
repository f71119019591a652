-- pg_dump + pg_restore give back the same policies, RLS flags, registry and exemptions, and the
-- event triggers do not fight the restore. Then DROP EXTENSION and CREATE EXTENSION again.
\set SHOW_CONTEXT never
\c - postgres
CREATE DATABASE tg_src;
\c tg_src postgres
CREATE EXTENSION tenantguard;
CREATE ROLE tg_dump_owner NOLOGIN;
GRANT CREATE ON SCHEMA public TO tg_dump_owner;
SET ROLE tg_dump_owner;
CREATE TABLE t1 (id int PRIMARY KEY, tenant_id text NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
SELECT tenantguard.protect('t1', time_window => '30 days', app_roles => ARRAY['clerk'],
                           shared_read => 'id < 0');
CREATE TABLE t2 (id int, tenant_id uuid) PARTITION BY HASH (id);
CREATE TABLE t2_0 PARTITION OF t2 FOR VALUES WITH (MODULUS 2, REMAINDER 0);
CREATE TABLE t2_1 PARTITION OF t2 FOR VALUES WITH (MODULUS 2, REMAINDER 1);
CREATE TABLE lookup (id int, tenant_id int);
SELECT tenantguard.exempt('lookup', 'reference data');
-- The tenant-context options: a list with a hierarchy, and a JSON claim with the column default.
CREATE TABLE orgs (id bigint PRIMARY KEY, parent_id bigint);
CREATE TABLE t3 (id int, tenant_id bigint NOT NULL);
SELECT tenantguard.protect('t3', tenant_list => true, hierarchy => 'orgs(parent_id)');
RESET ROLE;
SET tenantguard.tenant_setting = 'request.jwt.claims:app_metadata.tenant_id';
CREATE TABLE t4 (id int, tenant_id uuid NOT NULL);
ALTER TABLE t4 OWNER TO tg_dump_owner;
SELECT tenantguard.protect('t4', tenant_default => true);
RESET tenantguard.tenant_setting;
INSERT INTO t1 (id, tenant_id) VALUES (1, 'acme'), (2, 'globex'), (3, 'acme');
UPDATE t1 SET tenant_id = 'globex' WHERE id = 3;
DELETE FROM t1 WHERE id = 3;
GRANT SELECT ON t1 TO tg_app;
-- The state to compare: every table's RLS flags and policies, the registry and the exemptions.
CREATE VIEW tg_state AS
  SELECT 'table' AS kind, c.relname::text AS name,
         format('%s %s', c.relrowsecurity, c.relforcerowsecurity) AS detail
    FROM pg_class c WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
  UNION ALL
  SELECT 'policy', format('%s.%s', p.polrelid::regclass, p.polname),
         format('%s %s %s %s %s', p.polcmd, p.polpermissive, p.polroles::regrole[],
                pg_get_expr(p.polqual, p.polrelid), pg_get_expr(p.polwithcheck, p.polrelid))
    FROM pg_policy p
  UNION ALL
  SELECT 'registry', r.relid::text,
         format('%s %s %s %s %s %s', r.tenant_column, r.options, r.policies, r.triggers,
                r.rls_was_enabled, r.rls_was_forced)
    FROM tenantguard.registry r
  UNION ALL
  SELECT 'exemption', x.relid::text, x.reason FROM tenantguard.exemptions x
  UNION ALL
  SELECT 'trigger', format('%s.%s', t.tgrelid::regclass, t.tgname),
         format('%s %s %s %s', t.tgtype, t.tgenabled, t.tgfoid::regprocedure, encode(t.tgargs, 'escape'))
    FROM pg_trigger t WHERE NOT t.tgisinternal
  UNION ALL
  SELECT 'default', format('%s.%s', d.adrelid::regclass, a.attname), pg_get_expr(d.adbin, d.adrelid)
    FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
   WHERE d.adrelid IN (SELECT oid FROM pg_class WHERE relnamespace = 'public'::regnamespace)
  UNION ALL
  SELECT 'audit', a.id::text,
         format('%s %s %s %s %s %s %s %s %s', a.table_name, a.op, a.tenant_id, a.record_key, a.old_values,
                a.new_values, a.changed_columns, a.occurred_at, a.txid)
    FROM tenantguard.audit_log a;
SELECT kind, name FROM tg_state ORDER BY 1, 2;
SELECT md5(string_agg(format('%s|%s|%s', kind, name, detail), ',' ORDER BY kind, name)) AS state FROM tg_state \gset src_
-- The running server's own client programs.
SELECT setting AS bindir FROM pg_config WHERE name = 'BINDIR' \gset
\setenv TG_BINDIR :bindir
\! $TG_BINDIR/pg_dump -Fc -d tg_src -f /tmp/tenantguard_regress.dump && echo dumped
CREATE DATABASE tg_dst;
\! $TG_BINDIR/pg_restore --exit-on-error -d tg_dst /tmp/tenantguard_regress.dump && echo restored
\! rm -f /tmp/tenantguard_regress.dump
\c tg_dst postgres
SELECT md5(string_agg(format('%s|%s|%s', kind, name, detail), ',' ORDER BY kind, name)) = :'src_state' AS same_state
  FROM tg_state;
-- The audit log came back whole, and its id sequence with it: the next row follows the old ones.
SELECT count(*) AS audit_rows, max(id) AS max_id FROM tenantguard.audit_log \gset
SELECT :audit_rows AS audit_rows;
INSERT INTO t1 (id, tenant_id) VALUES (4, 'acme');
SELECT id > :max_id AS new_id_follows, op, record_key FROM tenantguard.audit_log WHERE record_key = '{"id": 4}';
SELECT table_name, status, exempt_reason FROM tenantguard.coverage() ORDER BY table_name;
-- Isolation holds in the restored database, and protect() finds nothing to change.
\c tg_dst tg_app
SET app.current_tenant_id = 'acme';
SET app.user_role = 'clerk';
SELECT id, tenant_id FROM t1;
-- The tenant's audit trail came back with the tables: its rows name the restored table (the
-- table's OID changed; audit_log.table_oid is a regclass, written by name in the dump).
SELECT op, record_key, table_oid = 't1'::regclass AS restored_table FROM tenantguard.audit_log ORDER BY id;
SELECT count(*) AS history_of_id_1 FROM tenantguard.audit_history('t1', '{"id": 1}');
\c tg_dst postgres
SET ROLE tg_dump_owner;
SELECT tenantguard.protect('t1', time_window => '30 days', app_roles => ARRAY['clerk'],
                           shared_read => 'id < 0');
SELECT tenantguard.protect('t2');
RESET ROLE;

-- DROP EXTENSION: refused while tables carry tenantguard's triggers. With CASCADE the triggers,
-- the registry, the exemptions, the audit log and the tenant policies (they call tenantguard's
-- tenant functions) go; RLS stays enabled and forced, so the tables fail closed: the app role
-- sees no rows. CREATE EXTENSION again: coverage() reports the tables as partial until protect()
-- adopts them again, and the app role reads its tenant's rows again.
DROP VIEW tg_state;
\set VERBOSITY terse
DROP EXTENSION tenantguard;
\set VERBOSITY default
\echo sqlstate :LAST_ERROR_SQLSTATE
SET client_min_messages = warning;
DROP EXTENSION tenantguard CASCADE;
RESET client_min_messages;
SELECT count(*) AS tenantguard_triggers_left FROM pg_trigger WHERE tgname LIKE 'tenantguard%';
SELECT relname, relrowsecurity, relforcerowsecurity,
       (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid) AS policies
  FROM pg_class c WHERE relnamespace = 'public'::regnamespace AND relkind IN ('r', 'p') ORDER BY relname;
\c tg_dst tg_app
SET app.current_tenant_id = 'acme';
SET app.user_role = 'clerk';
SELECT id, tenant_id FROM t1;
\c tg_dst postgres
CREATE EXTENSION tenantguard;
SELECT table_name, status, missing FROM tenantguard.coverage() ORDER BY table_name;
SET ROLE tg_dump_owner;
SELECT tenantguard.protect('t1', time_window => '30 days', app_roles => ARRAY['clerk'],
                           shared_read => 'id < 0');
SELECT tenantguard.protect('t2');
SELECT tenantguard.exempt('lookup', 'reference data');
RESET ROLE;
SELECT table_name, status FROM tenantguard.coverage() ORDER BY table_name;
\c tg_dst tg_app
SET app.current_tenant_id = 'acme';
SET app.user_role = 'clerk';
SELECT id, tenant_id FROM t1;
\c regression postgres
DROP DATABASE tg_src;
DROP DATABASE tg_dst;
DROP ROLE tg_dump_owner;
