#!/usr/bin/env bash
# DDL cost of the event triggers (issue: "Event triggers ... Cost").
#
# Creates 1,000 tables, every other one with a tenant column (so 500 are auto-protected), in one
# psql run per database: "tg" has tenantguard installed (auto_protect = on), "plain" does not.
# Two forms, side by side in every round: the whole file in one transaction (psql -1), and each
# statement in its own transaction (autocommit, as psql running a migration file and migration
# tools that do not wrap). Rounds alternate tg, plain, plain, tg, ... in one cluster; each run
# starts from an empty schema. Reports the median wall-clock seconds of each side and the ratio
# tg / plain, and the same for the backend's CPU time (user + system, read from /proc/self/stat at
# the end of the session): the wall clock includes the disk (a commit's WAL flush, the new
# relations' files), which this shared machine's disk makes noisy; the CPU time is what
# tenantguard itself adds.
#
# usage: bash bench/ddl_bench.sh [rounds (6)]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
rounds=${1:-6}
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
  echo "SELECT 'cpu', pg_catalog.pg_read_file('/proc/self/stat');"
} > "$ddl"
chown postgres:postgres "$ddl"

run() { # db form -> "wall-seconds cpu-seconds"
  psql_db "$1" -c "DROP SCHEMA IF EXISTS bench CASCADE" >/dev/null 2>&1
  local t0 t1 single=() stat
  [ "$2" = one ] && single=(-1)
  t0=$(date +%s.%N)
  stat=$(PGOPTIONS="-c client_min_messages=warning" psql_db "$1" "${single[@]}" -At -F ' ' -f "$ddl" 2>/dev/null | awk '$1 == "cpu"')
  t1=$(date +%s.%N)
  # /proc/<pid>/stat: utime and stime are fields 14 and 15 (here 15 and 16, after "cpu"), in ticks.
  awk -v a="$t0" -v b="$t1" -v s="$stat" -v hz="$(getconf CLK_TCK)" \
    'BEGIN {split(s, f, " "); print b - a, (f[15] + f[16]) / hz}'
}

results=$dir/results.txt
: > "$results"
for r in $(seq "$rounds"); do
  if [ $((r % 2)) -eq 1 ]; then order="tg plain"; else order="plain tg"; fi
  for form in one auto; do
    for db in $order; do
      s=$(run "$db" "$form")
      echo "$db $form $r $s" | tee -a "$results" >&2
    done
  done
done
protected=$(psql_db tg -Atc "SELECT count(*) FROM tenantguard.coverage() WHERE status = 'protected'")
echo "tables protected in tg after the last round: $protected (expected 500)" >&2

median() { sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
echo
echo "| 1,000 CREATE TABLE, 500 with tenant_id (auto-protected) | with tenantguard (s) | without (s) | ratio | backend CPU with (s) | without (s) | CPU ratio |"
echo "|---|---|---|---|---|---|---|"
for form in one auto; do
  tg=$(awk -v f="$form" '$1 == "tg" && $2 == f {print $4}' "$results" | median)
  pl=$(awk -v f="$form" '$1 == "plain" && $2 == f {print $4}' "$results" | median)
  tc=$(awk -v f="$form" '$1 == "tg" && $2 == f {print $5}' "$results" | median)
  pc=$(awk -v f="$form" '$1 == "plain" && $2 == f {print $5}' "$results" | median)
  label="in one transaction"; [ "$form" = auto ] && label="autocommit, one transaction each"
  awk -v tg="$tg" -v pl="$pl" -v tc="$tc" -v pc="$pc" -v l="$label" \
    'BEGIN {printf "| %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f |\n", l, tg, pl, tg / pl, tc, pc, tc / pc}'
done
