-- Partitioned tables, dry run, unprotect round trip, and the tenant setting's name.
\set SHOW_CONTEXT never
\c - tg_owner
CREATE TABLE events (id int, tenant_id text NOT NULL, at date NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')
  PARTITION BY LIST (tenant_id);
CREATE TABLE events_2026_rest PARTITION OF events_2026 DEFAULT;
INSERT INTO events VALUES (1, 'acme', '2025-05-01'), (2, 'globex', '2025-06-01'), (3, 'globex', '2026-02-01');
GRANT SELECT, INSERT ON events, events_2025, events_2026, events_2026_rest TO tg_app;

SELECT tenantguard.protect('events');
SELECT table_name, rls_enabled, rls_forced, status FROM tenantguard.coverage()
 WHERE table_name LIKE 'events%' ORDER BY table_name;

\c - tg_app
SET app.current_tenant_id = 'acme';
SELECT id FROM events ORDER BY id;
-- Direct access to a partition does not bypass isolation.
SELECT id FROM events_2025 ORDER BY id;
SELECT id FROM events_2026_rest ORDER BY id;
INSERT INTO events_2026_rest VALUES (9, 'globex', '2026-03-01');
\echo sqlstate :LAST_ERROR_SQLSTATE

-- A partitioned table is protected only if every partition can be: a partition the caller does
-- not own stops the whole call, and nothing is changed.
\c - postgres
CREATE TABLE logs (id int, tenant_id int) PARTITION BY LIST (id);
ALTER TABLE logs OWNER TO tg_owner;
CREATE TABLE logs_1 PARTITION OF logs FOR VALUES IN (1);
ALTER TABLE logs_1 OWNER TO tg_owner;
CREATE TABLE logs_2 PARTITION OF logs FOR VALUES IN (2);
\c - tg_owner
SELECT tenantguard.protect('logs');
\echo sqlstate :LAST_ERROR_SQLSTATE
SELECT relname, relrowsecurity FROM pg_class WHERE relname LIKE 'logs%' ORDER BY relname;
SELECT count(*) AS logs_registered FROM tenantguard.registry WHERE relid::text LIKE 'logs%';

-- Round trip: protect then unprotect leaves pg_policy, the RLS flags and the registry as they
-- were. A policy the user wrote, and RLS the user had already enabled, stay.
CREATE TABLE notes (id int, tenant_id text, author text);
ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
CREATE POLICY authors_own ON notes USING (author = current_user);
CREATE TEMP TABLE snap AS
  SELECT polname, polcmd, polpermissive, pg_get_expr(polqual, polrelid) AS q FROM pg_policy
   WHERE polrelid = 'notes'::regclass;
CREATE TEMP TABLE flags AS
  SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = 'notes'::regclass;
CREATE TEMP TABLE reg AS SELECT relid::text, tenant_column FROM tenantguard.registry;

SELECT tenantguard.protect('notes', dry_run => true) = tenantguard.protect('notes', dry_run => true) AS dry_run_stable;
SELECT count(*) AS notes_policies_after_dry_run FROM pg_policy WHERE polrelid = 'notes'::regclass;
SELECT tenantguard.protect('notes');
SELECT polname FROM pg_policy WHERE polrelid = 'notes'::regclass ORDER BY polname;
SELECT tenantguard.unprotect_sql('notes');
SELECT tenantguard.unprotect('notes');
SELECT (SELECT count(*) FROM (
          SELECT polname, polcmd, polpermissive, pg_get_expr(polqual, polrelid) FROM pg_policy
           WHERE polrelid = 'notes'::regclass
          EXCEPT SELECT * FROM snap) d) = 0
       AND (SELECT count(*) FROM pg_policy WHERE polrelid = 'notes'::regclass) = (SELECT count(*) FROM snap)
       AS policies_restored,
       (SELECT (relrowsecurity, relforcerowsecurity) FROM pg_class WHERE oid = 'notes'::regclass)
         = (SELECT (relrowsecurity, relforcerowsecurity) FROM flags) AS flags_restored,
       (SELECT count(*) FROM (SELECT relid::text, tenant_column FROM tenantguard.registry
                              EXCEPT SELECT * FROM reg) d) = 0
       AND (SELECT count(*) FROM tenantguard.registry) = (SELECT count(*) FROM reg) AS registry_restored;
-- Not protected any more: a NOTICE, and nothing done.
SELECT tenantguard.unprotect('notes');

-- A policy someone altered by hand (here a superuser with the guard off) is put back by the
-- next protect().
SELECT tenantguard.protect('notes');
\c - postgres
SET tenantguard.guard = off;
ALTER POLICY tenantguard_tenant_select ON notes USING (true);
\c - tg_owner
SELECT tenantguard.protect('notes');
SELECT pg_get_expr(polqual, polrelid) FROM pg_policy
 WHERE polrelid = 'notes'::regclass AND polname = 'tenantguard_tenant_select';
-- Coverage sees a dropped policy.
\c - postgres
SET tenantguard.guard = off;
DROP POLICY tenantguard_tenant_delete ON notes;
\c - tg_owner
SELECT delete_policy, missing, status FROM tenantguard.coverage() WHERE table_name = 'notes';
SELECT tenantguard.protect('notes');
SELECT status FROM tenantguard.coverage() WHERE table_name = 'notes';

-- Unprotecting a partitioned table unprotects its partitions.
SELECT tenantguard.unprotect('events');
SELECT count(*) AS events_registered FROM tenantguard.registry WHERE relid::text LIKE 'events%';
SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class WHERE relname LIKE 'events%' ORDER BY relname;

-- The tenant setting's name comes from tenantguard.tenant_setting (superuser-only).
SET tenantguard.tenant_setting = 'myapp.org';
\echo sqlstate :LAST_ERROR_SQLSTATE
\c - postgres
SET tenantguard.tenant_setting = 'myapp.org';
CREATE TABLE org_docs (id int, tenant_id int);
SELECT tenantguard.protect('org_docs');
SELECT tenantguard.set_tenant('7', is_local => false);
SELECT current_setting('myapp.org');
SET tenantguard.tenant_setting = 'search_path';
SELECT tenantguard.current_tenant();
\echo sqlstate :LAST_ERROR_SQLSTATE
