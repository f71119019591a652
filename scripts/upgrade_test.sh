#!/usr/bin/env bash
# The upgrade test: build and install the previous release (its commit is recorded in
# releases.tsv, since a fresh clone may carry no tags), fill a database with protected tables of
# every kind (pg_test/lifecycle/populate.sql: key types, templates, partitions, an exemption, a
# lint waiver, audit and slow-query log rows), install this build and run
# ALTER EXTENSION tenantguard UPDATE. Then:
# - everything is intact and working (pg_test/lifecycle/verify.sql against its expected output:
#   isolation, attacks, the guard, auto-protect, coverage, the audit trail);
# - the upgraded extension's objects are identical to a fresh install's
#   (pg_test/lifecycle/fingerprint.sql on both, compared line by line).
#
# usage: bash scripts/upgrade_test.sh [MAJOR (15)]
set -euo pipefail
cd "$(dirname "$0")/.."
unset RUST_BACKTRACE
. scripts/lib.sh
use_pg "${1:-15}"
dir=/tmp/tenantguard-upgrade-test
port=55460
prev=$(awk -F'\t' 'NR > 1 {v = $1; c = $2} END {print v " " c}' releases.tsv)
prev_version=${prev% *}
prev_commit=${prev#* }
current=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)

echo "== building tenantguard $prev_version (commit $prev_commit) for PostgreSQL $PG_MAJOR"
tree=/tmp/tenantguard-$prev_version
git worktree remove --force "$tree" 2>/dev/null || rm -rf "$tree"
git worktree prune
git worktree add --detach "$tree" "$prev_commit" >/dev/null
trap 'cluster_stop "$dir"; git worktree remove --force "$tree" 2>/dev/null || true' EXIT
# A target directory of its own: in the shared one, cargo would take this build's library for
# up to date afterwards and leave the previous release's copy in place for every later install.
(cd "$tree" && CARGO_TARGET_DIR="$OLDPWD/target/previous-release" \
  cargo pgrx install --pg-config "$PG_CONFIG" >"$dir.prev-install.log" 2>&1) ||
  { tail -30 "$dir.prev-install.log"; exit 1; }

psql_db() { local db=$1; shift; as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d "$db" "$@"; }
cluster_start "$dir" "$port" "shared_preload_libraries = 'tenantguard'"
psql_db postgres -c "CREATE DATABASE tg_upgraded" -c "CREATE DATABASE tg_fresh"
psql_db tg_upgraded -f pg_test/lifecycle/populate.sql >/dev/null
psql_db tg_upgraded -At -c "SELECT 'installed ' || extversion FROM pg_extension WHERE extname = 'tenantguard'"
cluster_stop "$dir"

echo "== installing tenantguard $current and running ALTER EXTENSION tenantguard UPDATE"
touch src/lib.rs   # the previous release's library was built into the same target directory
install_extension >"$dir.install.log" 2>&1 || { tail -30 "$dir.install.log"; exit 1; }
as_pg "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null
# Between the new library and ALTER EXTENSION ... UPDATE, audited writes still work (into the old
# schema's table).
psql_db tg_upgraded -c "BEGIN" -c "SET ROLE lc_app" -c "SET app.current_tenant_id = 'acme'" \
  -c "INSERT INTO k_text VALUES (99, 'acme', 'before the update')" \
  -c "SELECT 'audited before the update: ' || count(*) FROM tenantguard.audit_log WHERE record_key = '{\"id\": 99}'" \
  -c "ROLLBACK" -At
psql_db tg_upgraded -c "ALTER EXTENSION tenantguard UPDATE"
psql_db tg_upgraded -At -c "SELECT 'updated to ' || extversion FROM pg_extension WHERE extname = 'tenantguard'"

echo "== the upgraded extension's objects against a fresh install's"
psql_db tg_fresh -c "CREATE EXTENSION tenantguard"
psql_db tg_upgraded -f pg_test/lifecycle/fingerprint.sql >"$dir.upgraded.txt"
psql_db tg_fresh -f pg_test/lifecycle/fingerprint.sql >"$dir.fresh.txt"
if ! diff -u "$dir.fresh.txt" "$dir.upgraded.txt" >"$dir.fingerprint.diff"; then
  head -c 20000 "$dir.fingerprint.diff"
  echo "upgrade test: the upgraded extension differs from a fresh install (- fresh, + upgraded)" >&2
  exit 1
fi
echo "== verify: isolation, attacks, guard, auto-protect, coverage, audit"
out=$dir/regress
rm -rf "$out"; mkdir -p "$out"; cp -r pg_test/lifecycle "$out/input"; mkdir -p "$out/input/sql"
cp pg_test/lifecycle/verify.sql "$out/input/sql/"; chown -R postgres:postgres "$out"
as_pg "$PGBIN/../lib/pgxs/src/test/regress/pg_regress" --bindir="$PGBIN" --use-existing \
  --host="$dir" --port="$port" --user=postgres --dbname=tg_upgraded \
  --inputdir="$out/input" --outputdir="$out" verify ||
  { head -c 20000 "$out/regression.diffs"; exit 1; }

echo "upgrade test: $prev_version -> $current on PostgreSQL $PG_MAJOR passed ($(wc -l <"$dir.fresh.txt") objects and attributes identical)"
