-- The comparison triggers for bench/audit_bench.sh and bench/audit_instructions.sh.
SET client_min_messages = warning;
CREATE EXTENSION tenantguard;
CREATE EXTENSION moddatetime;
ALTER DATABASE postgres SET tenantguard.auto_protect = off;
-- ALTER DATABASE reaches new sessions only: this one creates tables with a tenant_id too, which
-- auto-protect would otherwise give tenantguard's audit trigger (the comparison tables included).
SET tenantguard.auto_protect = off;

-- The seed's audit table and trigger (shared/seeds), indexed like tenantguard.audit_log.
CREATE TABLE audit_logs (
  id bigserial PRIMARY KEY, table_name text, operation text, tenant_id uuid, record_id bigint,
  old_values json, new_values json, user_id text, created_at timestamptz);
CREATE INDEX ON audit_logs (table_name, record_id);
CREATE INDEX ON audit_logs (tenant_id, created_at);
CREATE FUNCTION seed_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO audit_logs (table_name, operation, tenant_id, record_id, new_values, user_id, created_at)
    VALUES (TG_TABLE_NAME, 'INSERT', NEW.tenant_id, NEW.id, row_to_json(NEW), current_setting('app.user_id', true), now());
    RETURN NEW;
  ELSIF TG_OP = 'UPDATE' THEN
    INSERT INTO audit_logs (table_name, operation, tenant_id, record_id, old_values, new_values, user_id, created_at)
    VALUES (TG_TABLE_NAME, 'UPDATE', NEW.tenant_id, NEW.id, row_to_json(OLD), row_to_json(NEW), current_setting('app.user_id', true), now());
    RETURN NEW;
  ELSIF TG_OP = 'DELETE' THEN
    INSERT INTO audit_logs (table_name, operation, tenant_id, record_id, old_values, user_id, created_at)
    VALUES (TG_TABLE_NAME, 'DELETE', OLD.tenant_id, OLD.id, row_to_json(OLD), current_setting('app.user_id', true), now());
    RETURN OLD;
  END IF;
  RETURN NULL;
END $$;

-- The common jsonb audit-trigger pattern: to_jsonb rows, changed columns, skip no-op updates.
CREATE TABLE audit_jsonb (
  id bigserial PRIMARY KEY, occurred_at timestamptz, table_oid oid, op text, tenant_id text,
  record_key jsonb, old_values jsonb, new_values jsonb, changed_columns text[], db_user name,
  app_user text);
CREATE INDEX ON audit_jsonb (table_oid, record_key);
CREATE INDEX ON audit_jsonb (tenant_id, occurred_at);
CREATE FUNCTION jsonb_audit() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE o jsonb; n jsonb; changed text[];
BEGIN
  IF TG_OP = 'UPDATE' THEN
    o := to_jsonb(OLD); n := to_jsonb(NEW);
    SELECT array_agg(e.key) INTO changed FROM jsonb_each(n) e WHERE e.value IS DISTINCT FROM o -> e.key;
    IF changed IS NULL THEN RETURN NULL; END IF;
  ELSIF TG_OP = 'INSERT' THEN n := to_jsonb(NEW);
  ELSE o := to_jsonb(OLD);
  END IF;
  INSERT INTO audit_jsonb (occurred_at, table_oid, op, tenant_id, record_key, old_values, new_values,
                           changed_columns, db_user, app_user)
  VALUES (clock_timestamp(), TG_RELID, TG_OP, COALESCE(n, o) ->> 'tenant_id',
          jsonb_build_object('id', COALESCE(n, o) -> 'id'), o, n, changed, current_user,
          current_setting('app.user_id', true));
  RETURN NULL;
END $$;

CREATE FUNCTION plpgsql_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.updated_at := now(); RETURN NEW; END $$;

-- The comparison audit tables must carry no trigger and no row level security of their own.
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_trigger WHERE NOT tgisinternal
              AND tgrelid IN ('audit_logs'::regclass, 'audit_jsonb'::regclass))
     OR EXISTS (SELECT 1 FROM pg_class WHERE relrowsecurity
                 AND oid IN ('audit_logs'::regclass, 'audit_jsonb'::regclass)) THEN
    RAISE EXCEPTION 'the comparison audit tables have triggers or row level security';
  END IF;
END $$;
