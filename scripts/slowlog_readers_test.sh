#!/usr/bin/env bash
# Nothing captured into the slow-query ring is lost or written twice across flushes while another
# session reads the whole ring.
#
# A preloaded server captures every statement of a role (tenantguard.slow_query_ms = 0) into a
# ring of 20,000 slots (the maximum, about 86 MB), and the flush worker copies the ring into
# tenantguard.slow_query_log every 100 ms. Four pgbench clients (-S, rate-limited below what the
# flush worker copies: at full speed they fill the ring faster than it drains, and a ring
# overwrites) capture for 5 seconds while another session loops over tenantguard.slow_queries(),
# which reads every slot without the ring's lock (src/slowlog/ring.rs). Checked: every statement
# the clients ran is in slow_query_log exactly once, and the entries logged since the flush before
# the run have no gap and no repeat. (Whether the reader slows capture down is measured by
# bench/slowlog_readers_bench.sh.)
#
# usage: bash scripts/slowlog_readers_test.sh   (PostgreSQL 15; the extension must be installed)
set -euo pipefail
cd "$(dirname "$0")/.."
unset RUST_BACKTRACE
. scripts/lib.sh
use_pg 15
dir=/tmp/tenantguard-slowlog-readers
port=55486
work=$dir/work
secs=${TG_READERS_SECONDS:-5}

. scripts/slowlog_readers_lib.sh
cleanup() {
  reader_stop
  cluster_stop "$dir"
}
trap cleanup EXIT
cluster_start "$dir" $port "shared_preload_libraries = 'tenantguard'" \
  "tenantguard.slow_query_max = 20000" "tenantguard.slow_query_flush_ms = 100" \
  "tenantguard.slow_query_flush_database = 'postgres'"
sql() { as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p $port -U postgres -d postgres "$@"; }
readers_setup

sleep 0.5
sql -At -c "SELECT tenantguard.flush_slow_queries()" >/dev/null
base=$(sql -At -c "SELECT coalesce(max(seq), 0) FROM tenantguard.slow_query_log
                    WHERE epoch = (SELECT pg_postmaster_start_time())")
reader_start on
out=$(cd "$work" && as_pg "$PGBIN/pgbench" -n -S -M prepared -c 4 -j 2 -T "$secs" -R 3000 \
  -h "$dir" -p $port -U bench postgres 2>&1)
echo "$out" > "$work/limited.out"
n_limited=$(echo "$out" | awk -F': ' '/number of transactions actually processed/ {split($2, a, "/"); print a[1]}')
ran limited "$n_limited"
reader_stop
sleep 0.5
sql -At -c "SELECT tenantguard.flush_slow_queries()" >/dev/null
read -r logged entries lo hi distinct < <(sql -At -F ' ' -c "
  SELECT count(*) FILTER (WHERE db_user = 'bench' AND query LIKE 'SELECT abalance FROM pgbench_accounts%'),
         count(*), min(seq), max(seq), count(DISTINCT seq)
    FROM tenantguard.slow_query_log
   WHERE epoch = (SELECT pg_postmaster_start_time()) AND seq > $base")
echo "rate-limited run with the reader and the flush worker: $n_limited pgbench transactions;"
echo "logged: $logged; entries $entries numbered $lo..$hi, $distinct distinct"
[ "$logged" = "$n_limited" ] || {
  sql -c "SELECT db_user, status, left(query, 60) AS query, count(*) FROM tenantguard.slow_query_log
           WHERE epoch = (SELECT pg_postmaster_start_time()) AND seq > $base GROUP BY 1, 2, 3" >&2
  echo "FAIL: $n_limited statements captured by pgbench, $logged in slow_query_log" >&2; exit 1; }
[ "$distinct" = "$entries" ] && [ "$lo" = $((base + 1)) ] && [ $((hi - lo + 1)) = "$entries" ] ||
  { echo "FAIL: the log's entry numbers after $base have gaps or repeats" >&2; exit 1; }

echo "PASS: nothing captured lost or doubled across flushes while a reader copies the ring"
