#!/usr/bin/env bash
# The Citus suite: a coordinator and two workers on this machine (PostgreSQL 15 with Citus, each
# node with shared_preload_libraries = 'citus,tenantguard'), and the pg_regress files in
# pg_test/citus/ run against the coordinator as real roles and sessions: isolation across nodes,
# after a shard move, a split and a rebalance, reference tables, auto-protect and distribution,
# the guard, coverage of every placement, the audit trail read from the coordinator, rewrites,
# and the attack suite's queries on a distributed table.
#
# Citus comes from the system (its files in Debian's PostgreSQL 15), or is installed from the
# prebuilt copy in ../shared/citus/ (or /work/shared/citus, or $TG_CITUS_DIR). With neither, the
# suite says that it is skipped, and why, and succeeds.
#
# usage: bash scripts/citus_test.sh
set -euo pipefail
cd "$(dirname "$0")/.."
unset RUST_BACKTRACE
. scripts/lib.sh
use_pg 15

dir=/tmp/tenantguard-citus
base_port=55720
libdir=$("$PG_CONFIG" --pkglibdir)

if [ ! -f "$libdir/citus.so" ]; then
  from=
  # Next to this checkout (../shared/citus), or where the developers' machine keeps it.
  for d in "${TG_CITUS_DIR:-}" "$PWD/../shared/citus" /work/shared/citus; do
    if [ -n "$d" ] && [ -f "$d/install.sh" ]; then from=$d; break; fi
  done
  if [ -z "$from" ]; then
    echo "== Citus suite: SKIPPED: Citus is not installed in PostgreSQL 15 ($libdir/citus.so)"
    echo "   and no prebuilt copy was found (../shared/citus/ or \$TG_CITUS_DIR)."
    exit 0
  fi
  echo "== installing Citus from $from"
  bash "$from/install.sh" "$PG_CONFIG"
fi

echo "== building and installing tenantguard for PostgreSQL 15"
install_extension >"$dir.install.log" 2>&1 || { tail -30 "$dir.install.log"; exit 1; }

# TG_CITUS_KEEP=1 leaves the cluster running afterwards, for a look at what failed.
[ -n "${TG_CITUS_KEEP:-}" ] || trap 'citus_cluster_stop "$dir"' EXIT
citus_cluster_start "$dir" $base_port regression "tenantguard.slow_query_flush_database = 'regression'"

out=$dir/regress
mkdir -p "$out"
cp -r pg_test/citus/sql pg_test/citus/expected "$out/"
chown -R postgres:postgres "$out"
tests=$(cd pg_test/citus/sql && ls ./*.sql | sed 's|^\./||; s|\.sql$||' | sort)
echo "== Citus suite: a coordinator and two workers (Citus $(citus_node_sql "$dir" $base_port 0 \
  -d regression -At -c "SELECT extversion FROM pg_extension WHERE extname = 'citus'"))"
if ! as_pg "$PGBIN/../lib/pgxs/src/test/regress/pg_regress" \
    --bindir="$PGBIN" --use-existing --dbname=regression \
    --host="$dir/n0" --port=$base_port --user=postgres \
    --inputdir="$out" --outputdir="$out" $tests; then
  [ -f "$out/regression.diffs" ] && head -c 20000 "$out/regression.diffs"
  echo "tenantguard: the Citus suite failed" >&2
  exit 1
fi
for i in 0 1 2; do
  if grep -E 'terminated by signal|PANIC' "$dir/n$i/server.log"; then
    echo "tenantguard: a server process crashed during the Citus suite (node $i)" >&2
    exit 1
  fi
done
echo "Citus suite: $(echo "$tests" | wc -w) files passed"
