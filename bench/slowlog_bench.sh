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
# TPC-B here is bound by WAL fsync, which the three clusters share; SYNC_COMMIT=off or FSYNC=off
# takes the disk out so that the ratio shows the CPU cost alone (FSYNC=off keeps commits
# synchronous, so VACUUM still sets the visibility map). SEQUENTIAL=1 runs the setups one after
# another in each round (order rotating) instead of at the same time, each with the CPUs to
# itself.
#
# usage: [SYNC_COMMIT=on|off] [FSYNC=on|off] [SEQUENTIAL=1] [CPU_ROUNDS=n]
#        bash bench/slowlog_bench.sh [seconds-per-run (15)] [rounds (5)]
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
    "synchronous_commit = ${SYNC_COMMIT:-on}" "fsync = ${FSYNC:-on}" ${preload[$s]:+"${preload[$s]}"}
done
trap 'for s in tg none pgss; do cluster_stop "$base-$s"; done' EXIT
dir=$base-tg
psql_su() { as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "${port[tg]}" -U postgres -d postgres "$@"; }
pgb() { # setup, pgbench args... -> tps
  local s=$1; shift
  as_pg "$PGBIN/pgbench" -h "$base-$s" -p "${port[$s]}" -U postgres -n -c 2 -j 2 "$@" postgres 2>/dev/null |
    awk '/^tps/ {print $3}'
}

for s in tg none pgss; do
  echo "== pgbench -i -s 10 ($s)" >&2
  as_pg "$PGBIN/pgbench" -h "$base-$s" -p "${port[$s]}" -U postgres -i -s 10 -q postgres >/dev/null 2>&1
  as_pg "$PGBIN/psql" -X -q -h "$base-$s" -p "${port[$s]}" -U postgres -d postgres -c "VACUUM (FREEZE, ANALYZE)"
done

results=/tmp/tenantguard-slowlog-bench.tsv
: >"$results"
for r in $(seq 1 "$rounds"); do
  echo "== round $r of $rounds" >&2
  for w in select tpcb; do
    args=(-T "$secs")
    [ "$w" = select ] && args+=(-S)
    if [ -n "${SEQUENTIAL:-}" ]; then
      case $((r % 3)) in 1) order="tg none pgss";; 2) order="none pgss tg";; 0) order="pgss tg none";; esac
      for s in $order; do pgb "$s" "${args[@]}" >"$base-$s.tps"; done
    else
      for s in tg none pgss; do pgb "$s" "${args[@]}" >"$base-$s.tps" & done
      wait
    fi
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
for r in $(seq 1 "${CPU_ROUNDS:-$rounds}"); do
  echo "== CPU round $r" >&2
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

# The hooks' work for a statement that is timed but not captured, in one backend, where the
# machine's noise is small: a PL/pgSQL loop runs an indexed SELECT 100,000 times with
# slow_query_track = all, threshold 100 ms (timed, never captured) and -1 (not timed), in
# alternating order. Nested statements also get the check that they do not come from one of
# tenantguard's own functions, so this bounds the cost for top-level statements from above.
echo "== hook cost per statement" >&2
hook=/tmp/tenantguard-slowlog-hook.txt
psql_su 2>"$hook" <<'SQL'
SET tenantguard.slow_query_track = 'all';
SET app.current_tenant_id = 'acme';
SET app.user_id = 'u1';
SET client_min_messages = notice;
DO $$
DECLARE n constant int := 100000; t0 timestamptz; ms int;
BEGIN
  FOR r IN 1..7 LOOP
    FOREACH ms IN ARRAY CASE WHEN r % 2 = 0 THEN ARRAY[100, -1] ELSE ARRAY[-1, 100] END LOOP
      PERFORM set_config('tenantguard.slow_query_ms', ms::text, false);
      t0 := clock_timestamp();
      FOR i IN 1..n LOOP
        PERFORM 1 FROM pgbench_branches WHERE bid = 1;
      END LOOP;
      RAISE NOTICE 'hookcost % % %', r, ms, extract(epoch FROM clock_timestamp() - t0) * 1e6 / n;
    END LOOP;
  END LOOP;
END $$;
SQL

python3 - "$results" "$capture" "$captured" "$cpu" "$txns" "$hook" <<'PY'
import re, sys, statistics, collections
res, cap, captured, cpu, txns, hook = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6]
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
    per = [f"{t[(r, w)]['tg'] / t[(r, w)]['none']:.3f}" for r in sorted({r for (r, ww) in t if ww == w})]
    print(f"{'':10} tg/none per round: {' '.join(per)}")
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
h = collections.defaultdict(dict)
for m in re.finditer(r"hookcost (\d+) (-?\d+) ([0-9.]+)", open(hook).read()):
    h[int(m.group(1))][m.group(2)] = float(m.group(3))
per = statistics.median(v["100"] - v["-1"] for v in h.values())
print()
rounds_txt = " ".join("%.2f" % (v["100"] - v["-1"]) for v in h.values())
print(f"hooks per timed statement (nested SELECT, threshold 100 vs off, one backend): {per:.2f} us (per round: {rounds_txt})")
cpu_none = {w: statistics.median(v["none"] for (r, ww), v in u.items() if ww == w) * 10000.0 / (2 * txns) for w in ["select", "tpcb"]}
for w, stmts in (("select", 1), ("tpcb", 5)):
    name = "-S" if w == "select" else "TPC-B"
    print(f"{name}: {stmts} timed statement(s) per transaction, {cpu_none[w]:.0f} us backend CPU per transaction (none): "
          f"TPS ratio the hooks allow >= {1 - stmts * per / cpu_none[w]:.3f}")
PY
