#!/usr/bin/env bash
# tenantguard.tenant_scope through a real PgBouncer in transaction mode (Debian's pgbouncer),
# with one server connection, so every client's transactions run on the same backend:
# - client A sets its tenant for the session (SET, then set_config(..., false)) and leaves;
# - client B, on the same server connection, sets no tenant and reads.
# With tenant_scope = any, B reads A's rows (the leak). With tenant_scope = transaction, B reads
# nothing and gets the WARNING that names the fix, while a tenant set with SET LOCAL or
# set_tenant() inside a transaction still works through the pooler.
#
# usage: bash scripts/pgbouncer_test.sh   (PostgreSQL 15; the extension must be installed)
set -euo pipefail
cd "$(dirname "$0")/.."
unset RUST_BACKTRACE
. scripts/lib.sh
use_pg 15
dir=/tmp/tenantguard-pgbouncer
port=55481
bouncer_port=55482
command -v pgbouncer >/dev/null || { echo "pgbouncer is not installed (scripts/setup.sh)" >&2; exit 1; }

cleanup() {
  [ -f "$dir/pgbouncer.pid" ] && kill "$(cat "$dir/pgbouncer.pid")" 2>/dev/null || true
  cluster_stop "$dir/pg"
}
trap cleanup EXIT
cleanup
rm -rf "$dir"; mkdir -p "$dir"; chown postgres:postgres "$dir"
cluster_start "$dir/pg" $port "shared_preload_libraries = 'tenantguard'"
sql() { as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir/pg" -p $port -U postgres "$@"; }
sql -d postgres -c "CREATE DATABASE tg"
sql -d tg <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION tenantguard;
CREATE ROLE pool_app LOGIN NOSUPERUSER NOBYPASSRLS;
CREATE TABLE orders (id int PRIMARY KEY, tenant_id text NOT NULL);
INSERT INTO orders VALUES (1, 'acme'), (2, 'acme'), (3, 'globex');
GRANT SELECT ON orders TO pool_app;
SQL

cat >"$dir/pgbouncer.ini" <<EOF
[databases]
tg = host=$dir/pg port=$port dbname=tg
[pgbouncer]
listen_addr =
unix_socket_dir = $dir
listen_port = $bouncer_port
pool_mode = transaction
default_pool_size = 1
max_client_conn = 20
auth_type = trust
auth_file = $dir/users.txt
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
EOF
echo '"pool_app" ""' >"$dir/users.txt"
chown postgres:postgres "$dir"/pgbouncer.ini "$dir"/users.txt
as_pg pgbouncer -d "$dir/pgbouncer.ini"
for _ in $(seq 50); do [ -S "$dir/.s.PGSQL.$bouncer_port" ] && break; sleep 0.1; done

# A client through the pooler: prints what psql prints, warnings included.
client() { as_pg "$PGBIN/psql" -X -q -At -h "$dir" -p $bouncer_port -U pool_app -d tg "$@" 2>&1; }
fail() { echo "pgbouncer test: $*" >&2; exit 1; }

run_case() {
  local scope=$1 how=$2 set_cmd=$3
  sql -d tg -c "ALTER ROLE pool_app SET tenantguard.tenant_scope = '$scope'"
  # Reconnect the server side so that the role setting applies to the pooled connection.
  as_pg "$PGBIN/psql" -X -q -h "$dir" -p $bouncer_port -U pool_app -d pgbouncer \
    -c "RECONNECT tg" >/dev/null 2>&1 || true
  sql -d tg -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = 'pool_app'" >/dev/null
  client -c "$set_cmd" >/dev/null                         # client A, session-level, and leaves
  local pid_a pid_b seen
  pid_a=$(client -c "SELECT pg_backend_pid()")
  seen=$(client -c "SELECT count(*) FROM orders")         # client B, no tenant of its own
  pid_b=$(client -c "SELECT pg_backend_pid()")
  [ "$pid_a" = "$pid_b" ] || fail "the two clients did not share a server connection ($pid_a, $pid_b)"
  echo "scope $scope, client A $how, client B reads: $(echo "$seen" | tr '\n' ' ')"
  echo "$seen"
}

out=$(run_case any "SET app.current_tenant_id = 'acme'" "SET app.current_tenant_id = 'acme'")
echo "$out" | head -1
[ "$(echo "$out" | tail -1)" = 2 ] || fail "with tenant_scope = any, client B should have seen client A's 2 rows (the leak this setting exists for)"

for how in "SET app.current_tenant_id = 'acme'" "SELECT set_config('app.current_tenant_id', 'acme', false)" \
           "SELECT tenantguard.set_tenant('acme', false)"; do
  out=$(run_case transaction "$how" "$how")
  echo "$out" | head -1
  grep -q 'WARNING:  the tenant in "app.current_tenant_id" was set for the session' <<<"$out" ||
    fail "with tenant_scope = transaction, client B got no WARNING"
  [ "$(echo "$out" | tail -1)" = 0 ] || fail "with tenant_scope = transaction, client B saw client A's rows"
done

# Set for the transaction, through the pooler: works, and does not outlive it.
seen=$(client -c "BEGIN" -c "SET LOCAL app.current_tenant_id = 'globex'" -c "SELECT count(*) FROM orders" -c "COMMIT")
[ "$seen" = 1 ] || fail "SET LOCAL through the pooler: expected 1 row, got '$seen'"
seen=$(client -c "BEGIN" -c "SELECT tenantguard.set_tenant('acme')" -c "SELECT count(*) FROM orders" -c "COMMIT" | tail -1)
[ "$seen" = 2 ] || fail "set_tenant() in a transaction through the pooler: expected 2 rows, got '$seen'"
seen=$(client -c "SELECT count(*) FROM orders" | tail -1)
[ "$seen" = 0 ] || fail "a transaction's tenant outlived it: $seen rows"
echo "scope transaction: SET LOCAL and set_tenant() in a transaction work through the pooler and end with it"
echo "pgbouncer test: passed"
