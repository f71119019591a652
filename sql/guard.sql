-- The event triggers (src/guard/) and the cleanup helper they call. Loaded last (finalize), so
-- that CREATE EXTENSION's own objects are in place before the triggers exist.
-- Forget dropped tables. SECURITY DEFINER because the registry only lets a table's owner delete
-- its row, and a dropped table has no owner any more. It only removes rows of tables that no longer
-- exist, so any role may call it (the sql_drop trigger runs as whoever drops the table).
CREATE FUNCTION tenantguard._forget(oids oid[]) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
  DELETE FROM tenantguard.registry
   WHERE relid::oid = ANY (oids)
     AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = relid::oid);
  DELETE FROM tenantguard.exemptions
   WHERE relid::oid = ANY (oids)
     AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = relid::oid);
  DELETE FROM tenantguard.adoption_log
   WHERE relid::oid = ANY (oids)
     AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = relid::oid);
$$;

CREATE FUNCTION tenantguard._ddl_command_end() RETURNS event_trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'tenantguard_ddl_command_end';
CREATE FUNCTION tenantguard._sql_drop() RETURNS event_trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'tenantguard_sql_drop';
CREATE EVENT TRIGGER tenantguard_ddl_command_end ON ddl_command_end
  EXECUTE FUNCTION tenantguard._ddl_command_end();
CREATE EVENT TRIGGER tenantguard_sql_drop ON sql_drop
  EXECUTE FUNCTION tenantguard._sql_drop();
CREATE FUNCTION tenantguard._ddl_command_start() RETURNS event_trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'tenantguard_ddl_command_start';
CREATE EVENT TRIGGER tenantguard_ddl_command_start ON ddl_command_start
  WHEN TAG IN ('ALTER TABLE')
  EXECUTE FUNCTION tenantguard._ddl_command_start();
