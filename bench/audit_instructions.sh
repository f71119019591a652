#!/usr/bin/env bash
# Per-row cost of the audit and updated_at triggers in CPU instructions, counted by valgrind
# (callgrind): the same binary and input give the same count whatever else the machine does, so
# this settles differences that bench/audit_bench.sh's wall-clock timings scatter over.
#
# The tables and triggers are audit_bench.sh's (bench/audit_setup.sql, bench/audit_common.sh). One
# backend in single-user mode runs, on a fresh copy of the same data directory, an INSERT of N
# rows, or that INSERT and an UPDATE of all rows, with N and 2N rows; (2N - N) / N is the cost per
# row without start-up, and the UPDATE's is the difference between the two files. Overheads are
# over the same statement on a table with no trigger; run as the superuser, like audit_bench.sh.
# It also counts the floor: tenantguard's and the seed's audit triggers with every index of their
# audit tables dropped, i.e. what writing the audit row costs before any index is maintained.
#
# usage: bash bench/audit_instructions.sh [rows (2000)]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
. bench/audit_common.sh
n=${1:-2000}
base=/tmp/tenantguard-audit-instr
port=55442
variants="a_none a_tg a_seed a_jsonb u_none u_tg u_moddatetime u_plpgsql"

bash scripts/setup.sh
echo "== release build" >&2
install_extension --release >"$base-install.log" 2>&1 || { cat "$base-install.log"; exit 1; }
cluster_start "$base" "$port" "autovacuum = off"
psql_su() { as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$base" -p "$port" -U postgres -d postgres "$@"; }
psql_su -f bench/audit_setup.sql
for v in $variants; do make_table "$v"; done
cluster_stop "$base"
# The floor: the same cluster with every index of both audit tables dropped (tenantguard.audit_log's
# three, the seed's primary key and two), to show what the audit row costs before any index.
cp -a "$base/data" "$base/data-noidx"
as_pg "$PGBIN/pg_ctl" -D "$base/data-noidx" -l "$base/server-noidx.log" -w start >/dev/null
psql_su -c "DROP INDEX tenantguard.audit_log_record, tenantguard.audit_log_id, tenantguard.audit_log_tenant_time;
  DROP INDEX audit_logs_table_name_record_id_idx, audit_logs_tenant_id_created_at_idx;
  ALTER TABLE audit_logs DROP CONSTRAINT audit_logs_pkey"
as_pg "$PGBIN/pg_ctl" -D "$base/data-noidx" -m fast -w stop >/dev/null

for v in $variants; do
  for count in "$n" $((2 * n)); do
    {
      echo "SET app.user_id = 'bench'"
      echo "INSERT INTO t_$v (id, tenant_id, name, price, qty) SELECT i, ('00000000-0000-4000-8000-' || lpad((i % 100)::text, 12, '0'))::uuid, 'item ' || i, i * 1.25, i % 1000 FROM generate_series(1, $count) i"
    } >"$base/$v-insert-$count.sql"
    cp "$base/$v-insert-$count.sql" "$base/$v-both-$count.sql"
    echo "UPDATE t_$v SET qty = qty + 1, price = price + 1" >>"$base/$v-both-$count.sql"
  done
done
chown -R postgres "$base"

results=$base/results.tsv
: >"$results"
# run_variant VARIANT NAME DATA: both statements files at both sizes, as NAME in the results.
run_variant() {
  local v=$1 name=$2 data=$3 f count ir
  for f in insert both; do
    for count in "$n" $((2 * n)); do
      echo "== $name $f $count" >&2
      ir=$(callgrind_count "$data" "$base/$v-$f-$count.sql" "$base/$name-$f-$count.log")
      printf '%s\t%s\t%s\t%s\n' "$name" "$f" "$count" "$ir" >>"$results"
    done
  done
}
for v in $variants; do run_variant "$v" "$v" "$base/data"; done
for v in a_none a_tg a_seed; do run_variant "$v" "$v-noidx" "$base/data-noidx"; done

python3 - "$results" "$n" <<'PY'
import sys, collections
res, n = sys.argv[1], int(sys.argv[2])
ir = collections.defaultdict(dict)
for line in open(res):
    v, f, count, i = line.split()
    ir[(v, f)][int(count)] = int(i)
def per_row(v, f):
    return (ir[(v, f)][2 * n] - ir[(v, f)][n]) / n
cost = {v: (per_row(v, "insert"), per_row(v, "both") - per_row(v, "insert")) for v, _ in ir}
print(f"instructions per row over no trigger (callgrind, one backend, ({2 * n} - {n} rows) / {n}):")
print(f"{'variant':34} {'INSERT':>10} {'UPDATE':>10}")
names = {"a_tg": "audit: tenantguard", "a_seed": "audit: seed plpgsql (row_to_json)",
         "a_jsonb": "audit: plpgsql jsonb + changed cols", "u_tg": "updated_at: tenantguard",
         "u_moddatetime": "updated_at: moddatetime", "u_plpgsql": "updated_at: plpgsql now()"}
for v in ("a_tg", "a_seed", "a_jsonb"):
    print(f"{names[v]:34} {cost[v][0] - cost['a_none'][0]:10.0f} {cost[v][1] - cost['a_none'][1]:10.0f}")
for v in ("u_tg", "u_moddatetime", "u_plpgsql"):
    print(f"{names[v]:34} {'':>10} {cost[v][1] - cost['u_none'][1]:10.0f}")
over = lambda v, k: cost[v][k] - cost["a_none"][k]
print()
print(f"tenantguard audit / seed plpgsql: INSERT {over('a_tg', 0) / over('a_seed', 0):.3f}, "
      f"UPDATE {over('a_tg', 1) / over('a_seed', 1):.3f} (target <= 0.25)")
u = (cost["u_tg"][1] - cost["u_none"][1]) / (cost["u_moddatetime"][1] - cost["u_none"][1])
print(f"tenantguard updated_at / moddatetime: {u:.3f} (target <= 1)")
print()
print("the floor: both audit tables without any index (over no trigger, same data directory):")
for v in ("a_tg", "a_seed"):
    ins = cost[v + "-noidx"][0] - cost["a_none-noidx"][0]
    upd = cost[v + "-noidx"][1] - cost["a_none-noidx"][1]
    print(f"{names[v] + ', no index':44} {ins:10.0f} {upd:10.0f}")
print(f"tenantguard without index / seed with its indexes: "
      f"INSERT {(cost['a_tg-noidx'][0] - cost['a_none-noidx'][0]) / over('a_seed', 0):.3f}, "
      f"UPDATE {(cost['a_tg-noidx'][1] - cost['a_none-noidx'][1]) / over('a_seed', 1):.3f}")
PY
