#!/usr/bin/env bash
# The tenant-context modes against an explicit filter with the same meaning, as a NOSUPERUSER
# NOBYPASSRLS role (release build, 1M rows over 10,000 tenants, bigint tenant ids, an index on
# (tenant_id, v)):
#   list      protect(tenant_list => true), tenant '11,22,33'       vs  tenant_id = ANY('{11,22,33}')
#   hierarchy protect(hierarchy => 'orgs(parent_id)'), a tenant 2 levels above the leaves of a
#             10,000-tenant tree of depth 5 (43 tenants in its subtree)  vs  = ANY of those 43 ids
#   claims    tenant_setting 'request.jwt.claims:app_metadata.tenant_id', the claims set per
#             transaction as PostgREST does (set_config(..., true))  vs  the same set_config and
#             tenant_id = 42
#   scope     tenant_scope = transaction, SET LOCAL per transaction  vs  the same SET LOCAL and
#             tenant_id = 42
# Each pair runs in one pgbench run (-f both, equal weights, latency logged per transaction), so
# the machine's noise falls on both alike; the ratio is mean latency explicit / mean latency mode
# (throughput mode / explicit), per round, and the median over the rounds. Also the time to compute
# a subtree once (what the InitPlan does per statement) for the root (all 10,000) and for the
# 43-tenant subtree.
#
# usage: bash bench/tenant_modes_bench.sh [seconds per run (8)] [rounds (5)]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
secs=${1:-8}
rounds=${2:-5}
dir=/tmp/tenantguard-modes-bench
port=55436

bench_setup tenantguard-modes-bench "$dir" "$port" "shared_buffers = '512MB'" "autovacuum = off" "max_wal_size = '4GB'"
psql_su() { as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d postgres "$@"; }

echo "== loading" >&2
psql_su >/dev/null <<'SQL'
CREATE EXTENSION tenantguard;
SET tenantguard.auto_protect = off;
CREATE ROLE app LOGIN NOSUPERUSER NOBYPASSRLS;
CREATE ROLE app_claims LOGIN NOSUPERUSER NOBYPASSRLS;
CREATE ROLE app_scoped LOGIN NOSUPERUSER NOBYPASSRLS;
ALTER ROLE app_claims SET tenantguard.tenant_setting = 'request.jwt.claims:app_metadata.tenant_id';
ALTER ROLE app_scoped SET tenantguard.tenant_scope = transaction;
-- A tree of 10,000 tenants, depth 5: 1 + 6 + 36 + 216 + 1296 + 7776 = 9331, then 669 more
-- leaves under the first parents.
CREATE TABLE orgs (id bigint PRIMARY KEY, parent_id bigint);
WITH RECURSIVE t(id, parent_id, level) AS (
  SELECT 1::bigint, NULL::bigint, 0
  UNION ALL
  SELECT t.id * 6 + k - 4, t.id, t.level + 1 FROM t, generate_series(0, 5) k WHERE t.level < 5)
INSERT INTO orgs SELECT id, parent_id FROM t;
INSERT INTO orgs SELECT 100000 + g, 2 + g % 6 FROM generate_series(1, 10000 - (SELECT count(*) FROM orgs)) g;
CREATE INDEX ON orgs (parent_id);
CREATE TABLE t_plain (id bigint PRIMARY KEY, tenant_id bigint NOT NULL, v int NOT NULL, payload text NOT NULL);
INSERT INTO t_plain
SELECT g, o.id, (g / 10000) % 1000, md5(g::text)
  FROM generate_series(1, 1000000) g
  JOIN (SELECT id, row_number() OVER (ORDER BY id) - 1 AS n FROM orgs) o ON o.n = g % 10000;
CREATE INDEX ON t_plain (tenant_id, v);
CREATE TABLE t_list (LIKE t_plain INCLUDING ALL);   INSERT INTO t_list SELECT * FROM t_plain;
CREATE TABLE t_hier (LIKE t_plain INCLUDING ALL);   INSERT INTO t_hier SELECT * FROM t_plain;
CREATE TABLE t_one (LIKE t_plain INCLUDING ALL);    INSERT INTO t_one SELECT * FROM t_plain;
CREATE TABLE t_claims (LIKE t_plain INCLUDING ALL); INSERT INTO t_claims SELECT * FROM t_plain;
SELECT tenantguard.protect('t_list', tenant_list => true);
SELECT tenantguard.protect('t_hier', hierarchy => 'orgs(parent_id)');
SELECT tenantguard.protect('t_one');
SET tenantguard.tenant_setting = 'request.jwt.claims:app_metadata.tenant_id';
SELECT tenantguard.protect('t_claims');
RESET tenantguard.tenant_setting;
GRANT SELECT ON t_plain, t_list, t_hier, t_one, t_claims TO app, app_claims, app_scoped;
VACUUM (FREEZE, ANALYZE) t_plain, t_list, t_hier, t_one, t_claims, orgs;
SQL

# A node two levels above the leaves: its subtree, and the same ids for the explicit filter.
node=$(psql_su -At -c "SELECT id FROM orgs WHERE parent_id IN (SELECT id FROM orgs WHERE parent_id IN (SELECT id FROM orgs WHERE parent_id = 1)) ORDER BY id LIMIT 1")
subtree=$(psql_su -At -c "SET app.current_tenant_id = '$node'; SELECT tenantguard.tenant_subtree_bigint('app.current_tenant_id', 'orgs'::regclass, 'id', 'parent_id', false)")
count=$(echo "$subtree" | tr -cd ',' | wc -c); count=$((count + 1))
echo "== hierarchy: tenant $node has $count tenants in its subtree" >&2

sdir=$dir/scripts; mkdir -p "$sdir"
q="SELECT count(*), sum(v) FROM"
r="v BETWEEN :lo AND :lo + 100"
cat > "$sdir/list_mode.sql" <<SQL
\set lo random(0, 899)
$q t_list WHERE $r;
SQL
cat > "$sdir/list_plain.sql" <<SQL
\set lo random(0, 899)
$q t_plain WHERE tenant_id = ANY('{11,22,33}') AND $r;
SQL
cat > "$sdir/hierarchy_mode.sql" <<SQL
\set lo random(0, 899)
$q t_hier WHERE $r;
SQL
cat > "$sdir/hierarchy_plain.sql" <<SQL
\set lo random(0, 899)
$q t_plain WHERE tenant_id = ANY('$subtree') AND $r;
SQL
claims='{"sub": "u1", "role": "authenticated", "app_metadata": {"tenant_id": "42"}}'
cat > "$sdir/claims_mode.sql" <<SQL
\set lo random(0, 899)
BEGIN;
SELECT set_config('request.jwt.claims', '$claims', true);
$q t_claims WHERE $r;
COMMIT;
SQL
cat > "$sdir/claims_plain.sql" <<SQL
\set lo random(0, 899)
BEGIN;
SELECT set_config('request.jwt.claims', '$claims', true);
$q t_plain WHERE tenant_id = 42 AND $r;
COMMIT;
SQL
cat > "$sdir/scope_mode.sql" <<SQL
\set lo random(0, 899)
BEGIN;
SET LOCAL app.current_tenant_id = '42';
$q t_one WHERE $r;
COMMIT;
SQL
cat > "$sdir/scope_plain.sql" <<SQL
\set lo random(0, 899)
BEGIN;
SET LOCAL app.current_tenant_id = '42';
$q t_plain WHERE tenant_id = 42 AND $r;
COMMIT;
SQL
chown -R postgres:postgres "$sdir"

# The modes see what the explicit filters see.
check() { # role setting mode-query plain-query
  local a b
  a=$(as_pg env PGOPTIONS="$2" psql -X -At -h "$dir" -p "$port" -U "$1" -d postgres -c "$3" | grep -E '^[0-9]+$' | tail -1)
  b=$(as_pg env PGOPTIONS="$2" psql -X -At -h "$dir" -p "$port" -U "$1" -d postgres -c "$4" | grep -E '^[0-9]+$' | tail -1)
  [ "$a" = "$b" ] || { echo "mode and explicit filter disagree: $a vs $b ($3)" >&2; exit 1; }
  echo "  same rows: $a" >&2
}
check app "-c app.current_tenant_id=11,22,33" "SELECT count(*) FROM t_list" "SELECT count(*) FROM t_plain WHERE tenant_id = ANY('{11,22,33}')"
check app "-c app.current_tenant_id=$node" "SELECT count(*) FROM t_hier" "SELECT count(*) FROM t_plain WHERE tenant_id = ANY('$subtree')"
check app_claims "" "BEGIN; SELECT set_config('request.jwt.claims', '$claims', true); SELECT count(*) FROM t_claims; COMMIT" "SELECT count(*) FROM t_plain WHERE tenant_id = 42"
check app_scoped "" "BEGIN; SET LOCAL app.current_tenant_id = '42'; SELECT count(*) FROM t_one; COMMIT" "SELECT count(*) FROM t_plain WHERE tenant_id = 42"

echo "== subtree computation, once" >&2
psql_su -At <<SQL >&2
\timing on
SET app.current_tenant_id = '1';
SELECT cardinality(tenantguard.tenant_subtree_bigint('app.current_tenant_id', 'orgs'::regclass, 'id', 'parent_id', false)) AS root_subtree;
SET app.current_tenant_id = '$node';
SELECT cardinality(tenantguard.tenant_subtree_bigint('app.current_tenant_id', 'orgs'::regclass, 'id', 'parent_id', false)) AS node_subtree;
SQL

mkdir -p "$dir/logs"; chown postgres:postgres "$dir/logs"
median() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
for m in list hierarchy claims scope; do
  case $m in
    list) role=app; opts="-c app.current_tenant_id=11,22,33" ;;
    hierarchy) role=app; opts="-c app.current_tenant_id=$node" ;;
    claims) role=app_claims; opts="" ;;
    scope) role=app_scoped; opts="" ;;
  esac
  ratios=()
  for r in $(seq "$rounds"); do
    rm -f "$dir/logs"/*
    as_pg env PGOPTIONS="$opts" "$PGBIN/pgbench" -n -c 2 -j 2 -T "$secs" -M prepared \
      -h "$dir" -p "$port" -U "$role" -l --log-prefix="$dir/logs/mx" \
      -f "$sdir/${m}_mode.sql@1" -f "$sdir/${m}_plain.sql@1" postgres >/dev/null 2>&1
    ratio=$(cat "$dir/logs"/mx.* | awk '{ n[$4]++; s[$4] += $3 } END { printf "%.3f", (s[1]/n[1]) / (s[0]/n[0]) }')
    ratios+=("$ratio")
    echo "$m round $r: mode/explicit $ratio" >&2
  done
  echo "$m: median mode/explicit throughput $(printf '%s\n' "${ratios[@]}" | median) (rounds: ${ratios[*]})"
done
