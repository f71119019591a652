#!/usr/bin/env bash
# Per-row cost of audit and updated_at triggers, side by side in one run.
#
# Table: 6 columns (id bigint PK, tenant_id uuid, name text, price numeric, qty int,
# updated_at timestamptz). Each variant gets a fresh table; a 200k-row INSERT and an UPDATE of all
# rows are timed. Variants run interleaved (A B C D ... A B C D ...) for several rounds, and each
# round's per-row overhead over "none" is computed; the script prints the median over rounds.
#
#   audit:      none | tenantguard | seed plpgsql (row_to_json into an audit table)
#               | plpgsql jsonb + changed columns (the common audit-trigger pattern)
#   updated_at: none | tenantguard | contrib moddatetime | plpgsql NEW.updated_at := now()
#
# Runs as the superuser, so row level security is bypassed for every variant alike and only the
# triggers differ. Targets: tenantguard's audit overhead <= 1/4 of the seed trigger's; its
# updated_at overhead <= moddatetime's.
#
# The same comparison counted in instructions, free of this machine's timing noise:
# bench/audit_instructions.sh.
#
# usage: bash bench/audit_bench.sh [rows (200000)] [rounds (3)]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. bench/audit_common.sh
rows=${1:-200000}
rounds=${2:-3}
dir=/tmp/tenantguard-audit-bench
port=55437

bench_setup tenantguard-audit-bench "$dir" "$port" "autovacuum = off" "max_wal_size = 4GB" \
  "checkpoint_timeout = 30min"
psql_su() { as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d postgres "$@"; }

psql_su -f bench/audit_setup.sql

# timed SQL -> milliseconds (the server's statement time, as psql's \timing reports it)
timed() {
  as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d postgres \
    -c 'SET app.user_id = '"'bench'" -c '\timing on' -c "$1" | awk '/^Time:/ {print $2}'
}

audit_variants="a_none a_tg a_seed a_jsonb"
updated_variants="u_none u_tg u_moddatetime u_plpgsql"
results=/tmp/tenantguard-audit-bench.tsv
: >"$results"
for r in $(seq 1 "$rounds"); do
  echo "== round $r of $rounds" >&2
  variants="$audit_variants $updated_variants"
  # Even rounds run the variants in reverse, so no variant always follows the same neighbour.
  if ((r % 2 == 0)); then variants=$(echo "$variants" | tr ' ' '\n' | tac | tr '\n' ' '); fi
  for v in $variants; do
    make_table "$v"
    ins=$(timed "INSERT INTO t_$v (id, tenant_id, name, price, qty)
                 SELECT i, ('00000000-0000-4000-8000-' || lpad((i % 100)::text, 12, '0'))::uuid,
                        'item ' || i, i * 1.25, i % 1000
                   FROM generate_series(1, $rows) i")
    psql_su -c "CHECKPOINT"
    upd=$(timed "UPDATE t_$v SET qty = qty + 1, price = price + 1")
    if [[ $v == u_* ]]; then # small overheads: three more updates each round, summed
      for _ in 1 2 3; do
        psql_su -c "VACUUM t_$v"
        upd=$(awk -v a="$upd" -v b="$(timed "UPDATE t_$v SET qty = qty + 1, price = price + 1")" 'BEGIN {print a + b}')
      done
    fi
    printf '%s\t%s\t%s\t%s\n' "$r" "$v" "$ins" "$upd" >>"$results"
    psql_su -c "SET client_min_messages = warning; DROP TABLE t_$v; TRUNCATE audit_logs, audit_jsonb, tenantguard._audit_log; CHECKPOINT"
  done
done

echo
echo "Per-row overhead over no trigger, microseconds (median of $rounds rounds, $rows rows):"
python3 - "$results" "$rows" <<'PY'
import sys, statistics, collections
path, rows = sys.argv[1], int(sys.argv[2])
t = collections.defaultdict(dict)
for line in open(path):
    r, v, ins, upd = line.split()
    t[int(r)][v] = (float(ins), float(upd))
def over(v, base, k):
    return statistics.median((t[r][v][k] - t[r][base][k]) * 1000.0 / rows for r in t)
def raw(v, k):
    return statistics.median(t[r][v][k] for r in t)
print(f"{'variant':34} {'INSERT us/row':>14} {'UPDATE us/row':>14}   (raw ms INSERT / UPDATE)")
names = {"a_tg": "audit: tenantguard", "a_seed": "audit: seed plpgsql (row_to_json)",
         "a_jsonb": "audit: plpgsql jsonb + changed cols", "u_tg": "updated_at: tenantguard",
         "u_moddatetime": "updated_at: moddatetime", "u_plpgsql": "updated_at: plpgsql now()"}
print(f"{'audit: none':34} {0:14.2f} {0:14.2f}   ({raw('a_none',0):.0f} / {raw('a_none',1):.0f})")
for v in ["a_tg", "a_seed", "a_jsonb"]:
    print(f"{names[v]:34} {over(v,'a_none',0):14.2f} {over(v,'a_none',1):14.2f}   ({raw(v,0):.0f} / {raw(v,1):.0f})")
print(f"{'updated_at: none':34} {'':>14} {0:14.2f}   ({raw('u_none',1):.0f}, 4 updates)")
for v in ["u_tg", "u_moddatetime", "u_plpgsql"]:
    print(f"{names[v]:34} {'':>14} {over(v,'u_none',1) / 4:14.2f}   ({raw(v,1):.0f}, 4 updates)")
def ratio(a, b, k):
    return statistics.median((t[r][a][k] - t[r]['a_none'][k]) / (t[r][b][k] - t[r]['a_none'][k]) for r in t)
print()
print(f"tenantguard audit / seed plpgsql overhead: INSERT {ratio('a_tg','a_seed',0):.2f}, UPDATE {ratio('a_tg','a_seed',1):.2f} (target <= 0.25)")
u = statistics.median((t[r]['u_tg'][1] - t[r]['u_none'][1]) / (t[r]['u_moddatetime'][1] - t[r]['u_none'][1]) for r in t)
m = (raw('u_tg', 1) - raw('u_none', 1)) / (raw('u_moddatetime', 1) - raw('u_none', 1))
print(f"tenantguard updated_at / moddatetime overhead: median of per-round ratios {u:.2f}, ratio of median times {m:.2f} (target <= 1.00)")
PY
