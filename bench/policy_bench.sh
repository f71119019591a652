#!/usr/bin/env bash
# Policy cost benchmark (issue: "The policies must be fast and fail closed").
#
# 1M rows across 100 tenants in three identical tables, queried by pgbench as a NOSUPERUSER
# NOBYPASSRLS role, side by side in one run (rounds of tg, plain, hand, tg, plain, hand, ...):
#   tg     protected by tenantguard.protect(); the query has no tenant filter
#   plain  no RLS; the query filters with an explicit tenant_id = '<tenant>'
#   hand   the seed's hand-written policy USING (tenant_id = current_setting('app.current_tenant_id')::uuid)
# Queries: a per-tenant range aggregate over (tenant_id, v), and a point lookup by primary key.
# The tenant is set once per connection (PGOPTIONS), so the numbers are the query's cost alone.
#
# Each variant runs once per round, in an order that rotates between rounds; the table reports the
# median TPS over the rounds. Then mixed runs (all three variants in one pgbench run, latency per
# transaction logged) and a server-side loop; see the comments below.
#
# usage: bash bench/policy_bench.sh [seconds-per-run (8)] [rounds (6)]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
secs=${1:-8}
rounds=${2:-6}
dir=/tmp/tenantguard-bench
port=55434

bench_setup tenantguard-bench "$dir" "$port" "shared_buffers = '512MB'" "autovacuum = off" "max_wal_size = '4GB'"
psql_su() { as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d postgres "$@"; }

echo "== loading 3 x 1M rows" >&2
psql_su <<'SQL'
CREATE EXTENSION tenantguard;
-- The comparison tables must stay as written: only t_tg is protected, by the protect() below.
SET tenantguard.auto_protect = off;
CREATE ROLE app LOGIN NOSUPERUSER NOBYPASSRLS;
CREATE TABLE t_plain (id bigint PRIMARY KEY, tenant_id uuid NOT NULL, v int NOT NULL, payload text NOT NULL);
INSERT INTO t_plain
SELECT g, ('00000000-0000-0000-0000-' || lpad((g % 100)::text, 12, '0'))::uuid, (g / 100) % 1000, md5(g::text)
  FROM generate_series(1, 1000000) g;
CREATE INDEX t_plain_tenant_v ON t_plain (tenant_id, v);
CREATE TABLE t_tg (LIKE t_plain INCLUDING ALL);
INSERT INTO t_tg SELECT * FROM t_plain;
CREATE TABLE t_hand (LIKE t_plain INCLUDING ALL);
INSERT INTO t_hand SELECT * FROM t_plain;
SELECT tenantguard.protect('t_tg');
ALTER TABLE t_hand ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation_policy ON t_hand
  USING (tenant_id = current_setting('app.current_tenant_id')::uuid);
GRANT SELECT ON t_plain, t_tg, t_hand TO app;
VACUUM (FREEZE, ANALYZE) t_plain;
VACUUM (FREEZE, ANALYZE) t_tg;
VACUUM (FREEZE, ANALYZE) t_hand;
SELECT relname, relrowsecurity, (SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid) AS policies
  FROM pg_class c WHERE relname IN ('t_tg', 't_plain', 't_hand') ORDER BY 1;
SQL

tenant_num=42
tenant=$(printf '00000000-0000-0000-0000-%012d' "$tenant_num")
sdir=$dir/scripts
mkdir -p "$sdir"
for t in tg hand; do
  cat > "$sdir/range_$t.sql" <<SQL
\set lo random(0, 989)
SELECT count(*), sum(v) FROM t_$t WHERE v BETWEEN :lo AND :lo + 10;
SQL
  cat > "$sdir/point_$t.sql" <<SQL
\set k random(0, 9999)
SELECT * FROM t_$t WHERE id = :k * 100 + $tenant_num;
SQL
done
cat > "$sdir/range_plain.sql" <<SQL
\set lo random(0, 989)
SELECT count(*), sum(v) FROM t_plain WHERE tenant_id = '$tenant' AND v BETWEEN :lo AND :lo + 10;
SQL
cat > "$sdir/point_plain.sql" <<SQL
\set k random(0, 9999)
SELECT * FROM t_plain WHERE tenant_id = '$tenant' AND id = :k * 100 + $tenant_num;
SQL
chown -R postgres:postgres "$sdir"

echo "== plans (as app, tenant $tenant)" >&2
as_pg env PGOPTIONS="-c app.current_tenant_id=$tenant" psql -X -h "$dir" -p "$port" -U app -d postgres <<SQL
EXPLAIN (COSTS OFF) SELECT count(*), sum(v) FROM t_tg WHERE v BETWEEN 100 AND 110;
EXPLAIN (COSTS OFF) SELECT count(*), sum(v) FROM t_hand WHERE v BETWEEN 100 AND 110;
EXPLAIN (COSTS OFF) SELECT count(*), sum(v) FROM t_plain WHERE tenant_id = '$tenant' AND v BETWEEN 100 AND 110;
EXPLAIN (COSTS OFF) SELECT * FROM t_tg WHERE id = 4242;
SELECT (SELECT count(*) FROM t_tg) AS tg_rows_visible, (SELECT count(*) FROM t_hand) AS hand_rows_visible,
       (SELECT count(*) FROM t_plain WHERE tenant_id = '$tenant') AS plain_rows_of_tenant;
SQL

run() { # mode query variant -> tps
  as_pg env PGOPTIONS="-c app.current_tenant_id=$tenant" "$PGBIN/pgbench" -n -c 2 -j 2 -T "$secs" -M "$1" \
    -h "$dir" -p "$port" -U app -f "$sdir/$2_$3.sql" postgres 2>/dev/null |
    awk '/^tps/ {print $3; exit}'
}

results=$dir/results.txt
: > "$results"
for mode in simple prepared; do
  for q in range point; do
    for r in $(seq "$rounds"); do
      # rotate the order each round so no variant always runs first
      case $((r % 3)) in 1) order="tg plain hand";; 2) order="plain hand tg";; 0) order="hand tg plain";; esac
      for v in $order; do
        tps=$(run "$mode" "$q" "$v")
        echo "$mode $q $v $r $tps" | tee -a "$results" >&2
      done
    done
  done
done

# Mixed runs: one pgbench run executes all three variants' scripts, chosen at random for each
# transaction (equal weights), in the same connections at the same moments, so the machine's noise
# falls on all of them alike. Every transaction's latency is logged (-l, microseconds, with the
# script number); the throughput ratio tenantguard / plain is mean latency plain / mean latency
# tenantguard (a client that is always busy runs 1 / latency transactions per second).
mixed=$dir/mixed.txt
: > "$mixed"
mkdir -p "$dir/logs"
chown postgres:postgres "$dir/logs"
for mode in simple prepared; do
  for q in range point; do
    for r in $(seq "$rounds"); do
      rm -f "$dir/logs"/*
      as_pg env PGOPTIONS="-c app.current_tenant_id=$tenant" "$PGBIN/pgbench" -n -c 2 -j 2 -T "$secs" -M "$mode" \
        -h "$dir" -p "$port" -U app -l --log-prefix="$dir/logs/mx" \
        -f "$sdir/${q}_tg.sql@1" -f "$sdir/${q}_plain.sql@1" -f "$sdir/${q}_hand.sql@1" postgres >/dev/null 2>&1
      # script numbers follow the -f order: 0 tg, 1 plain, 2 hand
      cat "$dir/logs"/mx.* | awk -v m="$mode" -v q="$q" -v r="$r" '
        { n[$4]++; s[$4] += $3 }
        END { printf "%s %s %d %.3f %.3f %.3f %d\n", m, q, r, s[0]/n[0], s[1]/n[1], s[2]/n[2], n[0]+n[1]+n[2] }' |
        tee -a "$mixed" >&2
    done
  done
done

# Server-side cost per query: one backend runs each query 20,000 times in a PL/pgSQL loop (plans
# cached, as with prepared statements), variants interleaved in rotating order, timed inside the
# server. No client round trips, so what remains is what the policy adds to the query itself.
loops=$dir/loops.txt
as_pg env PGOPTIONS="-c app.current_tenant_id=$tenant -c client_min_messages=notice" \
  psql -X -q -h "$dir" -p "$port" -U app -d postgres 2> "$loops" <<SQL
DO \$\$
DECLARE
    n constant int := 20000;
    orders constant text[] := ARRAY['tg plain hand', 'plain hand tg', 'hand tg plain'];
    t0 timestamptz; lo int; k int; var text;
BEGIN
    FOR round IN 1..$rounds LOOP
        FOREACH var IN ARRAY string_to_array(orders[1 + round % 3], ' ') LOOP
            t0 := clock_timestamp();
            FOR i IN 1..n LOOP
                lo := (i * 7919) % 990;
                IF var = 'tg' THEN
                    PERFORM count(*), sum(v) FROM t_tg WHERE v BETWEEN lo AND lo + 10;
                ELSIF var = 'plain' THEN
                    PERFORM count(*), sum(v) FROM t_plain WHERE tenant_id = '$tenant' AND v BETWEEN lo AND lo + 10;
                ELSE
                    PERFORM count(*), sum(v) FROM t_hand WHERE v BETWEEN lo AND lo + 10;
                END IF;
            END LOOP;
            RAISE NOTICE 'loop range % % %', var, round, extract(epoch FROM clock_timestamp() - t0) * 1e6 / n;
            t0 := clock_timestamp();
            FOR i IN 1..n LOOP
                k := (i * 31) % 10000;
                IF var = 'tg' THEN
                    PERFORM * FROM t_tg WHERE id = k * 100 + $tenant_num;
                ELSIF var = 'plain' THEN
                    PERFORM * FROM t_plain WHERE tenant_id = '$tenant' AND id = k * 100 + $tenant_num;
                ELSE
                    PERFORM * FROM t_hand WHERE id = k * 100 + $tenant_num;
                END IF;
            END LOOP;
            RAISE NOTICE 'loop point % % %', var, round, extract(epoch FROM clock_timestamp() - t0) * 1e6 / n;
        END LOOP;
    END LOOP;
END
\$\$;
SQL

echo
echo "Server-side cost per query (microseconds, median of $rounds rounds; ratios are medians of the"
echo "per-round ratios, expressed as throughput: plain cost / tenantguard cost):"
echo
python3 - "$loops" <<'PY'
import statistics, sys
cost = {}
for line in open(sys.argv[1]):
    parts = line.split()
    if len(parts) == 6 and parts[1] == "loop":
        _, _, q, var, rnd, us = parts
        cost[(q, var, int(rnd))] = float(us)
print("| query | tenantguard us | plain + explicit filter us | hand-written policy us | tenantguard vs plain | tenantguard vs hand-written |")
print("|---|---|---|---|---|---|")
for q in ("range", "point"):
    rounds = sorted({r for (qq, _, r) in cost if qq == q})
    med = lambda v: statistics.median(cost[(q, v, r)] for r in rounds)
    vs_plain = statistics.median(cost[(q, "plain", r)] / cost[(q, "tg", r)] for r in rounds)
    vs_hand = statistics.median(cost[(q, "hand", r)] / cost[(q, "tg", r)] for r in rounds)
    print(f"| {q} | {med('tg'):.2f} | {med('plain'):.2f} | {med('hand'):.2f} | {vs_plain:.3f} | {vs_hand:.3f} |")
PY
echo
echo "pgbench, 2 clients (TPS, median of $rounds rounds; ratios are medians of the per-round ratios):"
echo
echo "| protocol | query | tenantguard TPS | plain + explicit filter TPS | hand-written policy TPS | tenantguard / plain | tenantguard / hand-written |"
echo "|---|---|---|---|---|---|---|"
python3 - "$results" <<'PY'
import statistics, sys
tps = {}
for line in open(sys.argv[1]):
    mode, q, var, rnd, t = line.split()
    tps[(mode, q, var, int(rnd))] = float(t)
for mode in ("simple", "prepared"):
    for q in ("range", "point"):
        rounds = sorted({r for (m, qq, _, r) in tps if m == mode and qq == q})
        med = lambda v: statistics.median(tps[(mode, q, v, r)] for r in rounds)
        ratio = lambda v: statistics.median(tps[(mode, q, "tg", r)] / tps[(mode, q, v, r)] for r in rounds)
        print(f"| {mode} | {q} | {med('tg'):.0f} | {med('plain'):.0f} | {med('hand'):.0f} | {ratio('plain'):.3f} | {ratio('hand'):.3f} |")
PY
echo
echo "pgbench mixed runs, 2 clients, all three variants in one run (mean latency per transaction in"
echo "microseconds, median of $rounds runs; ratios are medians of the per-run ratios, as throughput):"
echo
echo "| protocol | query | tenantguard us | plain + explicit filter us | hand-written policy us | tenantguard / plain | tenantguard / hand-written |"
echo "|---|---|---|---|---|---|---|"
python3 - "$mixed" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
for mode in ("simple", "prepared"):
    for q in ("range", "point"):
        rs = [(float(a), float(b), float(c)) for m, qq, _, a, b, c, _ in rows if m == mode and qq == q]
        med = lambda i: statistics.median(x[i] for x in rs)
        vs_plain = statistics.median(x[1] / x[0] for x in rs)
        vs_hand = statistics.median(x[2] / x[0] for x in rs)
        print(f"| {mode} | {q} | {med(0):.1f} | {med(1):.1f} | {med(2):.1f} | {vs_plain:.3f} | {vs_hand:.3f} |")
PY
