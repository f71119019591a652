# Shared by scripts/slowlog_readers_test.sh and bench/slowlog_readers_bench.sh: the database, the
# roles and the reader. The caller defines dir, port, work, secs and sql() and has started a
# server that preloads tenantguard.

# readers_setup: tenantguard, pgbench's tables, role bench capturing every statement, role reader.
readers_setup() {
  mkdir -p "$work"; chown postgres:postgres "$work"
  sql -c "CREATE EXTENSION tenantguard" \
    -c "CREATE ROLE bench LOGIN NOSUPERUSER NOBYPASSRLS" \
    -c "ALTER ROLE bench SET tenantguard.slow_query_ms = 0" \
    -c "CREATE ROLE reader LOGIN NOSUPERUSER IN ROLE pg_read_all_stats"
  as_pg "$PGBIN/pgbench" -q -i -s 4 -h "$dir" -p "$port" -U postgres postgres >/dev/null 2>&1
  sql -c "GRANT SELECT ON pgbench_accounts, pgbench_branches TO bench" -c "VACUUM ANALYZE pgbench_accounts"
  echo "SELECT count(*) FROM tenantguard.slow_queries();" > "$work/reader.sql"
  chown postgres:postgres "$work/reader.sql"
}

reader_pid=
# reader_start on|niced: a session looping over slow_queries() until reader_stop
reader_start() {
  (cd "$work" && as_pg env PGAPPNAME=ring_reader "$PGBIN/pgbench" -n -f reader.sql -c 1 -T $((secs + 30)) \
    -h "$dir" -p "$port" -U reader postgres > "$work/reader-$1.out" 2>&1) &
  reader_pid=$!
  local pid=
  for _ in $(seq 50); do
    pid=$(sql -At -c "SELECT pid FROM pg_stat_activity WHERE application_name = 'ring_reader'")
    [ -n "$pid" ] && break
    sleep 0.1
  done
  [ -n "$pid" ] || { echo "FAIL: the reader did not start" >&2; exit 1; }
  [ "$1" = niced ] && renice -n 19 -p "$pid" >/dev/null
  sleep 1 # the ring fills, the reader copies it whole
}
reader_stop() {
  [ -n "$reader_pid" ] || return 0
  kill "$reader_pid" 2>/dev/null || true
  wait "$reader_pid" 2>/dev/null || true
  reader_pid=
  sql -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'ring_reader'" >/dev/null
}

# ran NAME VALUE: a pgbench run that printed no figure failed
ran() {
  [ -n "$2" ] || { cat "$work/$1.out" >&2; echo "FAIL: pgbench run '$1' failed" >&2; exit 1; }
}
