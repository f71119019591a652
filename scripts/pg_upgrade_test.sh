#!/usr/bin/env bash
# PostgreSQL upgrades with tenantguard installed: a PostgreSQL 15 cluster (an upstream 15, see
# lib.sh: Debian's cannot be pg_upgraded to upstream 17 at all) with tenantguard
# preloaded and a database of protected tables of every kind (pg_test/lifecycle/populate.sql) is
# - upgraded with pg_upgrade to 17 and to 18 (from a copy, so both start from the same cluster);
# - dumped (pg_dumpall --globals-only, then pg_dump -Fc of the database, with the newer major's
#   tools as PostgreSQL recommends) and restored into a new 17 cluster.
# After each, pg_test/lifecycle/verify.sql must give its expected output: the protection, the
# registry (keyed by regclass), the audit rows, the policies, a clean coverage(), the attacks
# refused, the guard and auto-protect at work.
#
# usage: bash scripts/pg_upgrade_test.sh [TARGET_MAJOR...]   (default: 17 18)
set -euo pipefail
cd "$(dirname "$0")/.."
unset RUST_BACKTRACE
. scripts/lib.sh
targets=${*:-17 18}
base=/tmp/tenantguard-pgupgrade
old_port=55470

for m in 15u $targets; do
  use_pg "$m"
  echo "== installing tenantguard into PostgreSQL $m"
  install_extension >"$base-install-$m.log" 2>&1 || { tail -30 "$base-install-$m.log"; exit 1; }
done

use_pg 15u
old_bin=$PGBIN
old=$base-15
psql_at() { local dir=$1 port=$2 db=$3; shift 3; as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d "$db" "$@"; }
cluster_start "$old" "$old_port" "shared_preload_libraries = 'tenantguard'"
trap 'for d in "$base"-*; do [ -d "$d/data" ] && PGBIN=$(cat "$d/bindir" 2>/dev/null || echo "$old_bin") cluster_stop "$d"; done' EXIT
echo "$PGBIN" >"$old/bindir"
psql_at "$old" "$old_port" postgres -c "CREATE DATABASE tg_lc"
psql_at "$old" "$old_port" tg_lc -f pg_test/lifecycle/populate.sql >/dev/null
cluster_stop "$old"

# verify DIR PORT DB: pg_test/lifecycle/verify.sql against its expected output, with the running
# major's pg_regress.
verify() {
  local dir=$1 port=$2 db=$3 out=$1/regress
  rm -rf "$out"; mkdir -p "$out/input/sql"
  cp -r pg_test/lifecycle/expected "$out/input/"; cp pg_test/lifecycle/verify.sql "$out/input/sql/"
  chown -R postgres:postgres "$out"
  as_pg "$PGBIN/../lib/pgxs/src/test/regress/pg_regress" --bindir="$PGBIN" --use-existing \
    --host="$dir" --port="$port" --user=postgres --dbname="$db" \
    --inputdir="$out/input" --outputdir="$out" verify >"$out.log" 2>&1 ||
    { cat "$out.log"; head -c 20000 "$out/regression.diffs"; exit 1; }
}

for m in $targets; do
  use_pg "$m"
  new=$base-$m
  port=$((old_port + m))
  echo "== pg_upgrade 15 -> $m"
  cluster_stop "$new"; rm -rf "$new"; mkdir -p "$new"; chown postgres:postgres "$new"
  echo "$PGBIN" >"$new/bindir"
  # 18's initdb turns data checksums on by default; pg_upgrade needs the old cluster's setting.
  checksums=; [ "$m" -ge 18 ] && checksums=--no-data-checksums
  as_pg "$PGBIN/initdb" -D "$new/data" -A trust -U postgres $checksums >/dev/null
  {
    echo "port = $port"
    echo "unix_socket_directories = '$new'"
    echo "listen_addresses = ''"
    echo "shared_preload_libraries = 'tenantguard'"
  } >>"$new/data/postgresql.conf"
  (cd "$new" && as_pg "$PGBIN/pg_upgrade" --old-bindir="$old_bin" --new-bindir="$PGBIN" \
    --old-datadir="$old/data" --new-datadir="$new/data" --old-port="$old_port" --new-port="$port" \
    --socketdir="$new" --username=postgres --copy >"$new/pg_upgrade.log" 2>&1) ||
    { tail -40 "$new/pg_upgrade.log"; find "$new/data" -name '*.txt' -path '*pg_upgrade_output.d*' -exec cat {} + 2>/dev/null | head -40; exit 1; }
  as_pg "$PGBIN/pg_ctl" -D "$new/data" -l "$new/server.log" -w start >/dev/null
  verify "$new" "$port" tg_lc
  echo "   PostgreSQL $m: $(psql_at "$new" "$port" tg_lc -At -c "SELECT 'tenantguard ' || extversion || ', ' || (SELECT count(*) FROM tenantguard.registry) || ' protected tables, ' || (SELECT count(*) FROM tenantguard.audit_log) || ' audit rows' FROM pg_extension WHERE extname = 'tenantguard'")"
  cluster_stop "$new"
done

# Dump on 15, restore on 17.
use_pg 17
dump=$base-dump
echo "== pg_dump on 15, pg_restore on 17"
files=$base-dumpfiles   # outside $dump: cluster_start recreates its directory
rm -rf "$files"; mkdir -p "$files"; chown postgres:postgres "$files"
PGBIN=$old_bin as_pg "$old_bin/pg_ctl" -D "$old/data" -l "$old/server.log" -w start >/dev/null
as_pg "$PGBIN/pg_dumpall" -h "$old" -p "$old_port" -U postgres --globals-only -f "$files/globals.sql"
as_pg "$PGBIN/pg_dump" -h "$old" -p "$old_port" -U postgres -Fc -d tg_lc -f "$files/tg_lc.dump"
PGBIN=$old_bin cluster_stop "$old"
cluster_start "$dump" $((old_port + 50)) "shared_preload_libraries = 'tenantguard'"
echo "$PGBIN" >"$dump/bindir"
# The roles (the existing superuser's CREATE ROLE fails, harmlessly; the rest go on).
as_pg "$PGBIN/psql" -X -q -h "$dump" -p $((old_port + 50)) -U postgres -d postgres -f "$files/globals.sql" >/dev/null 2>&1
psql_at "$dump" $((old_port + 50)) postgres -c "CREATE DATABASE tg_lc"
as_pg "$PGBIN/pg_restore" -h "$dump" -p $((old_port + 50)) -U postgres --exit-on-error -d tg_lc "$files/tg_lc.dump"
verify "$dump" $((old_port + 50)) tg_lc
cluster_stop "$dump"

echo "pg_upgrade test: 15 -> $(echo "$targets" | tr ' ' ','), and a dump restored on 17: passed"
