-- Roles used throughout the suite. None is a superuser and none bypasses RLS:
--   tg_owner  owns the tenant tables (FORCE ROW LEVEL SECURITY must bind it too)
--   tg_app    the application's role
--   tg_other  owns nothing
CREATE ROLE tg_owner LOGIN NOSUPERUSER NOBYPASSRLS;
CREATE ROLE tg_app LOGIN NOSUPERUSER NOBYPASSRLS;
CREATE ROLE tg_other LOGIN NOSUPERUSER NOBYPASSRLS;
GRANT CREATE ON SCHEMA public TO tg_owner, tg_other;
GRANT CREATE ON DATABASE regression TO tg_owner;
CREATE EXTENSION tenantguard;
SELECT extname, extversion IS NOT NULL AS has_version, n.nspname
  FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace
 WHERE extname = 'tenantguard';
-- The registry is kept by pg_dump.
SELECT c.relname FROM pg_extension e, unnest(e.extconfig) AS cfg JOIN pg_class c ON c.oid = cfg
 WHERE e.extname = 'tenantguard' ORDER BY 1;
-- Files 10 to 50 call protect() themselves on tables they fill first; 60 turns auto-protect on.
ALTER DATABASE regression SET tenantguard.auto_protect = off;
