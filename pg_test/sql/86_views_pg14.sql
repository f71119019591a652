-- max_version: 14
-- PostgreSQL 14 has no security_invoker: a view always reads with its owner's rights. lint()
-- reports a view over a tenant table, and its fix says what to do instead.
\set SHOW_CONTEXT never
\c - postgres
SET tenantguard.auto_protect = off;
CREATE SCHEMA lnt14 AUTHORIZATION tg_owner;
CREATE TABLE lnt14.t (id int, tenant_id int NOT NULL);
CREATE INDEX ON lnt14.t (tenant_id);
SELECT tenantguard.protect('lnt14.t') IS NOT NULL AS protected;
-- Owned by the table's owner, who is bound by FORCE: a warning
ALTER TABLE lnt14.t OWNER TO tg_owner;
CREATE VIEW lnt14.v AS SELECT * FROM lnt14.t;
ALTER VIEW lnt14.v OWNER TO tg_owner;
SELECT level, code, object, fix FROM tenantguard.lint() WHERE object = 'lnt14.v';
-- Owned by a superuser, who bypasses row level security: an error
CREATE VIEW lnt14.v_su AS SELECT * FROM lnt14.t;
SELECT level, code, object FROM tenantguard.lint() WHERE object = 'lnt14.v_su';
DROP SCHEMA lnt14 CASCADE;
