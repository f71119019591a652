-- Completeness under load: 8 concurrent pgbench clients (as the application role, under row level
-- security) insert, update and delete rows of two audited tables; about 10% of transactions roll
-- back. Every transaction also writes what it changed into an unaudited ledger, which commits or
-- rolls back with it. At the end the audit rows must equal the ledger exactly: nothing lost,
-- nothing extra, per table and per tenant.
\set SHOW_CONTEXT never
\c - tg_owner
CREATE TABLE load_a (id int PRIMARY KEY, tenant_id text NOT NULL, v int NOT NULL,
                     updated_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE load_b (id int PRIMARY KEY, tenant_id bigint NOT NULL, v int NOT NULL, note text);
SELECT tenantguard.protect('load_a') IS NOT NULL AS protected_a;
SELECT tenantguard.protect('load_b') IS NOT NULL AS protected_b;
GRANT SELECT, INSERT, UPDATE, DELETE ON load_a, load_b TO tg_app;
CREATE TABLE load_ledger (tbl text, tenant text, op text, id int);
CREATE TABLE load_txns (xid bigint);
CREATE SEQUENCE load_attempts;
GRANT INSERT ON load_ledger, load_txns TO tg_app;
GRANT USAGE ON SEQUENCE load_attempts TO tg_app;

-- The pgbench scripts, written by the server (no files in the source tree to find).
\c - postgres
COPY (VALUES
  ('\set t random(1, 8)'), ('\set k random(1, 200)'), ('\set op random(1, 4)'), ('\set rb random(1, 10)'),
  ('BEGIN;'),
  ('SELECT nextval(''load_attempts''), set_config(''app.current_tenant_id'', ''tenant'' || :t, true);'),
  ('INSERT INTO load_txns VALUES (txid_current());'),
  ('\if :op = 1'),
  ('WITH x AS (INSERT INTO load_a (id, tenant_id, v) VALUES (:t * 1000 + :k, ''tenant'' || :t, 0) ON CONFLICT (id) DO NOTHING RETURNING id, tenant_id) INSERT INTO load_ledger SELECT ''load_a'', tenant_id, ''INSERT'', id FROM x;'),
  ('\elif :op = 2'),
  ('WITH x AS (UPDATE load_a SET v = v + 1 WHERE id = :t * 1000 + :k RETURNING id, tenant_id) INSERT INTO load_ledger SELECT ''load_a'', tenant_id, ''UPDATE'', id FROM x;'),
  ('\elif :op = 3'),
  ('WITH x AS (DELETE FROM load_a WHERE id = :t * 1000 + :k RETURNING id, tenant_id) INSERT INTO load_ledger SELECT ''load_a'', tenant_id, ''DELETE'', id FROM x;'),
  ('\else'),
  ('WITH x AS (UPDATE load_a SET v = v + 1 WHERE id % 17 = :k % 17 RETURNING id, tenant_id) INSERT INTO load_ledger SELECT ''load_a'', tenant_id, ''UPDATE'', id FROM x;'),
  ('\endif'),
  ('\if :rb = 1'), ('ROLLBACK;'), ('\else'), ('COMMIT;'), ('\endif')
) TO '/tmp/tenantguard_load_a.pgbench' WITH (FORMAT csv, DELIMITER E'\x02', QUOTE E'\x01');
COPY (VALUES
  ('\set t random(1, 8)'), ('\set k random(1, 200)'), ('\set op random(1, 3)'), ('\set rb random(1, 10)'),
  ('BEGIN;'),
  ('SELECT nextval(''load_attempts''), set_config(''app.current_tenant_id'', :t::text, true);'),
  ('INSERT INTO load_txns VALUES (txid_current());'),
  ('\if :op = 1'),
  ('WITH x AS (INSERT INTO load_b (id, tenant_id, v, note) VALUES (:t * 1000 + :k, :t, 0, ''n'') ON CONFLICT (id) DO NOTHING RETURNING id, tenant_id) INSERT INTO load_ledger SELECT ''load_b'', tenant_id, ''INSERT'', id FROM x;'),
  ('\elif :op = 2'),
  ('WITH x AS (UPDATE load_b SET v = v + 1, note = note || ''x'' WHERE id = :t * 1000 + :k RETURNING id, tenant_id) INSERT INTO load_ledger SELECT ''load_b'', tenant_id, ''UPDATE'', id FROM x;'),
  ('\else'),
  ('WITH x AS (DELETE FROM load_b WHERE id = :t * 1000 + :k RETURNING id, tenant_id) INSERT INTO load_ledger SELECT ''load_b'', tenant_id, ''DELETE'', id FROM x;'),
  ('\endif'),
  ('\if :rb = 1'), ('ROLLBACK;'), ('\else'), ('COMMIT;'), ('\endif')
) TO '/tmp/tenantguard_load_b.pgbench' WITH (FORMAT csv, DELIMITER E'\x02', QUOTE E'\x01');

-- The running server's own client programs.
SELECT setting AS bindir FROM pg_config WHERE name = 'BINDIR' \gset
\setenv TG_BINDIR :bindir
\! $TG_BINDIR/pgbench -n -c 8 -j 2 -t 500 -U tg_app -f /tmp/tenantguard_load_a.pgbench@6 -f /tmp/tenantguard_load_b.pgbench@4 regression > /tmp/tenantguard_load.log 2>&1; echo "pgbench exit status $?"
\! rm -f /tmp/tenantguard_load_a.pgbench /tmp/tenantguard_load_b.pgbench

-- About 10% of the 4000 transactions rolled back.
SELECT (SELECT last_value FROM load_attempts) AS attempts,
       (SELECT count(*) FROM load_txns)::numeric / (SELECT last_value FROM load_attempts)
         BETWEEN 0.85 AND 0.95 AS about_90_percent_committed;
-- Audit rows and the ledger are the same multiset: (table, tenant, op, key).
CREATE TEMP VIEW audited AS
  SELECT table_name::text AS tbl, tenant_id AS tenant, op, (record_key ->> 'id')::int AS id
    FROM tenantguard.audit_log WHERE table_oid IN ('load_a'::regclass, 'load_b'::regclass);
SELECT count(*) AS audit_rows_without_committed_change
  FROM (SELECT * FROM audited EXCEPT ALL SELECT * FROM load_ledger) x;
SELECT count(*) AS committed_changes_without_audit_row
  FROM (SELECT * FROM load_ledger EXCEPT ALL SELECT * FROM audited) x;
SELECT count(*) > 1000 AS many_changes FROM load_ledger;
-- Per table and tenant: the same count, and the same operations (which ones pgbench drew for a
-- tenant is random; that the audit log shows the same ones is not).
SELECT l.tbl, l.tenant, l.n = COALESCE(a.n, 0) AS counts_equal, l.ops = a.ops AS same_ops
  FROM (SELECT tbl, tenant, count(*) AS n, string_agg(DISTINCT op, ',' ORDER BY op) AS ops
          FROM load_ledger GROUP BY 1, 2) l
  LEFT JOIN (SELECT tbl, tenant, count(*) AS n, string_agg(DISTINCT op, ',' ORDER BY op) AS ops
               FROM audited GROUP BY 1, 2) a USING (tbl, tenant)
 ORDER BY 1, 2;
SELECT count(DISTINCT op) AS operations_seen FROM load_ledger;
-- Replaying each row's last audited state gives the tables as they are.
SELECT count(*) AS rows_differing_from_last_audit_state
  FROM (SELECT DISTINCT ON (table_oid, record_key) table_oid, record_key, op, new_values
          FROM tenantguard.audit_log WHERE table_oid IN ('load_a'::regclass, 'load_b'::regclass)
         ORDER BY table_oid, record_key, id DESC) last
  FULL JOIN (SELECT 'load_a'::regclass::oid AS table_oid, jsonb_build_object('id', id) AS record_key, to_jsonb(a) AS v FROM load_a a
             UNION ALL
             SELECT 'load_b'::regclass::oid, jsonb_build_object('id', id), to_jsonb(b) FROM load_b b) cur
    USING (table_oid, record_key)
 WHERE cur.v IS DISTINCT FROM (CASE WHEN last.op = 'DELETE' THEN NULL ELSE last.new_values END);
