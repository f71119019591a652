#!/usr/bin/env bash
# COPY into a protected, audited table, side by side in one run (issue: "Write-path cost", 3).
#
# One table shape (id bigint PK, tenant_id uuid, name text, price numeric, qty int, updated_at
# timestamptz), 1,000,000 rows of one tenant from a CSV file, loaded with a server-side COPY by an
# import role. PostgreSQL refuses COPY FROM into a table whose row level security applies to the
# role ("COPY FROM not supported with row-level security", 0A000), so the import role is
# NOSUPERUSER BYPASSRLS, as a bulk import into a protected table has to be (docs/audit.md):
#
#   none         no row level security, no trigger
#   seed         no row level security, the seed's plpgsql audit trigger (row_to_json into an
#                audit table with three btree indexes, bench/audit_setup.sql)
#   tenantguard  tenantguard.protect(): row level security (bypassed by the import role) and
#                tenantguard's audit trigger
#
# Variants run interleaved, in reverse order every other round, each on a fresh table after a
# CHECKPOINT; the script prints the median server time of each and the ratios.
#
# usage: bash bench/copy_bench.sh [rows (1000000)] [rounds (3)]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
rows=${1:-1000000}
rounds=${2:-3}
dir=/tmp/tenantguard-copy-bench
port=55438
tenant=00000000-0000-4000-8000-000000000007

bench_setup tenantguard-copy-bench "$dir" "$port" "autovacuum = off" "max_wal_size = 8GB" \
  "checkpoint_timeout = 30min"
psql_su() { as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d postgres "$@"; }

psql_su -f bench/audit_setup.sql
data=$dir/copy.csv
psql_su -c "CREATE ROLE copy_app LOGIN NOSUPERUSER BYPASSRLS IN ROLE pg_read_server_files;
  GRANT INSERT ON audit_logs TO copy_app; GRANT USAGE ON SEQUENCE audit_logs_id_seq TO copy_app;
  COPY (SELECT i, '$tenant'::uuid, 'item ' || i, i * 1.25, i % 1000, now()
          FROM generate_series(1, $rows) i) TO '$data' (FORMAT csv)"

make_copy_table() {
  local v=$1 t="c_$1"
  psql_su -c "SET client_min_messages = warning; DROP TABLE IF EXISTS $t;
    CREATE TABLE $t (id bigint PRIMARY KEY, tenant_id uuid NOT NULL, name text, price numeric,
                     qty int, updated_at timestamptz NOT NULL DEFAULT now());
    GRANT SELECT, INSERT ON $t TO copy_app"
  case $v in
    none) ;;
    seed) psql_su -c "CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON $t FOR EACH ROW EXECUTE FUNCTION seed_audit()" ;;
    tenantguard) psql_su -c "SELECT tenantguard.protect('$t')" >/dev/null ;;
  esac
}

# COPY as the application role -> milliseconds (the statement's time as psql's \timing reports it)
timed_copy() {
  as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U copy_app -d postgres \
    -c "SET app.current_tenant_id = '$tenant'" -c "SET app.user_id = 'bench'" -c '\timing on' \
    -c "COPY c_$1 FROM '$data' (FORMAT csv)" | awk '/^Time:/ {print $2}'
}

variants="none seed tenantguard"
results=/tmp/tenantguard-copy-bench.tsv
: >"$results"
for r in $(seq 1 "$rounds"); do
  echo "== round $r of $rounds" >&2
  order=$variants
  if ((r % 2 == 0)); then order=$(echo "$variants" | tr ' ' '\n' | tac | tr '\n' ' '); fi
  for v in $order; do
    make_copy_table "$v"
    psql_su -c "CHECKPOINT"
    ms=$(timed_copy "$v")
    n=$(psql_su -Atc "SELECT (SELECT count(*) FROM c_$v) || ' ' ||
                             (SELECT count(*) FROM tenantguard.audit_log) + (SELECT count(*) FROM audit_logs)")
    echo "$v $ms ms, rows and audit rows: $n" >&2
    printf '%s\t%s\t%s\n' "$r" "$v" "$ms" >>"$results"
    psql_su -c "SET client_min_messages = warning; DROP TABLE c_$v; TRUNCATE audit_logs, tenantguard._audit_log"
  done
done

python3 - "$results" "$rows" <<'PY'
import sys, statistics, collections
path, rows = sys.argv[1], int(sys.argv[2])
t = collections.defaultdict(dict)
for line in open(path):
    r, v, ms = line.split()
    t[int(r)][v] = float(ms)
med = lambda v: statistics.median(t[r][v] for r in t)
ratio = lambda a, b: statistics.median(t[r][a] / t[r][b] for r in t)
print(f"\nCOPY of {rows:,} rows, median of {len(t)} rounds (server time):\n")
print("| table | ms | µs/row | / none |")
print("|---|---|---|---|")
names = {"none": "no RLS, no trigger", "seed": "seed audit trigger (no RLS)",
         "tenantguard": "protect(): RLS (bypassed) and tenantguard's audit"}
for v in ["none", "seed", "tenantguard"]:
    print(f"| {names[v]} | {med(v):.0f} | {med(v) * 1000 / rows:.2f} | {ratio(v, 'none'):.2f} |")
over = statistics.median((t[r]["tenantguard"] - t[r]["none"]) / (t[r]["seed"] - t[r]["none"]) for r in t)
print(f"\ntenantguard / seed trigger: {ratio('tenantguard', 'seed'):.2f} in time; "
      f"overhead over none {over:.2f} of the seed trigger's")
PY
