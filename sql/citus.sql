-- Citus (docs/citus.md). Every function here returns nothing, or answers from this node alone,
-- when Citus is not in use in the database. Those that read Citus's catalogs are PL/pgSQL, which
-- resolves names when it runs: the extension installs the same way with or without Citus.

-- The protection of one table or shard as a digest: row level security on and forced, and each of
-- tenantguard's policies (name, command, permissive, roles by name, expressions). A shard that
-- Citus made from a protected table has the table's digest; one that lost a policy or its row
-- level security does not.
CREATE FUNCTION tenantguard._protection_digest(rel regclass) RETURNS text
LANGUAGE sql STABLE STRICT
SET search_path = pg_catalog, pg_temp
AS $$
SELECT md5(format('%s|%s|%s', c.relrowsecurity, c.relforcerowsecurity,
              (SELECT string_agg(format('%s|%s|%s|%s|%s|%s', p.polname, p.polcmd, p.polpermissive,
                                        ARRAY(SELECT CASE WHEN r = 0 THEN 'public'
                                                          ELSE pg_get_userbyid(r)::text END
                                                FROM unnest(p.polroles) AS r ORDER BY 1),
                                        pg_get_expr(p.polqual, p.polrelid),
                                        pg_get_expr(p.polwithcheck, p.polrelid)),
                                 ';' ORDER BY p.polname)
                 FROM pg_policy p
                WHERE p.polrelid = c.oid AND p.polname LIKE 'tenantguard\_%')))
  FROM pg_class c WHERE c.oid = rel
$$;

-- On each node (run there by _placement_gaps()): the digest of every placement on this node of
-- the given tables, as JSON [{"shard": id, "node": group id, "digest": text, or null when the
-- shard is missing}].
CREATE FUNCTION tenantguard._local_placements(tables text[]) RETURNS text
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    out text;
BEGIN
    SELECT json_agg(json_build_object(
               'shard', s.shardid,
               'node', p.groupid,
               'digest', tenantguard._protection_digest(
                             to_regclass(format('%I.%I', n.nspname, c.relname || '_' || s.shardid)))))
      INTO out
      FROM pg_dist_shard s
      JOIN pg_dist_placement p ON p.shardid = s.shardid
      JOIN pg_class c ON c.oid = s.logicalrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE p.groupid = (SELECT groupid FROM pg_dist_local_group)
       AND format('%I.%I', n.nspname, c.relname) = ANY (tables);
    RETURN COALESCE(out, '[]');
END
$$;

-- On the coordinator: for each protected distributed or reference table, how many of its shard
-- placements lack what the table has (row level security, forced, tenantguard's policies), asked
-- of every node; a placement on a node that does not answer counts as lacking. On every node, the
-- tables coverage() skips (skip = true): the shards on this node, and on a worker the Citus
-- tables, which coverage() leaves to the coordinator.
CREATE FUNCTION tenantguard._placement_gaps()
RETURNS TABLE (relid oid, skip boolean, placements integer, gaps integer)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
SET row_security = on
AS $$
DECLARE
    role text := tenantguard._citus_role();
    tables text[];
    node record;
    found jsonb := '[]';
BEGIN
    IF role IS NULL THEN
        RETURN;
    END IF;
    RETURN QUERY
    SELECT to_regclass(format('%I.%I', n.nspname, c.relname || '_' || s.shardid))::oid, true, 0, 0
      FROM pg_dist_shard s
      JOIN pg_dist_placement p ON p.shardid = s.shardid
      JOIN pg_class c ON c.oid = s.logicalrelid
      JOIN pg_namespace n ON n.oid = c.relnamespace
     WHERE p.groupid = (SELECT groupid FROM pg_dist_local_group);
    IF role = 'worker' THEN
        -- Also shards a move or split left behind for Citus to drop later: named like a shard
        -- of a Citus table, no longer in the metadata.
        RETURN QUERY
        SELECT c.oid, true, 0, 0
          FROM pg_dist_partition d
          JOIN pg_class l ON l.oid = d.logicalrelid
          JOIN pg_class c ON c.relnamespace = l.relnamespace
                         AND left(c.relname, length(l.relname) + 1) = l.relname || '_'
                         AND substr(c.relname, length(l.relname) + 2) ~ '^[0-9]+$'
         WHERE c.relkind IN ('r', 'p')
        UNION ALL
        SELECT d.logicalrelid::oid, true, 0, 0 FROM pg_dist_partition d;
        RETURN;
    END IF;
    SELECT array_agg(format('%I.%I', n.nspname, c.relname))
      INTO tables
      FROM tenantguard.registry r
      JOIN pg_dist_partition d ON d.logicalrelid = r.relid
      JOIN pg_class c ON c.oid = r.relid
      JOIN pg_namespace n ON n.oid = c.relnamespace;
    IF tables IS NULL THEN
        RETURN;
    END IF;
    FOR node IN
        SELECT a.success, a.result
          FROM run_command_on_all_nodes(
                   format('SELECT tenantguard._local_placements(%L)', tables)) a
    LOOP
        IF node.success THEN
            found := found || node.result::jsonb;
        END IF;
    END LOOP;
    RETURN QUERY
    SELECT d.logicalrelid::oid, false, count(*)::integer,
           count(*) FILTER (WHERE t.digest IS DISTINCT FROM
                                  tenantguard._protection_digest(d.logicalrelid))::integer
      FROM tenantguard.registry r
      JOIN pg_dist_partition d ON d.logicalrelid = r.relid
      JOIN pg_dist_shard s ON s.logicalrelid = d.logicalrelid
      JOIN pg_dist_placement p ON p.shardid = s.shardid
      LEFT JOIN jsonb_to_recordset(found) AS t(shard bigint, node integer, digest text)
             ON t.shard = p.shardid AND t.node = p.groupid
     GROUP BY d.logicalrelid;
END
$$;

-- On a worker (run there by _audit_log_nodes()): this node's audit rows of Citus tables, as the
-- calling role with the given tenant context sees them through tenantguard.audit_log (or, with
-- tbl and key, audit_history()), as JSON. The context only sets what the caller could SET itself.
CREATE FUNCTION tenantguard._audit_export(context jsonb, tbl text, key jsonb) RETURNS text
LANGUAGE plpgsql VOLATILE
SET search_path = pg_catalog, pg_temp
SET row_security = on
AS $$
DECLARE
    s record;
    out text;
BEGIN
    FOR s IN SELECT * FROM jsonb_each_text(context) LOOP
        IF s.key ~ '^[A-Za-z0-9_$]+(\.[A-Za-z0-9_$]+)+$' THEN
            PERFORM set_config(s.key, s.value, true);
        END IF;
    END LOOP;
    IF tbl IS NOT NULL AND key IS NOT NULL THEN
        SELECT json_agg(h) INTO out
          FROM tenantguard.audit_history(to_regclass(tbl), key) h
         WHERE EXISTS (SELECT 1 FROM pg_dist_partition d WHERE d.logicalrelid = h.table_oid);
    ELSE
        SELECT json_agg(a) INTO out
          FROM tenantguard.audit_log a
         WHERE EXISTS (SELECT 1 FROM pg_dist_partition d WHERE d.logicalrelid = a.table_oid)
           AND (tbl IS NULL OR a.table_oid = to_regclass(tbl));
    END IF;
    RETURN COALESCE(out, '[]');
END
$$;

-- On the coordinator: the workers' audit rows (of distributed tables, written on the node that
-- holds the shard) that the calling role may see, read on each worker as that role with this
-- session's tenant context. audit_log and audit_history() add them to the coordinator's own.
-- Elsewhere: nothing.
CREATE FUNCTION tenantguard._audit_log_nodes(tbl regclass, key jsonb)
RETURNS TABLE (id bigint, occurred_at timestamptz, statement_at timestamptz, txid bigint,
               table_schema name, table_name name, table_oid regclass, op text, tenant_id text,
               record_key jsonb, old_values jsonb, new_values jsonb, changed_columns text[],
               db_user name, session_user_name name, app_user text, application_name text)
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, pg_temp
ROWS 1
AS $$
DECLARE
    node record;
    name text;
BEGIN
    IF tenantguard._citus_role() IS DISTINCT FROM 'coordinator' THEN
        RETURN;
    END IF;
    IF tbl IS NOT NULL THEN
        SELECT format('%I.%I', n.nspname, c.relname) INTO name
          FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = tbl;
    END IF;
    FOR node IN
        SELECT w.nodename, w.nodeport, w.success, w.result
          FROM run_command_on_workers(format('SELECT tenantguard._audit_export(%L, %L, %L)',
                                             tenantguard._context(), name, key)) w
    LOOP
        IF NOT node.success THEN
            RAISE EXCEPTION 'could not read the audit rows of Citus worker %:%', node.nodename, node.nodeport
                  USING ERRCODE = 'connection_failure', DETAIL = node.result,
                        HINT = 'Check that the worker is up; the audit rows of its shards stay there.';
        END IF;
        RETURN QUERY
        SELECT x.id, x.occurred_at, x.statement_at, x.txid, x.table_schema, x.table_name,
               to_regclass(format('%I.%I', x.table_schema, x.table_name)), x.op, x.tenant_id,
               x.record_key, x.old_values, x.new_values, x.changed_columns, x.db_user,
               x.session_user_name, x.app_user, x.application_name
          FROM jsonb_to_recordset(node.result::jsonb) AS x(
                   id bigint, occurred_at timestamptz, statement_at timestamptz, txid bigint,
                   table_schema name, table_name name, op text, tenant_id text, record_key jsonb,
                   old_values jsonb, new_values jsonb, changed_columns text[], db_user name,
                   session_user_name name, app_user text, application_name text);
    END LOOP;
END
$$;

-- Every backend keeps the setting names of protected tables, to pass the tenant on to the
-- workers (src/citus/propagate.rs); a change of the registry makes them read the names again.
CREATE FUNCTION tenantguard._registry_changed() RETURNS trigger
LANGUAGE c AS 'MODULE_PATHNAME', 'tenantguard_registry_changed';
CREATE TRIGGER registry_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
  ON tenantguard.registry FOR EACH STATEMENT EXECUTE FUNCTION tenantguard._registry_changed();
