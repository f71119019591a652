#!/usr/bin/env bash
# Reading the audit trail through tenantguard.audit_log, which checks per row that the reader may
# read the source table (and is the row's tenant), and removes columns it may not read, against
# the same rows read from the table behind it with the tenant written into the query (no checks).
# 1,000,000 audit rows of 100 tenants. Each query runs N times inside one backend (a PL/pgSQL
# loop, so no client round trip), the variants interleaved; medians are reported.
#
#   period:  a tenant's changes in the last 10% of the time range (about 1,000 of its 10,000 rows)
#   record:  the history of one record (by record_key), through the view and through
#            audit_history(), which reaches the record_key index
#   partial: the period query by a role that may read only some columns (the redaction path)
#
# usage: bash bench/audit_read_bench.sh [rows (1000000)] [runs (50)]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
rows=${1:-1000000}
runs=${2:-50}
dir=/tmp/tenantguard-audit-read-bench
port=55438

bench_setup tenantguard-audit-read-bench "$dir" "$port" "shared_buffers = 512MB"
psql_su() { as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d postgres "$@"; }

echo "== $rows audit rows" >&2
psql_su -v rows="$rows" <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION tenantguard;
CREATE ROLE app LOGIN NOSUPERUSER NOBYPASSRLS;
CREATE ROLE clerk LOGIN NOSUPERUSER NOBYPASSRLS;
CREATE TABLE orders (id bigint PRIMARY KEY, tenant_id uuid NOT NULL, amount numeric, note text);
GRANT SELECT ON orders TO app;
GRANT SELECT (id, tenant_id, amount) ON orders TO clerk;
INSERT INTO orders
SELECT i, md5((i % 100)::text)::uuid, i * 1.5, 'note ' || i FROM generate_series(1, :rows) i;
VACUUM (ANALYZE) tenantguard._audit_log;
CREATE TABLE bench_window AS
  SELECT md5('7')::uuid::text AS tenant,
         min(occurred_at) + (max(occurred_at) - min(occurred_at)) * 0.9 AS since,
         (SELECT record_key FROM tenantguard._audit_log WHERE tenant_id = md5('7')::uuid::text
           ORDER BY id DESC LIMIT 1) AS record
    FROM tenantguard._audit_log;
GRANT SELECT ON bench_window TO PUBLIC;
CREATE TABLE timings (variant text, run int, ms float8, n bigint);
GRANT INSERT ON timings TO PUBLIC;
-- Runs a query `runs` times in the caller's session, recording each run's time.
CREATE FUNCTION time_query(variant text, q text, runs int) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
  t0 timestamptz;
  n bigint;
BEGIN
  FOR r IN 1 .. runs LOOP
    t0 := clock_timestamp();
    EXECUTE q INTO n;
    INSERT INTO timings VALUES (variant, r, extract(epoch FROM clock_timestamp() - t0) * 1000, n);
  END LOOP;
END $$;
SQL

# The tenant, the start of the period and the record as literals, as an application sends them.
IFS='|' read -r tenant_id since record < <(psql_su -At -F '|' -c "SELECT tenant, quote_literal(since), quote_literal(record) FROM bench_window")
period_view="SELECT count(*) FROM (SELECT * FROM tenantguard.audit_log WHERE occurred_at >= $since OFFSET 0) x"
period_base="SELECT count(*) FROM (SELECT * FROM tenantguard._audit_log WHERE tenant_id = '$tenant_id' AND occurred_at >= $since OFFSET 0) x"
record_view="SELECT count(*) FROM (SELECT * FROM tenantguard.audit_log WHERE table_oid = 'orders'::regclass AND record_key = $record OFFSET 0) x"
record_func="SELECT count(*) FROM tenantguard.audit_history('orders', $record)"
record_base="SELECT count(*) FROM (SELECT * FROM tenantguard._audit_log WHERE table_oid = 'orders'::regclass AND record_key = $record AND tenant_id = '$tenant_id' OFFSET 0) x"

as_app() { local role=$1; shift; as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U "$role" -d postgres "$@"; }
tenant="SET app.current_tenant_id = '$tenant_id';"

echo "== plans" >&2
for q in "$period_view" "$record_view" "$record_func"; do
  as_app app -c "$tenant EXPLAIN (COSTS OFF) $q" | grep -E 'Scan|Filter|Cond' | sed 's/^/   /' >&2
done
echo "== timing, $runs runs per variant, interleaved" >&2
for round in 1 2 3 4 5; do
  as_app app -c "$tenant SELECT time_query('period: audit_log view, tenant role', \$q\$$period_view\$q\$, $runs / 5)"
  psql_su -c "SELECT time_query('period: table behind it, explicit filter', \$q\$$period_base\$q\$, $runs / 5)"
  as_app clerk -c "$tenant SELECT time_query('period: audit_log view, column-limited role', \$q\$$period_view\$q\$, $runs / 5)"
  as_app app -c "$tenant SELECT time_query('record: audit_log view, tenant role', \$q\$$record_view\$q\$, $runs / 5)"
  as_app app -c "$tenant SELECT time_query('record: audit_history(), tenant role', \$q\$$record_func\$q\$, $runs / 5)"
  psql_su -c "SELECT time_query('record: table behind it, explicit filter', \$q\$$record_base\$q\$, $runs / 5)"
done
psql_su <<'SQL'
SELECT variant, max(n) AS rows_read,
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 3) AS median_ms,
       round((percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) * 1000 / greatest(max(n), 1))::numeric, 3) AS us_per_row
  FROM timings GROUP BY variant ORDER BY variant;
SQL
