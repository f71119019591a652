#!/usr/bin/env bash
# Cost of slow-query capture on fast queries, and the cost of one capture.
#
# Three clusters (pgbench scale 10 each) run side by side, at the same time, so that the load of
# this shared machine hits all three alike: "tg" preloads tenantguard with capture on at the
# default threshold (100 ms, so nothing is captured), "none" preloads nothing, "pgss" preloads
# pg_stat_statements. In each round the three run the same pgbench workload for the same seconds
# with 2 clients each: pgbench -S (select-only), then the default TPC-B-like script. The clusters
# share the CPUs, so the TPS ratios compare the CPU each setup spends per transaction. Reports
# median TPS and the median of the per-round ratios against "none". (An earlier version restarted
# one cluster per setup in turn; rounds then scattered by +-20% with the machine's load.)
#
# Then the cost of one capture: with tenantguard preloaded, 1 client runs `SELECT pg_sleep(0)`
# with tenantguard.slow_query_ms = 0 (every statement captured) and = -1 (off), alternating,
# and the difference in mean latency is the cost of recording one entry.
#
# TPC-B here is bound by WAL fsync, which the three clusters share; SYNC_COMMIT=off takes the
# fsync out so that the ratio shows the CPU cost alone.
#
# usage: [SYNC_COMMIT=on|off] bash bench/slowlog_bench.sh [seconds-per-run (15)] [rounds (5)]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
secs=${1:-15}
rounds=${2:-5}
base=/tmp/tenantguard-slowlog-bench
declare -A port=([tg]=55438 [none]=55439 [pgss]=55440)
declare -A preload=([tg]="shared_preload_libraries = 'tenantguard'" [none]="" [pgss]="shared_preload_libraries = 'pg_stat_statements'")

bash scripts/setup.sh
echo "== release build" >&2
install_extension --release >/tmp/tenantguard-slowlog-bench-install.log 2>&1 ||
  { cat /tmp/tenantguard-slowlog-bench-install.log; exit 1; }
for s in tg none pgss; do
  cluster_start "$base-$s" "${port[$s]}" "shared_buffers = '256MB'" "max_wal_size = '4GB'" \
    "synchronous_commit = ${SYNC_COMMIT:-on}" ${preload[$s]:+"${preload[$s]}"}
done
trap 'for s in tg none pgss; do cluster_stop "$base-$s"; done' EXIT
dir=$base-tg
psql_su() { as_pg psql -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "${port[tg]}" -U postgres -d postgres "$@"; }
pgb() { # setup, pgbench args... -> tps
  local s=$1; shift
  as_pg "$PGBIN/pgbench" -h "$base-$s" -p "${port[$s]}" -U postgres -n -c 2 -j 2 "$@" postgres 2>/dev/null |
    awk '/^tps/ {print $3}'
}

for s in tg none pgss; do
  echo "== pgbench -i -s 10 ($s)" >&2
  as_pg "$PGBIN/pgbench" -h "$base-$s" -p "${port[$s]}" -U postgres -i -s 10 -q postgres >/dev/null 2>&1
  as_pg psql -X -q -h "$base-$s" -p "${port[$s]}" -U postgres -d postgres -c "VACUUM (FREEZE, ANALYZE)"
done

results=/tmp/tenantguard-slowlog-bench.tsv
: >"$results"
for r in $(seq 1 "$rounds"); do
  echo "== round $r of $rounds" >&2
  for w in select tpcb; do
    args=(-T "$secs")
    [ "$w" = select ] && args+=(-S)
    for s in tg none pgss; do pgb "$s" "${args[@]}" >"$base-$s.tps" & done
    wait
    for s in tg none pgss; do printf '%s\t%s\t%s\t%s\n' "$r" "$s" "$w" "$(cat "$base-$s.tps")" >>"$results"; done
  done
done

# CPU per transaction: TPS on this machine moves with its other load, CPU time much less. The
# postmaster's cutime + cstime (/proc/PID/stat) grow by the CPU of every backend it reaps, so a
# fixed number of transactions on fresh connections, run one setup after another, gives each
# setup's backend CPU per transaction to within a clock tick.
cpu_ticks() { # setup -> cutime + cstime of its postmaster
  local pid
  pid=$(head -1 "$base-$1/data/postmaster.pid")
  awk '{print $16 + $17}' "/proc/$pid/stat"
}
cpu=/tmp/tenantguard-slowlog-cpu.tsv
: >"$cpu"
txns=${CPU_TXNS:-20000}
for r in $(seq 1 "$rounds"); do
  echo "== CPU round $r of $rounds" >&2
  for w in select tpcb; do
    args=(-t "$txns")
    [ "$w" = select ] && args+=(-S)
    for s in tg none pgss; do
      before=$(cpu_ticks "$s")
      pgb "$s" "${args[@]}" >/dev/null
      sleep 0.5 # let the postmaster reap the backends
      printf '%s\t%s\t%s\t%s\n' "$r" "$s" "$w" "$(($(cpu_ticks "$s") - before))" >>"$cpu"
    done
  done
done

echo "== cost of one capture" >&2
psql_su -c "CREATE EXTENSION IF NOT EXISTS tenantguard"
printf 'SELECT pg_sleep(0);\n' >"$dir/sleep0.sql"
chown postgres "$dir/sleep0.sql"
capture=/tmp/tenantguard-slowlog-capture.tsv
: >"$capture"
for r in $(seq 1 "$rounds"); do
  for ms in 0 -1; do
    lat=$(as_pg env PGOPTIONS="-c tenantguard.slow_query_ms=$ms" \
      "$PGBIN/pgbench" -h "$dir" -p "${port[tg]}" -U postgres -n -c 1 -t 20000 -f "$dir/sleep0.sql" postgres 2>/dev/null |
      awk '/^latency average/ {print $4}')
    printf '%s\t%s\t%s\n' "$r" "$ms" "$lat" >>"$capture"
  done
done
captured=$(psql_su -Atc "SELECT count(*) FROM tenantguard.slow_queries()" 2>/dev/null || echo "?")

python3 - "$results" "$capture" "$captured" "$cpu" "$txns" <<'PY'
import sys, statistics, collections
res, cap, captured, cpu, txns = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
t = collections.defaultdict(dict)
for line in open(res):
    r, s, w, tps = line.split()
    t[(int(r), w)][s] = float(tps)
print(f"{'workload':10} {'tg TPS':>10} {'none TPS':>10} {'pgss TPS':>10} {'tg/none':>8} {'pgss/none':>9}")
for w in ["select", "tpcb"]:
    rows = [v for (r, ww), v in t.items() if ww == w]
    med = {s: statistics.median(v[s] for v in rows) for s in ["tg", "none", "pgss"]}
    rt = statistics.median(v["tg"] / v["none"] for v in rows)
    rp = statistics.median(v["pgss"] / v["none"] for v in rows)
    name = "-S" if w == "select" else "TPC-B"
    print(f"{name:10} {med['tg']:10.0f} {med['none']:10.0f} {med['pgss']:10.0f} {rt:8.3f} {rp:9.3f}")
u = collections.defaultdict(dict)
for line in open(cpu):
    r, s, w, ticks = line.split()
    u[(int(r), w)][s] = int(ticks)
print()
print(f"backend CPU per transaction ({txns} transactions x 2 clients per run, 10 ms ticks):")
print(f"{'workload':10} {'tg us':>8} {'none us':>8} {'pgss us':>8} {'none/tg':>8} {'none/pgss':>9}")
for w in ["select", "tpcb"]:
    rows = [v for (r, ww), v in u.items() if ww == w]
    us = {s: statistics.median(v[s] for v in rows) * 10000.0 / (2 * txns) for s in ["tg", "none", "pgss"]}
    rt = statistics.median(v["none"] / v["tg"] for v in rows)
    rp = statistics.median(v["none"] / v["pgss"] for v in rows)
    name = "-S" if w == "select" else "TPC-B"
    print(f"{name:10} {us['tg']:8.1f} {us['none']:8.1f} {us['pgss']:8.1f} {rt:8.3f} {rp:9.3f}")
print("(none/tg is the TPS ratio the CPU cost alone allows a CPU-bound server: tenantguard / none)")
c = collections.defaultdict(dict)
for line in open(cap):
    r, ms, lat = line.split()
    c[int(r)][ms] = float(lat)
diff = statistics.median((v["0"] - v["-1"]) * 1000 for v in c.values())
print()
print(f"one capture (SELECT pg_sleep(0), threshold 0 vs off): {diff:.1f} us per statement (median of rounds)")
print(f"entries in the ring afterwards: {captured}")
PY
