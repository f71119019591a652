#!/usr/bin/env bash
# What slow-query capture costs a statement, in CPU instructions counted by valgrind (callgrind),
# which this shared machine's load cannot disturb: the same binary and input give the same count.
#
# One backend in single-user mode (`postgres --single`) runs the pgbench workloads' statements
# from a file: N select-only transactions (`pgbench -S`'s SELECT) or N TPC-B-like transactions
# (BEGIN; 3 UPDATEs, SELECT, INSERT; END), on a pgbench scale-10 database, once with N and once with
# 2N; the difference divided by N is the cost of one transaction without start-up and shutdown.
# Setups, each on a fresh copy of the same data directory:
#   none      nothing preloaded
#   capture   tenantguard preloaded, slow-query capture on at the default threshold (100 ms: nothing
#             captured), per-tenant usage off (tenantguard.tenant_stats = off)
#   tg        tenantguard preloaded with everything on by default: capture and per-tenant usage
#   tg+qid    the same with compute_query_id = on (tenantguard records the query id when the server
#             computes one; it does not turn that on by itself)
#   pgss      pg_stat_statements preloaded (which turns query ids on)
#
# This counts the backend only; a real pgbench run adds the client and the kernel's work for the
# round trip to every setup alike, so the TPS ratio is at least the instruction ratio shown.
#
# usage: bash bench/slowlog_instructions.sh [transactions (2000)]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
n=${1:-2000}
base=/tmp/tenantguard-slowlog-instr
port=55441

bash scripts/setup.sh
echo "== release build" >&2
install_extension --release >"$base-install.log" 2>&1 || { cat "$base-install.log"; exit 1; }
cluster_start "$base" "$port" "shared_buffers = '256MB'" "autovacuum = off"
as_pg "$PGBIN/pgbench" -h "$base" -p "$port" -U postgres -i -s 10 -q postgres >/dev/null 2>&1
as_pg "$PGBIN/psql" -X -q -h "$base" -p "$port" -U postgres -d postgres -c "VACUUM (FREEZE, ANALYZE)"
cluster_stop "$base"

# The statements pgbench would send, with its random choices made once (fixed seed).
python3 - "$base" "$n" <<'PY'
import random, sys
base, n = sys.argv[1], int(sys.argv[2])
random.seed(1)
for count in (n, 2 * n):
    with open(f"{base}/select-{count}.sql", "w") as f:
        for _ in range(count):
            f.write(f"SELECT abalance FROM pgbench_accounts WHERE aid = {random.randint(1, 1000000)};\n")
    with open(f"{base}/tpcb-{count}.sql", "w") as f:
        for _ in range(count):
            a, t, b = random.randint(1, 1000000), random.randint(1, 100), random.randint(1, 10)
            d = random.randint(-5000, 5000)
            f.write("BEGIN;\n"
                    f"UPDATE pgbench_accounts SET abalance = abalance + {d} WHERE aid = {a};\n"
                    f"SELECT abalance FROM pgbench_accounts WHERE aid = {a};\n"
                    f"UPDATE pgbench_tellers SET tbalance = tbalance + {d} WHERE tid = {t};\n"
                    f"UPDATE pgbench_branches SET bbalance = bbalance + {d} WHERE bid = {b};\n"
                    "INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) "
                    f"VALUES ({t}, {b}, {a}, {d}, CURRENT_TIMESTAMP);\n"
                    "END;\n")
PY
chown -R postgres "$base"

declare -A opts=(
  [none]="-c shared_preload_libraries="
  [capture]="-c shared_preload_libraries=tenantguard -c tenantguard.tenant_stats=off"
  [tg]="-c shared_preload_libraries=tenantguard"
  [tg+qid]="-c shared_preload_libraries=tenantguard -c compute_query_id=on"
  [pgss]="-c shared_preload_libraries=pg_stat_statements"
)
results=$base/results.tsv
: >"$results"
for w in select tpcb; do
  for s in none capture tg tg+qid pgss; do
    for count in "$n" $((2 * n)); do
      echo "== $w $s $count" >&2
      # shellcheck disable=SC2086  # opts are several words
      ir=$(callgrind_count "$base/data" "$base/$w-$count.sql" "$base/$w-$s-$count.log" ${opts[$s]})
      printf '%s\t%s\t%s\t%s\n' "$w" "$s" "$count" "$ir" >>"$results"
    done
  done
done

python3 - "$results" "$n" <<'PY'
import sys, collections
res, n = sys.argv[1], int(sys.argv[2])
ir = collections.defaultdict(dict)
for line in open(res):
    w, s, count, i = line.split()
    ir[(w, s)][int(count)] = int(i)
print(f"instructions per transaction, one backend (callgrind; ({2 * n} - {n} transactions) / {n}):")
print(f"{'workload':10} {'setup':8} {'instructions':>12} {'over none':>10} {'none/setup':>10}")
for w in ("select", "tpcb"):
    per = {s: (ir[(w, s)][2 * n] - ir[(w, s)][n]) / n
           for s in ("none", "capture", "tg", "tg+qid", "pgss")}
    name = "-S" if w == "select" else "TPC-B"
    for s, v in per.items():
        print(f"{name:10} {s:8} {v:12.0f} {v - per['none']:10.0f} {per['none'] / v:10.4f}")
    extra = per["tg"] - per["capture"]
    print(f"{name:10} per-tenant usage over capture alone: {extra:.0f} instructions, "
          f"{100 * extra / per['none']:.2f}% of a {'statement' if w == 'select' else 'transaction'} "
          f"with nothing preloaded (target for -S: <= 1%)")
PY
