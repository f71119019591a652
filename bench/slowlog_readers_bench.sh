#!/usr/bin/env bash
# Does reading the slow-query ring slow down the statements that write it? (issue: per-tenant
# usage, 6: "slow-query reads stop stalling writers".)
#
# Release build. A preloaded server captures every statement of a role (tenantguard.slow_query_ms
# = 0) into a ring of 20,000 slots (the maximum, about 86 MB), flushed every 100 ms. Four pgbench
# clients (-S, prepared) capture for N seconds, in pairs of runs: alone, then while another session
# loops over tenantguard.slow_queries(), which copies the whole ring (without the ring's lock:
# src/slowlog/ring.rs). The reader's backend runs at nice 19: on this two-core machine a reader at
# full speed takes CPU the four clients would use, and the question is whether writers wait for
# the reader, not whether they share the CPU. Prints each pair, the median ratio (target: at least
# 0.9), one pair with the reader at full speed for comparison, and how often a capturing backend
# was found waiting for the ring's lock (pg_stat_activity sampled every 2 ms), alone and with the
# reader: this machine's throughput drifts by 10-30% from one run to the next, and the waits show
# directly whether the reader holds writers up.
#
# usage: bash bench/slowlog_readers_bench.sh [seconds per run (8)] [pairs (5)]
set -euo pipefail
cd "$(dirname "$0")/.."
unset RUST_BACKTRACE
. scripts/lib.sh
dir=/tmp/tenantguard-readers-bench
port=55488
work=$dir/work
secs=${1:-8}
pairs=${2:-5}

. scripts/slowlog_readers_lib.sh
cleanup() {
  reader_stop
  cluster_stop "$dir"
}
bench_setup tenantguard-readers-bench "$dir" $port "shared_preload_libraries = 'tenantguard'" \
  "tenantguard.slow_query_max = 20000" "tenantguard.slow_query_flush_ms = 100" \
  "tenantguard.slow_query_flush_database = 'postgres'"
trap cleanup EXIT
sql() { as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p $port -U postgres -d postgres "$@"; }
readers_setup
# Waits for the ring's lock (LWLock tranche "tenantguard"), sampled every 2 ms during each run.
sql -c "CREATE UNLOGGED TABLE ring_waits (run text, waiting int, active int)"
cat > "$work/sample.sql" <<'SQL'
INSERT INTO ring_waits
SELECT current_setting('bench.run'),
       count(*) FILTER (WHERE wait_event_type = 'LWLock' AND wait_event = 'tenantguard'),
       count(*)
  FROM pg_stat_activity WHERE usename = 'bench' AND state = 'active';
SQL

# capture NAME: 4 clients as bench; prints "tps transactions"
capture() {
  local out
  (cd "$work" && as_pg env PGOPTIONS="-c bench.run=$1" "$PGBIN/pgbench" -n -f sample.sql -c 1 \
    -R 500 -T "$secs" -h "$dir" -p $port -U postgres postgres >/dev/null 2>&1) &
  out=$(cd "$work" && as_pg "$PGBIN/pgbench" -n -S -M prepared -c 4 -j 2 -T "$secs" \
    -h "$dir" -p $port -U bench postgres 2>&1)
  wait $!
  echo "$out" > "$work/$1.out"
  echo "$(echo "$out" | awk -F'= ' '/^tps/ {split($2, a, " "); print a[1]; exit}') \
$(echo "$out" | awk -F': ' '/number of transactions actually processed/ {split($2, a, "/"); print a[1]}')"
}

# measure: pairs of runs, alone then with the niced reader; prints the median of the pairs'
# ratios (this machine's throughput drifts by 10-20% from one run to the next).
measure() {
  local r ratios=() alone niced n
  for r in $(seq "$pairs"); do
    read -r alone n < <(capture "alone$r"); ran "alone$r" "$alone"
    reader_start niced
    read -r niced n < <(capture "niced$r"); ran "niced$r" "$niced"
    reader_stop
    echo "  pair $r: alone $alone tps, with the niced reader $niced tps" >&2
    ratios+=("$(awk -v a="$niced" -v b="$alone" 'BEGIN {printf "%.3f", a / b}')")
  done
  printf '%s\n' "${ratios[@]}" | sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
}
ratio=$(measure)
read -r alone n < <(capture alone_full); ran alone_full "$alone"
reader_start on
read -r full n < <(capture full); ran full "$full"
reader_stop
ratio_full=$(awk -v a="$full" -v b="$alone" 'BEGIN {printf "%.3f", a / b}')
echo "capture throughput with a reader looping over slow_queries() / alone: median $ratio with the"
echo "reader at nice 19; $ratio_full with the reader at full speed (one pair: $full / $alone tps)"
echo "target: at least 0.9"
echo
echo "Backends waiting for the ring's lock, per sample of the four capturing backends (every 2 ms):"
sql -c "SELECT CASE WHEN run LIKE 'alone%' THEN 'alone' WHEN run LIKE 'niced%' THEN 'reader at nice 19'
                    ELSE 'reader at full speed' END AS runs,
               count(*) AS samples, round(avg(waiting), 4) AS waiting_for_the_ring,
               round(avg(active), 2) AS active
          FROM ring_waits GROUP BY 1 ORDER BY 1"
