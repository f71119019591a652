-- The trigger functions protect() attaches (src/audit/trigger.rs).
CREATE FUNCTION tenantguard.audit() RETURNS trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'tenantguard_audit';
COMMENT ON FUNCTION tenantguard.audit() IS
  'Audit trigger attached by protect(): writes one tenantguard.audit_log row per changed row.';

CREATE FUNCTION tenantguard.set_updated_at() RETURNS trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'tenantguard_set_updated_at';
COMMENT ON FUNCTION tenantguard.set_updated_at() IS
  'BEFORE UPDATE trigger attached by protect(): sets updated_at to the transaction timestamp.';

-- The audit trail: one row per changed row of every audited table, written by tenantguard's
-- trigger (src/audit.rs) straight into the heap. No role gets any privilege on this table: the
-- trigger does not go through privileges or row level security, purge_audit() is the only way
-- rows leave it, and roles read it through the view tenantguard.audit_log below, which shows each
-- role no more than it could read from the audited tables themselves.
CREATE TABLE tenantguard._audit_log (
    id                bigint      GENERATED ALWAYS AS IDENTITY,
    occurred_at       timestamptz NOT NULL,
    statement_at      timestamptz NOT NULL,
    txid              bigint      NOT NULL,
    table_schema      name        NOT NULL,
    table_name        name        NOT NULL,
    table_oid         regclass    NOT NULL,
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
COMMENT ON TABLE tenantguard._audit_log IS
  'The rows behind tenantguard.audit_log; read them through that view.';
SELECT pg_catalog.pg_extension_config_dump('tenantguard._audit_log', '');
SELECT pg_catalog.pg_extension_config_dump('tenantguard._audit_log_id_seq', '');

-- Every index costs each audited row, so: "history of record X" (a hash index: comparing jsonb
-- keys down a btree cost more than the rest of the audit row), "tenant's changes in a period"
-- (tenant_id in the "C" collation, compared bytewise), and a BRIN index on id, which costs an
-- insert almost nothing and serves "rows after id N" (incremental export) and lookups by id. id
-- has no primary key or unique btree: only the audit trigger writes this table, taking every id
-- from the identity sequence, so ids are unique and follow the order rows were written in; a
-- unique btree enforcing that again cost every audited row 2-4 us, 15-20% of the trigger's cost.
-- purge_audit() reads the table once, in physical order, and needs no index.
CREATE INDEX audit_log_record ON tenantguard._audit_log USING hash (record_key);
CREATE INDEX audit_log_id ON tenantguard._audit_log USING brin (id);
CREATE INDEX audit_log_tenant_time ON tenantguard._audit_log (tenant_id, occurred_at);

-- The per-row checks of the view below (src/audit_read.rs), C functions the executor calls directly.
CREATE FUNCTION tenantguard._audit_visible(reader oid, tbl oid, tenant_id text, current_tenant text) RETURNS boolean
LANGUAGE c STABLE STRICT PARALLEL RESTRICTED COST 5
AS 'MODULE_PATHNAME', 'tenantguard_audit_visible';
CREATE FUNCTION tenantguard._audit_hidden(reader oid, tbl oid) RETURNS text[]
LANGUAGE c STABLE STRICT PARALLEL RESTRICTED COST 5
AS 'MODULE_PATHNAME', 'tenantguard_audit_hidden';

-- The oldest audit row tenants may see: now() minus tenantguard.audit_window, or no limit.
CREATE FUNCTION tenantguard._audit_since() RETURNS timestamptz
LANGUAGE sql STABLE PARALLEL SAFE
SET search_path = pg_catalog, pg_temp
AS $$
  SELECT CASE WHEN COALESCE(current_setting('tenantguard.audit_window', true), '') = ''
              THEN '-infinity'::timestamptz
              ELSE now() - current_setting('tenantguard.audit_window')::interval END
$$;

-- The audit_log.tenant_id texts the session's tenant setting may stand for. The trigger writes a
-- tenant as its column type prints it (a uuid in lower case with hyphens, a number without
-- leading zeros), while the tables' policies parse the setting as that type: so a setting of
-- 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11', '{a0eebc99...}' or '007' must also match the printed
-- form. NULL (matches nothing) when the setting is unset or empty. This is the index condition
-- of the view below; _audit_visible() then keeps only the exact text for tables whose tenant
-- column is text, where '007' and '7' are different tenants.
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

-- Defence in depth: should anyone grant SELECT on the table itself, only admins see rows.
ALTER TABLE tenantguard._audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenantguard._audit_log FORCE ROW LEVEL SECURITY;
CREATE POLICY audit_admin_read ON tenantguard._audit_log FOR SELECT TO tenantguard_admin
  USING (true);
REVOKE ALL ON tenantguard._audit_log FROM PUBLIC;

-- What every role reads. Superusers and members of tenantguard_admin: every row, whole. Anyone
-- else: rows of its tenant (see _audit_visible() for text tenant columns) of tables it may SELECT
-- now, within tenantguard.audit_window, without the columns it may not SELECT. One branch per
-- kind of reader, each switched off as a whole by a one-time filter, so a tenant's "changes in a
-- period" stays an index scan on (tenant_id, occurred_at).
--
-- Each branch is a security_barrier view of its own: a caller's function in WHERE never sees a
-- row before the branch's conditions have passed it. (A UNION ALL is flattened into its branches
-- by the planner, and a security_barrier on the UNION ALL view itself does not reach them: a
-- cheap leaky function would then run first.)
CREATE VIEW tenantguard._audit_log_all WITH (security_barrier = true) AS
SELECT a.id, a.occurred_at, a.statement_at, a.txid, a.table_schema, a.table_name, a.table_oid,
       a.op, a.tenant_id, a.record_key, a.old_values, a.new_values, a.changed_columns,
       a.db_user, a.session_user_name, a.app_user, a.application_name
  FROM tenantguard._audit_log a
 WHERE tenantguard._audit_sees_all((SELECT tenantguard._reader()));
CREATE VIEW tenantguard._audit_log_tenant WITH (security_barrier = true) AS
SELECT a.id, a.occurred_at, a.statement_at, a.txid, a.table_schema, a.table_name, a.table_oid,
       a.op, a.tenant_id,
       CASE WHEN h.cols IS NULL OR NOT a.record_key ?| h.cols THEN a.record_key END AS record_key,
       CASE WHEN h.cols IS NULL THEN a.old_values ELSE a.old_values - h.cols END AS old_values,
       CASE WHEN h.cols IS NULL THEN a.new_values ELSE a.new_values - h.cols END AS new_values,
       CASE WHEN h.cols IS NULL OR a.changed_columns IS NULL THEN a.changed_columns
            ELSE ARRAY(SELECT c FROM pg_catalog.unnest(a.changed_columns) AS c
                        WHERE c <> ALL (h.cols)) END AS changed_columns,
       a.db_user, a.session_user_name, a.app_user, a.application_name
  FROM tenantguard._audit_log a
 CROSS JOIN LATERAL (SELECT tenantguard._audit_hidden((SELECT tenantguard._reader()), a.table_oid) AS cols) h
 WHERE NOT tenantguard._audit_sees_all((SELECT tenantguard._reader()))
   AND a.tenant_id = ANY ((SELECT tenantguard._audit_tenants())::text[])
   AND a.occurred_at >= tenantguard._audit_since()
   AND tenantguard._audit_visible((SELECT tenantguard._reader()), a.table_oid, a.tenant_id,
                                  (SELECT tenantguard.current_tenant()));
REVOKE ALL ON tenantguard._audit_log_all, tenantguard._audit_log_tenant FROM PUBLIC;
-- On a Citus coordinator, the third branch adds the workers' rows (sql/citus.sql).
CREATE VIEW tenantguard.audit_log WITH (security_barrier = true) AS
SELECT * FROM tenantguard._audit_log_all
UNION ALL
SELECT * FROM tenantguard._audit_log_tenant
UNION ALL
SELECT * FROM tenantguard._audit_log_nodes(NULL, NULL);
COMMENT ON VIEW tenantguard.audit_log IS
  'Audit trail of tables protected with audit => true: who changed which row of which tenant, when, from what to what. Each role sees its tenant''s rows of tables it may read, without columns it may not read; admins see all.';
GRANT SELECT ON tenantguard.audit_log TO PUBLIC;

-- The history of one record, found through the hash index on record_key. Through the view, a
-- tenant's "record_key = ..." cannot use that index: jsonb equality is not leakproof, so behind the
-- view's security barrier it is only checked after the tenant's rows are found, and reading a
-- record's history costs as much as reading all the tenant's rows. This function looks the record
-- up as the extension's owner and applies exactly the view's checks for the calling role, which
-- it passes in; it refuses (42501) a role the session could not SET ROLE to, so calling it
-- directly shows no more than SET ROLE would.
CREATE FUNCTION tenantguard._audit_history(tbl regclass, key jsonb, reader oid)
RETURNS SETOF tenantguard.audit_log
LANGUAGE plpgsql STABLE STRICT SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF NOT pg_has_role(session_user, reader, 'MEMBER') THEN
        RAISE EXCEPTION 'permission denied to read the audit trail as role %', reader::regrole
              USING ERRCODE = 'insufficient_privilege',
                    HINT = 'Call tenantguard.audit_history(), which reads as the current role.';
    END IF;
    IF tenantguard._audit_sees_all(reader) THEN
        RETURN QUERY
        SELECT a.id, a.occurred_at, a.statement_at, a.txid, a.table_schema, a.table_name,
               a.table_oid, a.op, a.tenant_id, a.record_key, a.old_values, a.new_values,
               a.changed_columns, a.db_user, a.session_user_name, a.app_user, a.application_name
          FROM tenantguard._audit_log a
         WHERE a.table_oid = tbl AND a.record_key = key
         ORDER BY a.id;
        RETURN;
    END IF;
    RETURN QUERY
    SELECT a.id, a.occurred_at, a.statement_at, a.txid, a.table_schema, a.table_name, a.table_oid,
           a.op, a.tenant_id,
           CASE WHEN h.cols IS NULL OR NOT a.record_key ?| h.cols THEN a.record_key END,
           CASE WHEN h.cols IS NULL THEN a.old_values ELSE a.old_values - h.cols END,
           CASE WHEN h.cols IS NULL THEN a.new_values ELSE a.new_values - h.cols END,
           CASE WHEN h.cols IS NULL OR a.changed_columns IS NULL THEN a.changed_columns
                ELSE ARRAY(SELECT c FROM unnest(a.changed_columns) AS c WHERE c <> ALL (h.cols)) END,
           a.db_user, a.session_user_name, a.app_user, a.application_name
      FROM tenantguard._audit_log a
     CROSS JOIN LATERAL (SELECT tenantguard._audit_hidden(reader, a.table_oid) AS cols) h
     WHERE a.table_oid = tbl AND a.record_key = key
       AND a.tenant_id = ANY (tenantguard._audit_tenants())
       AND a.occurred_at >= tenantguard._audit_since()
       AND tenantguard._audit_visible(reader, a.table_oid, a.tenant_id, tenantguard.current_tenant())
       -- the key itself is shown only to a reader of all its columns: without that, its
       -- existence is not shown either
       AND (h.cols IS NULL OR NOT a.record_key ?| h.cols)
     ORDER BY a.id;
END
$$;
-- What callers use: the history of the record with primary key `key` (e.g. '{"id": 42}') of
-- `tbl`, as the view would show it to the caller, oldest first.
CREATE FUNCTION tenantguard.audit_history(tbl regclass, key jsonb)
RETURNS SETOF tenantguard.audit_log
LANGUAGE sql STABLE STRICT
AS $$
SELECT * FROM tenantguard._audit_history(tbl, key, tenantguard._reader())
UNION ALL
SELECT * FROM tenantguard._audit_log_nodes(tbl, key)
$$;
COMMENT ON FUNCTION tenantguard.audit_history(regclass, jsonb) IS
  'The audit rows of one record (by primary key as jsonb), as tenantguard.audit_log shows them to the caller, found through the record_key index.';

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
    FOR victim IN SELECT ctid FROM tenantguard._audit_log WHERE occurred_at < cutoff LOOP
        batch := batch || victim;
        IF cardinality(batch) >= batch_size THEN
            DELETE FROM tenantguard._audit_log WHERE ctid = ANY (batch);
            GET DIAGNOSTICS n = ROW_COUNT;
            total := total + n;
            batch := '{}';
        END IF;
    END LOOP;
    IF cardinality(batch) > 0 THEN
        DELETE FROM tenantguard._audit_log WHERE ctid = ANY (batch);
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
