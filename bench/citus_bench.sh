#!/usr/bin/env bash
# The policy overhead on a distributed table, through the coordinator: a coordinator and two
# workers (release build), three tables distributed by tenant_id with the same rows: one plain,
# one protected by tenantguard without audit (the policies and the tenant's trip to the workers),
# one protected with audit (the UPDATE writes an audit row on the shard's worker). pgbench runs the same router SELECT and UPDATE against each in turn, ROUNDS times, with
# the tenant set for the session (PGOPTIONS), and the script prints the ratio protected / plain
# of each round and their median.
#
# usage: bash bench/citus_bench.sh [SECONDS per run (10)] [ROUNDS (5)] [CLIENTS (4)]
set -euo pipefail
cd "$(dirname "$0")/.."
unset RUST_BACKTRACE
. scripts/lib.sh
use_pg 15
secs=${1:-10} rounds=${2:-5} clients=${3:-4}
dir=/tmp/tenantguard-citus-bench
base=55730
[ -f "$("$PG_CONFIG" --pkglibdir)/citus.so" ] || { echo "needs Citus in PostgreSQL 15 (scripts/citus_test.sh installs it)" >&2; exit 1; }
bash scripts/setup.sh
echo "== release build" >&2
install_extension --release >/tmp/citus-bench-install.log 2>&1 || { tail -30 /tmp/citus-bench-install.log; exit 1; }
trap 'citus_cluster_stop "$dir"' EXIT
citus_cluster_start "$dir" $base bench "shared_buffers = '256MB'" "max_connections = 200" \
  "citus.enable_unsafe_triggers = on"
citus_node_sql "$dir" $base 0 -d bench <<'SQL'
CREATE EXTENSION tenantguard;
SET tenantguard.auto_protect = off;
CREATE ROLE bench_app LOGIN NOSUPERUSER NOBYPASSRLS;
CREATE TABLE plain (tenant_id bigint NOT NULL, id bigint NOT NULL, qty int, PRIMARY KEY (tenant_id, id));
CREATE TABLE guarded (tenant_id bigint NOT NULL, id bigint NOT NULL, qty int, PRIMARY KEY (tenant_id, id));
CREATE TABLE audited (tenant_id bigint NOT NULL, id bigint NOT NULL, qty int, PRIMARY KEY (tenant_id, id));
SELECT create_distributed_table('plain', 'tenant_id');
SELECT create_distributed_table('guarded', 'tenant_id');
SELECT tenantguard.protect('guarded', audit => false);
SELECT create_distributed_table('audited', 'tenant_id');
SELECT tenantguard.protect('audited');
INSERT INTO plain SELECT t, i, 0 FROM generate_series(1, 50) t, generate_series(1, 2000) i;
INSERT INTO guarded SELECT * FROM plain;
INSERT INTO audited SELECT * FROM plain;
GRANT SELECT, UPDATE ON plain, guarded, audited TO bench_app;
VACUUM ANALYZE plain; VACUUM ANALYZE guarded; VACUUM ANALYZE audited;
SQL
# Two shapes: each statement on its own (autocommit), and both in one transaction.
for t in plain guarded audited; do
  cat >"$dir/$t.sql" <<SQL
\set id random(1, 2000)
SELECT qty FROM $t WHERE tenant_id = 7 AND id = :id;
UPDATE $t SET qty = qty + 1 WHERE tenant_id = 7 AND id = :id;
SQL
  cat >"$dir/$t-tx.sql" <<SQL
\set id random(1, 2000)
BEGIN;
SELECT qty FROM $t WHERE tenant_id = 7 AND id = :id;
UPDATE $t SET qty = qty + 1 WHERE tenant_id = 7 AND id = :id;
COMMIT;
SQL
done
chown postgres "$dir"/*.sql
# run SCRIPT [TENANT]: tps of the script, with the session's tenant set (or not).
run() {
  local opts=""
  [ -n "${2:-}" ] && opts="-c app.current_tenant_id=$2"
  as_pg env PGOPTIONS="$opts" "$PGBIN/pgbench" -n -h "$dir/n0" -p $base \
    -U bench_app -c "$clients" -j 2 -T "$secs" -f "$dir/$1.sql" bench 2>/dev/null |
    sed -n 's/^tps = \([0-9.]*\).*/\1/p'
}
median() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a / b}'; }
run plain >/dev/null; run guarded 7 >/dev/null   # warm both
auto=() tx=() context=() audit=()
for r in $(seq "$rounds"); do
  bare=$(run plain); plain=$(run plain 7); guarded=$(run guarded 7)
  plain_tx=$(run plain-tx 7); guarded_tx=$(run guarded-tx 7); audited=$(run audited 7)
  auto+=("$(ratio "$guarded" "$plain")"); tx+=("$(ratio "$guarded_tx" "$plain_tx")")
  context+=("$(ratio "$plain" "$bare")"); audit+=("$(ratio "$audited" "$guarded")")
  echo "round $r: autocommit: plain $plain tps (without a tenant $bare), protected $guarded;" \
       "in a transaction: plain $plain_tx, protected $guarded_tx;" \
       "protected/plain ${auto[-1]} and ${tx[-1]}; audited (autocommit) $audited, audited/protected ${audit[-1]}"
done
echo "median protected/plain, each statement in autocommit: $(printf '%s\n' "${auto[@]}" | median)"
echo "median protected/plain, both statements in one transaction: $(printf '%s\n' "${tx[@]}" | median)"
echo "median plain table with/without a tenant set: $(printf '%s\n' "${context[@]}" | median)"
echo "median audited/protected (the UPDATE's audit row, written on the shard's worker): $(printf '%s\n' "${audit[@]}" | median)"
echo "(throughput of a router SELECT + UPDATE through the coordinator, $clients clients, ${secs}s runs)"
