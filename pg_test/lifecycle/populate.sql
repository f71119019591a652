-- What a production database holds before a lifecycle test (an upgrade of tenantguard, a
-- pg_upgrade of PostgreSQL, a dump and restore): protected tables of each key type and template,
-- partitions, an exemption, a lint waiver, audit rows and slow-query log rows. Uses only the API
-- of tenantguard 0.1.0, so the same file sets up the upgrade from that release.
\set ON_ERROR_STOP on
SET client_min_messages = warning;
CREATE ROLE lc_owner NOLOGIN;
CREATE ROLE lc_app LOGIN NOSUPERUSER NOBYPASSRLS;
GRANT CREATE ON SCHEMA public TO lc_owner;
CREATE EXTENSION tenantguard;
SET tenantguard.slow_query_ms = 50;   -- a superuser setting; SET ROLE keeps it

SET ROLE lc_owner;
-- Key types
CREATE TABLE k_uuid (id int PRIMARY KEY, tenant_id uuid NOT NULL, v text);
CREATE TABLE k_text (id int PRIMARY KEY, tenant_id text NOT NULL, v text);
CREATE TABLE k_int (id int PRIMARY KEY, tenant_id int NOT NULL, v text);
CREATE TABLE k_bigint (id int PRIMARY KEY, tenant_id bigint NOT NULL, v text);
-- Templates: time window, application roles, shared read, an extra policy, audit options
CREATE TABLE t_templates (id int PRIMARY KEY, tenant_id text NOT NULL, shared boolean NOT NULL DEFAULT false,
                          secret text, created_at timestamptz NOT NULL DEFAULT now(),
                          updated_at timestamptz NOT NULL DEFAULT now());
SELECT tenantguard.protect('t_templates', time_window => '365 days', app_roles => ARRAY['clerk'],
                           shared_read => 'shared', audit_exclude => ARRAY['secret'],
                           extra_policies => '[{"name": "no_negative", "command": "INSERT", "permissive": false, "check": "id > 0"}]');
-- A partitioned table with a custom tenant column
CREATE TABLE events (id int, org_id text NOT NULL, at date NOT NULL) PARTITION BY RANGE (at);
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
SELECT tenantguard.protect('events', tenant_column => 'org_id');
CREATE TABLE events_2027 PARTITION OF events FOR VALUES FROM ('2027-01-01') TO ('2028-01-01');
-- An exemption, and a table without audit
CREATE TABLE lookup (id int PRIMARY KEY, tenant_id text);
SELECT tenantguard.exempt('lookup', 'shared reference data');
CREATE TABLE no_audit (id int PRIMARY KEY, tenant_id text NOT NULL);
SELECT tenantguard.protect('no_audit', audit => false);
RESET ROLE;
GRANT SELECT, INSERT, UPDATE, DELETE ON k_uuid, k_text, k_int, k_bigint, t_templates, events, no_audit TO lc_app;
GRANT SELECT ON lookup TO lc_app;
INSERT INTO tenantguard.lint_waivers (code, object, reason)
VALUES ('no_tenant_index', 'public.k_text', 'small table');

-- Rows of two tenants, written by the application role (audit rows with it).
SET ROLE lc_app;
SET app.user_id = 'populate';
SET app.current_tenant_id = 'a0000000-0000-0000-0000-00000000000a';
INSERT INTO k_uuid VALUES (1, 'a0000000-0000-0000-0000-00000000000a', 'a1'), (2, 'a0000000-0000-0000-0000-00000000000a', 'a2');
UPDATE k_uuid SET v = 'a1 changed' WHERE id = 1;
SET app.current_tenant_id = 'b0000000-0000-0000-0000-00000000000b';
INSERT INTO k_uuid VALUES (3, 'b0000000-0000-0000-0000-00000000000b', 'b1');
DELETE FROM k_uuid WHERE id = 3;
INSERT INTO k_uuid VALUES (4, 'b0000000-0000-0000-0000-00000000000b', 'b2');
SET app.current_tenant_id = 'acme';
INSERT INTO k_text VALUES (1, 'acme', 'a'), (2, 'acme', 'a');
SET app.user_role = 'clerk';
INSERT INTO t_templates (id, tenant_id, secret) VALUES (1, 'acme', 's1'), (2, 'acme', 's2');
UPDATE t_templates SET secret = 's1b' WHERE id = 1;
INSERT INTO events VALUES (1, 'acme', '2026-05-01'), (2, 'acme', '2027-05-01');
INSERT INTO no_audit VALUES (1, 'acme');
SET app.current_tenant_id = 'globex';
INSERT INTO k_text VALUES (3, 'globex', 'g');
INSERT INTO t_templates (id, tenant_id, shared, secret) VALUES (3, 'globex', true, 'g1');
INSERT INTO events VALUES (3, 'globex', '2026-06-01');
INSERT INTO no_audit VALUES (2, 'globex');
SET app.current_tenant_id = '7';
INSERT INTO k_int VALUES (1, 7, 'seven');
INSERT INTO k_bigint VALUES (1, 7, 'seven');
SET app.current_tenant_id = '8';
INSERT INTO k_int VALUES (2, 8, 'eight');
INSERT INTO k_bigint VALUES (2, 8, 'eight');
-- A slow query of tenant acme (over the 50 ms set for this database)
SET app.current_tenant_id = 'acme';
SELECT pg_sleep(0.06) AS lifecycle_slow_query;
RESET ROLE;
SELECT tenantguard.flush_slow_queries() >= 1 AS flushed;
