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
# usage: bash bench/audit_bench.sh [rows (200000)] [rounds (3)]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
rows=${1:-200000}
rounds=${2:-3}
dir=/tmp/tenantguard-audit-bench
port=55437

bench_setup tenantguard-audit-bench "$dir" "$port" "autovacuum = off" "max_wal_size = 4GB" \
  "checkpoint_timeout = 30min"
psql_su() { as_pg psql -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d postgres "$@"; }

psql_su <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION tenantguard;
CREATE EXTENSION moddatetime;
ALTER DATABASE postgres SET tenantguard.auto_protect = off;

-- The seed's audit table and trigger (shared/seeds), indexed like tenantguard.audit_log.
CREATE TABLE audit_logs (
  id bigserial PRIMARY KEY, table_name text, operation text, tenant_id uuid, record_id bigint,
  old_values json, new_values json, user_id text, created_at timestamptz);
CREATE INDEX ON audit_logs (table_name, record_id);
CREATE INDEX ON audit_logs (tenant_id, created_at);
CREATE FUNCTION seed_audit() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'INSERT' THEN
    INSERT INTO audit_logs (table_name, operation, tenant_id, record_id, new_values, user_id, created_at)
    VALUES (TG_TABLE_NAME, 'INSERT', NEW.tenant_id, NEW.id, row_to_json(NEW), current_setting('app.user_id', true), now());
    RETURN NEW;
  ELSIF TG_OP = 'UPDATE' THEN
    INSERT INTO audit_logs (table_name, operation, tenant_id, record_id, old_values, new_values, user_id, created_at)
    VALUES (TG_TABLE_NAME, 'UPDATE', NEW.tenant_id, NEW.id, row_to_json(OLD), row_to_json(NEW), current_setting('app.user_id', true), now());
    RETURN NEW;
  ELSIF TG_OP = 'DELETE' THEN
    INSERT INTO audit_logs (table_name, operation, tenant_id, record_id, old_values, user_id, created_at)
    VALUES (TG_TABLE_NAME, 'DELETE', OLD.tenant_id, OLD.id, row_to_json(OLD), current_setting('app.user_id', true), now());
    RETURN OLD;
  END IF;
  RETURN NULL;
END $$;

-- The common jsonb audit-trigger pattern: to_jsonb rows, changed columns, skip no-op updates.
CREATE TABLE audit_jsonb (
  id bigserial PRIMARY KEY, occurred_at timestamptz, table_oid oid, op text, tenant_id text,
  record_key jsonb, old_values jsonb, new_values jsonb, changed_columns text[], db_user name,
  app_user text);
CREATE INDEX ON audit_jsonb (table_oid, record_key);
CREATE INDEX ON audit_jsonb (tenant_id, occurred_at);
CREATE FUNCTION jsonb_audit() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE o jsonb; n jsonb; changed text[];
BEGIN
  IF TG_OP = 'UPDATE' THEN
    o := to_jsonb(OLD); n := to_jsonb(NEW);
    SELECT array_agg(e.key) INTO changed FROM jsonb_each(n) e WHERE e.value IS DISTINCT FROM o -> e.key;
    IF changed IS NULL THEN RETURN NULL; END IF;
  ELSIF TG_OP = 'INSERT' THEN n := to_jsonb(NEW);
  ELSE o := to_jsonb(OLD);
  END IF;
  INSERT INTO audit_jsonb (occurred_at, table_oid, op, tenant_id, record_key, old_values, new_values,
                           changed_columns, db_user, app_user)
  VALUES (clock_timestamp(), TG_RELID, TG_OP, COALESCE(n, o) ->> 'tenant_id',
          jsonb_build_object('id', COALESCE(n, o) -> 'id'), o, n, changed, current_user,
          current_setting('app.user_id', true));
  RETURN NULL;
END $$;

CREATE FUNCTION plpgsql_updated_at() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN NEW.updated_at := now(); RETURN NEW; END $$;
SQL

# make_table VARIANT: a fresh table "t_VARIANT" with the variant's trigger.
make_table() {
  local v=$1 t="t_$1"
  psql_su -c "SET client_min_messages = warning; DROP TABLE IF EXISTS $t;
    CREATE TABLE $t (id bigint PRIMARY KEY, tenant_id uuid NOT NULL, name text, price numeric,
                     qty int, updated_at timestamptz NOT NULL DEFAULT now())"
  case $v in
    a_none | u_none) ;;
    a_tg) psql_su -c "SELECT tenantguard.protect('$t', updated_at => false)" >/dev/null ;;
    a_seed) psql_su -c "CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON $t FOR EACH ROW EXECUTE FUNCTION seed_audit()" ;;
    a_jsonb) psql_su -c "CREATE TRIGGER audit AFTER INSERT OR UPDATE OR DELETE ON $t FOR EACH ROW EXECUTE FUNCTION jsonb_audit()" ;;
    u_tg) psql_su -c "SELECT tenantguard.protect('$t', audit => false, updated_at => true)" >/dev/null ;;
    u_moddatetime) psql_su -c "CREATE TRIGGER upd BEFORE UPDATE ON $t FOR EACH ROW EXECUTE FUNCTION moddatetime(updated_at)" ;;
    u_plpgsql) psql_su -c "CREATE TRIGGER upd BEFORE UPDATE ON $t FOR EACH ROW EXECUTE FUNCTION plpgsql_updated_at()" ;;
  esac
}

# timed SQL -> milliseconds (the server's statement time, as psql's \timing reports it)
timed() {
  as_pg psql -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d postgres \
    -c 'SET app.user_id = '"'bench'" -c '\timing on' -c "$1" | awk '/^Time:/ {print $2}'
}

audit_variants="a_none a_tg a_seed a_jsonb"
updated_variants="u_none u_tg u_moddatetime u_plpgsql"
results=/tmp/tenantguard-audit-bench.tsv
: >"$results"
for r in $(seq 1 "$rounds"); do
  echo "== round $r of $rounds" >&2
  for v in $audit_variants $updated_variants; do
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
    psql_su -c "SET client_min_messages = warning; DROP TABLE t_$v; TRUNCATE audit_logs, audit_jsonb, tenantguard.audit_log; CHECKPOINT"
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
