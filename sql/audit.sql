-- The audit trail: one row per changed row of every audited table, written by tenantguard's
-- trigger (src/audit.rs) straight into the heap. No role gets INSERT, UPDATE or DELETE on it; the
-- trigger does not go through privileges or row level security, and purge_audit() is the only way
-- rows leave it.
CREATE TABLE tenantguard.audit_log (
    id                bigint      GENERATED ALWAYS AS IDENTITY,
    occurred_at       timestamptz NOT NULL,
    statement_at      timestamptz NOT NULL,
    txid              bigint      NOT NULL,
    table_schema      name        NOT NULL,
    table_name        name        NOT NULL,
    table_oid         oid         NOT NULL,
    op                text        NOT NULL CHECK (op IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE')),
    tenant_id         text        COLLATE "C",
    record_key        jsonb,
    old_values        jsonb,
    new_values        jsonb,
    changed_columns   text[],
    db_user           name        NOT NULL,
    session_user_name name        NOT NULL,
    app_user          text,
    application_name  text
);
COMMENT ON TABLE tenantguard.audit_log IS
  'Audit trail of tables protected with audit => true: who changed which row of which tenant, when, from what to what.';
SELECT pg_catalog.pg_extension_config_dump('tenantguard.audit_log', '');
SELECT pg_catalog.pg_extension_config_dump('tenantguard.audit_log_id_seq', '');

-- Every index costs each audited row, so: "history of record X" (a hash index: comparing jsonb
-- keys down a btree cost more than the rest of the audit row), "tenant's changes in a period"
-- (tenant_id in the "C" collation, compared bytewise), and a BRIN index on id, which costs an
-- insert almost nothing and serves "rows after id N" (incremental export) and lookups by id. id
-- has no primary key or unique btree: only the audit trigger writes this table, taking every id
-- from the identity sequence, so ids are unique and follow the order rows were written in; a
-- unique btree enforcing that again cost every audited row 2-4 us, 15-20% of the trigger's cost.
-- purge_audit() reads the table once, in physical order, and needs no index.
CREATE INDEX audit_log_record ON tenantguard.audit_log USING hash (record_key);
CREATE INDEX audit_log_id ON tenantguard.audit_log USING brin (id);
CREATE INDEX audit_log_tenant_time ON tenantguard.audit_log (tenant_id, occurred_at);

-- The oldest audit row tenants may see: now() minus tenantguard.audit_window, or no limit.
CREATE FUNCTION tenantguard._audit_since() RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT CASE WHEN COALESCE(current_setting('tenantguard.audit_window', true), '') = ''
              THEN '-infinity'::timestamptz
              ELSE now() - current_setting('tenantguard.audit_window')::interval END
$$;

-- The audit_log.tenant_id texts the session's tenant setting stands for. The trigger writes a
-- tenant as its column type prints it (a uuid in lower case with hyphens, a number without
-- leading zeros), while the tables' policies parse the setting as that type: so a setting of
-- 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', '{a0eebc99...}' or '007' must also match the printed
-- form. NULL (matches nothing) when the setting is unset or empty.
CREATE FUNCTION tenantguard._audit_tenants() RETURNS text[]
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT CASE WHEN t IS NULL THEN NULL ELSE
         ARRAY[t]
         || CASE WHEN t ~* '^(\{([0-9a-f]{4}-?){7}[0-9a-f]{4}\}|([0-9a-f]{4}-?){7}[0-9a-f]{4})$'
                 THEN ARRAY[t::uuid::text] ELSE '{}'::text[] END
         || CASE WHEN t ~ '^\s*[+-]?[0-9]{1,30}\s*$'
                 THEN ARRAY[t::numeric::text] ELSE '{}'::text[] END
         END
    FROM (SELECT tenantguard.current_tenant() AS t) s
$$;

ALTER TABLE tenantguard.audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard.audit_log FORCE ROW LEVEL SECURITY;
CREATE POLICY audit_tenant_read ON tenantguard.audit_log FOR SELECT
  USING (tenant_id = ANY ((SELECT tenantguard._audit_tenants())::text[])
         AND occurred_at >= tenantguard._audit_since());
CREATE POLICY audit_admin_read ON tenantguard.audit_log FOR SELECT TO tenantguard_admin
  USING (true);
REVOKE ALL ON tenantguard.audit_log FROM PUBLIC;
GRANT SELECT ON tenantguard.audit_log TO PUBLIC;

-- Deletes audit rows older than older_than, batch_size rows per DELETE, and returns how many.
CREATE FUNCTION tenantguard.purge_audit(older_than interval, batch_size integer DEFAULT 10000)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    cutoff timestamptz;
    victim tid;
    batch tid[] := '{}';
    n bigint;
    total bigint := 0;
BEGIN
    IF older_than IS NULL OR older_than < '0'::interval THEN
        RAISE EXCEPTION 'purge_audit: older_than must be a non-negative interval, not %',
                        COALESCE(older_than::text, 'NULL')
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'For example tenantguard.purge_audit(''1 year'').';
    END IF;
    IF batch_size IS NULL OR batch_size < 1 THEN
        RAISE EXCEPTION 'purge_audit: batch_size must be at least 1, not %',
                        COALESCE(batch_size::text, 'NULL')
              USING ERRCODE = 'invalid_parameter_value',
                    HINT = 'Leave it out for batches of 10000 rows.';
    END IF;
    cutoff := now() - older_than;
    -- One pass over the table (the loop's cursor keeps its snapshot, so rows deleted behind it do
    -- not disturb it), deleting batch_size rows at a time by their physical address.
    FOR victim IN SELECT ctid FROM tenantguard.audit_log WHERE occurred_at < cutoff LOOP
        batch := batch || victim;
        IF cardinality(batch) >= batch_size THEN
            DELETE FROM tenantguard.audit_log WHERE ctid = ANY (batch);
            GET DIAGNOSTICS n = ROW_COUNT;
            total := total + n;
            batch := '{}';
        END IF;
    END LOOP;
    IF cardinality(batch) > 0 THEN
        DELETE FROM tenantguard.audit_log WHERE ctid = ANY (batch);
        GET DIAGNOSTICS n = ROW_COUNT;
        total := total + n;
    END IF;
    RETURN total;
END
$$;
REVOKE ALL ON FUNCTION tenantguard.purge_audit(interval, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION tenantguard.purge_audit(interval, integer) TO tenantguard_admin;
COMMENT ON FUNCTION tenantguard.purge_audit(interval, integer) IS
  'Delete audit rows older than the interval, in batches; returns the number deleted. For tenantguard_admin.';
