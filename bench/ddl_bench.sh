#!/usr/bin/env bash
# DDL cost of the event triggers (issue: "Event triggers ... Cost").
#
# Creates 1,000 tables, every other one with a tenant column (so 500 are auto-protected), in one
# psql run per database: "tg" has tenantguard installed (auto_protect = on), "plain" does not.
# Rounds alternate tg, plain, plain, tg, ... in one cluster; each round starts from an empty schema.
# Reports the median seconds of each side and the ratio tg / plain.
#
# usage: bash bench/ddl_bench.sh [rounds (4)]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
rounds=${1:-4}
dir=/tmp/tenantguard-ddl-bench
port=55435

bench_setup tenantguard-ddl-bench "$dir" "$port"
psql_db() { local db=$1; shift; as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d "$db" "$@"; }

psql_db postgres -c "CREATE DATABASE tg" -c "CREATE DATABASE plain"
psql_db tg -c "CREATE EXTENSION tenantguard"

ddl=$dir/ddl.sql
{
  echo "DROP SCHEMA IF EXISTS bench CASCADE; CREATE SCHEMA bench; SET search_path = bench;"
  for i in $(seq 1 1000); do
    if [ $((i % 2)) -eq 0 ]; then
      echo "CREATE TABLE t$i (id bigint PRIMARY KEY, tenant_id uuid NOT NULL, name text, created_at timestamptz DEFAULT now());"
    else
      echo "CREATE TABLE t$i (id bigint PRIMARY KEY, name text, created_at timestamptz DEFAULT now());"
    fi
  done
} > "$ddl"
chown postgres:postgres "$ddl"

run() { # db -> seconds
  psql_db "$1" -c "DROP SCHEMA IF EXISTS bench CASCADE" >/dev/null 2>&1
  local t0 t1
  t0=$(date +%s.%N)
  psql_db "$1" -1 -f "$ddl" >/dev/null 2>&1
  t1=$(date +%s.%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}'
}

results=$dir/results.txt
: > "$results"
for r in $(seq "$rounds"); do
  if [ $((r % 2)) -eq 1 ]; then order="tg plain"; else order="plain tg"; fi
  for db in $order; do
    s=$(run "$db")
    echo "$db $r $s" | tee -a "$results" >&2
  done
done
protected=$(psql_db tg -Atc "SELECT count(*) FROM tenantguard.coverage() WHERE status = 'protected'")
echo "tables protected in tg after the last round: $protected (expected 500)" >&2

median() { sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
tg=$(awk '$1 == "tg" {print $3}' "$results" | median)
pl=$(awk '$1 == "plain" {print $3}' "$results" | median)
echo
echo "| workload | with tenantguard (s) | without (s) | ratio |"
echo "|---|---|---|---|"
awk -v tg="$tg" -v pl="$pl" 'BEGIN {printf "| 1,000 CREATE TABLE, 500 with tenant_id (auto-protected) | %.2f | %.2f | %.2f |\n", tg, pl, tg / pl}'
