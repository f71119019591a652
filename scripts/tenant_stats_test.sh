#!/usr/bin/env bash
# Per-tenant usage with real sessions (docs/tenant-stats.md):
#   1. exact counts: pgbench clients of two tenants at once, as a NOSUPERUSER NOBYPASSRLS role on a
#      protected table, plus sessions that fail (errors, statement_timeout), and a session that
#      stays open and publishes as it goes;
#   2. visibility: a tenant's session sees its own rows only, a pg_read_all_stats member all;
#   3. eviction at tenantguard.tenant_stats_max (100 here): 300 more tenants leave at most 100
#      entries, the heavy tenant kept with its exact count;
#   4. persistence: a clean restart keeps every count; a crash (a backend killed) loses them;
#   5. the postgres_exporter queries file: Debian's exporter serves the counts as metrics.
#
# usage: bash scripts/tenant_stats_test.sh   (PostgreSQL 15; the extension must be installed)
set -euo pipefail
cd "$(dirname "$0")/.."
unset RUST_BACKTRACE
. scripts/lib.sh
use_pg 15
dir=/tmp/tenantguard-tenant-stats
port=55487
exporter_port=55489
exporter=$TG_PG_ROOT/exporter/usr/bin/prometheus-postgres-exporter
exporter_pid=
cleanup() {
  [ -n "$exporter_pid" ] && kill "$exporter_pid" 2>/dev/null || true
  cluster_stop "$dir"
}
trap cleanup EXIT
cluster_start "$dir" $port "shared_preload_libraries = 'tenantguard'" \
  "tenantguard.tenant_stats_max = 100" "restart_after_crash = on"
sql() { as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p $port -U postgres -d postgres "$@"; }
# as ROLE TENANT psql-args...: a session of ROLE with the tenant set at connection.
as() {
  local role=$1 tenant=$2; shift 2
  as_pg env PGOPTIONS="-c app.current_tenant_id=$tenant" \
    "$PGBIN/psql" -X -q -h "$dir" -p $port -U "$role" -d postgres "$@"
}
fail() { echo "tenant stats test: $*" >&2; exit 1; }
check() { # check NAME GOT WANT
  [ "$2" = "$3" ] || fail "$1: got '$2', want '$3'"
  echo "ok: $1 = $2"
}
# Sessions publish what they counted as they exit: wait until only this script's reader is left.
settle() {
  sql -c "DO \$\$ BEGIN
    FOR i IN 1..400 LOOP
      EXIT WHEN NOT EXISTS (SELECT FROM pg_stat_activity
                             WHERE backend_type = 'client backend' AND pid <> pg_backend_pid());
      PERFORM pg_sleep(0.05);
    END LOOP; END \$\$"
}
stat() { # stat TENANT ROLE COLUMN
  sql -At -c "SELECT coalesce(sum($3), 0) FROM tenantguard.tenant_stats()
              WHERE tenant_id = '$1' AND db_user = '$2'"
}

sql <<'SQL'
CREATE EXTENSION tenantguard;
CREATE ROLE app LOGIN NOSUPERUSER NOBYPASSRLS;
CREATE ROLE owner_role LOGIN NOSUPERUSER NOBYPASSRLS;
CREATE ROLE watcher LOGIN NOSUPERUSER NOBYPASSRLS;
GRANT CREATE ON SCHEMA public TO owner_role;
SET tenantguard.auto_protect = off;
SET ROLE owner_role;
CREATE TABLE items (id int PRIMARY KEY, tenant_id text NOT NULL, v int);
INSERT INTO items SELECT g, CASE WHEN g % 2 = 0 THEN 'a' ELSE 'b' END, g FROM generate_series(1, 1000) g;
SELECT tenantguard.protect('items');
GRANT SELECT, UPDATE ON items TO app;
RESET ROLE;
SQL

echo "== 1. exact counts"
mkdir -p "$dir/work"
cat >"$dir/work/a.sql" <<'SQL'
\set id random(1, 500) * 2
SELECT v FROM items WHERE id = :id;
UPDATE items SET v = v + 1 WHERE id = :id;
SQL
cat >"$dir/work/b.sql" <<'SQL'
SELECT count(*) FROM items;
SQL
chown -R postgres "$dir/work"
sql -At -c "SELECT tenantguard.reset_tenant_stats()" >/dev/null
# Two tenants at once: a with 3 clients x 400 transactions (2 statements each), b with 2 x 300.
(cd "$dir/work" && as_pg env PGOPTIONS="-c app.current_tenant_id=a" "$PGBIN/pgbench" -n -M prepared \
   -c 3 -j 1 -t 400 -f a.sql -h "$dir" -p $port -U app postgres >a.out 2>&1) &
pa=$!
(cd "$dir/work" && as_pg env PGOPTIONS="-c app.current_tenant_id=b" "$PGBIN/pgbench" -n -M prepared \
   -c 2 -j 1 -t 300 -f b.sql -h "$dir" -p $port -U app postgres >b.out 2>&1) &
pb=$!
# Tenant c fails: 5 errors in the executor, 2 syntax errors, 3 timeouts, 4 statements that succeed.
as app c -v ON_ERROR_STOP=0 >/dev/null 2>&1 <<'SQL' || true
SELECT 1 / (length(current_setting('app.current_tenant_id')) - 1);
SELECT 1 / (length(current_setting('app.current_tenant_id')) - 1);
SELECT 1 / (length(current_setting('app.current_tenant_id')) - 1);
SELECT 1 / (length(current_setting('app.current_tenant_id')) - 1);
SELECT 1 / (length(current_setting('app.current_tenant_id')) - 1);
SELEC 1;
SELEC 2;
SET statement_timeout = '50ms';
SELECT pg_sleep(1);
SELECT pg_sleep(1);
SELECT pg_sleep(1);
RESET statement_timeout;
SELECT 1;
SELECT 2;
SQL
wait $pa || { cat "$dir/work/a.out"; fail "pgbench a failed"; }
wait $pb || { cat "$dir/work/b.out"; fail "pgbench b failed"; }
settle
check "tenant a calls" "$(stat a app calls)" 2400
check "tenant a rows (one per SELECT and per UPDATE)" "$(stat a app rows)" 2400
check "tenant a errors" "$(stat a app errors)" 0
check "tenant b calls" "$(stat b app calls)" 600
check "tenant b rows" "$(stat b app rows)" 600
check "tenant c calls" "$(stat c app calls)" 14
check "tenant c errors" "$(stat c app errors)" 7
check "tenant c timeouts" "$(stat c app timeouts)" 3
check "tenant c rows" "$(stat c app rows)" 2
check "tenant c slowest statement >= 50 ms" "$(sql -At -c "SELECT max_time_ms >= 50 FROM tenantguard.tenant_stats() WHERE tenant_id = 'c'")" t
check "tenant a shared blocks touched" "$(sql -At -c "SELECT shared_blks_hit + shared_blks_read > 2400 FROM tenantguard.tenant_stats() WHERE tenant_id = 'a'")" t

# A session that stays open publishes as it goes: after a statement begun a second after the last
# publish, another session sees its counts while it is still connected.
# (bash unsets a coprocess's variables once it has exited: its pipes and pid are kept in our own.)
coproc OPEN { as app d -At 2>&1; }
open_pid=$OPEN_PID
exec {open_in}>&"${OPEN[1]}" {open_out}<&"${OPEN[0]}"
echo "SELECT 1; SELECT pg_sleep(1.1); SELECT 'published';" >&"$open_in"
read -r -t 10 line <&"$open_out"; read -r -t 10 line <&"$open_out"; read -r -t 10 line <&"$open_out"
check "open session's last answer" "$line" published
check "open session's calls, seen while it is connected" "$(stat d app calls)" 3
echo "\\q" >&"$open_in"
exec {open_in}>&- {open_out}<&-
wait "$open_pid" 2>/dev/null || true
# A long transaction publishes every 64 statements: 100 statements into an open transaction,
# another session sees 64 of them before the commit, and all 101 (with the marker SELECT; BEGIN
# and COMMIT are not counted) once the session has ended.
coproc LONG { as app e -At 2>&1; }
long_pid=$LONG_PID
exec {long_in}>&"${LONG[1]}" {long_out}<&"${LONG[0]}"
{ echo "BEGIN;"; for i in $(seq 1 100); do echo "SELECT $i AS s \\g /dev/null"; done
  echo "SELECT 'in transaction';"; } >&"$long_in"
read -r -t 20 line <&"$long_out"
check "long transaction's marker" "$line" "in transaction"
check "long transaction's calls before its commit" "$(stat e app calls)" 64
printf 'COMMIT;\n\\q\n' >&"$long_in"
exec {long_in}>&- {long_out}<&-
wait "$long_pid" 2>/dev/null || true
settle
check "long transaction's calls after it" "$(stat e app calls)" 101

echo "== 2. visibility"
check "tenant b sees only b" "$(as watcher b -At -c "SELECT string_agg(DISTINCT tenant_id, ',') FROM tenantguard.tenant_stats()")" b
check "no tenant sees nothing" "$(as watcher '' -At -c "SELECT count(*) FROM tenantguard.tenant_stats()")" 0
check "tenant b's top tenants" "$(as watcher b -At -c "SELECT string_agg(tenant_id, ',') FROM tenantguard.top_tenants(10, 'calls')")" b
sql -c "GRANT pg_read_all_stats TO watcher"
check "pg_read_all_stats sees a to e" "$(as watcher '' -At -c "SELECT string_agg(DISTINCT tenant_id, ',' ORDER BY tenant_id) FROM tenantguard.tenant_stats() WHERE tenant_id IS NOT NULL")" "a,b,c,d,e"
check "top tenant by calls" "$(as watcher '' -At -c "SELECT tenant_id FROM tenantguard.top_tenants(1, 'calls')")" a
check "top tenant by errors" "$(as watcher '' -At -c "SELECT tenant_id FROM tenantguard.top_tenants(1, 'errors')")" c
sql -c "REVOKE pg_read_all_stats FROM watcher"

echo "== 3. eviction at tenantguard.tenant_stats_max = 100"
{
  for i in $(seq 1 300); do echo "SET app.current_tenant_id = 'e$i'; SELECT $i;"; done
} >"$dir/work/many.sql"
chown postgres "$dir/work/many.sql"
as app '' -f "$dir/work/many.sql" >/dev/null
settle
read -r entries evicted < <(sql -At -F ' ' -c "SELECT entries, evicted FROM tenantguard.tenant_stats_info()")
[ "$entries" -le 100 ] || fail "entries $entries over the bound"
[ "$evicted" -gt 0 ] || fail "nothing evicted"
check "tenant_stats() rows within the bound" "$(sql -At -c "SELECT count(*) <= 100 FROM tenantguard.tenant_stats()")" t
echo "ok: $entries entries, $evicted evicted"
check "the heaviest tenant kept, exact" "$(stat a app calls)" 2400
check "the failing tenant kept, exact" "$(stat c app errors)" 7

echo "== 4. persistence"
snapshot() {
  sql -At -c "SELECT string_agg(format('%s/%s/%s/%s/%s/%s/%s', tenant_id, db_user, calls, rows, errors,
                                       timeouts, total_time_ms), ';' ORDER BY tenant_id, db_user)
                FROM tenantguard.tenant_stats() WHERE tenant_id IN ('a', 'b', 'c', 'd', 'e')"
}
before=$(snapshot)
as_pg "$PGBIN/pg_ctl" -D "$dir/data" -m fast -w restart -l "$dir/server.log" >/dev/null
after=$(snapshot)
check "counts after a clean restart" "$after" "$before"
[ -n "$before" ] || fail "nothing to compare"
# A crash: a backend killed with SIGKILL makes the server reinitialise shared memory.
as_pg "$PGBIN/psql" -X -q -h "$dir" -p $port -U postgres -d postgres -c "SELECT pg_sleep(30)" >/dev/null 2>&1 &
sleep 1
victim=$(sql -At -c "SELECT pid FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(30)'")
kill -9 "$victim"
for _ in $(seq 1 100); do sql -At -c "SELECT 1" >/dev/null 2>&1 && break; sleep 0.2; done
check "counts after a crash" "$(sql -At -c "SELECT count(*) FROM tenantguard.tenant_stats() WHERE tenant_id IN ('a', 'b', 'c', 'd', 'e')")" 0

echo "== 5. postgres_exporter with docs/prometheus/tenantguard-queries.yaml"
[ -x "$exporter" ] || fail "no $exporter (scripts/setup.sh unpacks it)"
as app a -c "SELECT 1" -c "SELECT 2" >/dev/null
settle
sql -c "CREATE ROLE exporter LOGIN; GRANT pg_monitor TO exporter"
DATA_SOURCE_NAME="postgresql://exporter@:$port/postgres?host=$dir&sslmode=disable" \
  "$exporter" --web.listen-address=127.0.0.1:$exporter_port \
  --extend.query-path=docs/prometheus/tenantguard-queries.yaml --disable-default-metrics \
  --disable-settings-metrics >"$dir/exporter.log" 2>&1 &
exporter_pid=$!
metrics=
for _ in $(seq 1 50); do
  metrics=$(python3 -c 'import sys, urllib.request; print(urllib.request.urlopen(sys.argv[1]).read().decode())' \
            "http://127.0.0.1:$exporter_port/metrics" 2>/dev/null || true)
  grep -q '^tenantguard_tenant_calls' <<<"$metrics" && break
  sleep 0.2
done
line=$(grep '^tenantguard_tenant_calls{' <<<"$metrics" | grep 'tenant_id="a"' | grep 'db_user="app"' || true)
[ -n "$line" ] || { cat "$dir/exporter.log"; echo "$metrics" | grep -i tenantguard | head; fail "no tenantguard_tenant_calls for tenant a"; }
check "exporter: tenant a's calls" "${line##* }" 2
grep -q '^tenantguard_tenant_stats_max_entries.* 100$' <<<"$metrics" || fail "no tenantguard_tenant_stats_max_entries 100"
echo "ok: tenantguard_tenant_stats_max_entries 100"
echo "tenant stats test: passed"
