#!/usr/bin/env bash
# Adopting tenantguard on a live database, as a user would: 2,000 tables created before the
# extension (most ready, some blocked by NULL tenant values, some without a tenant column),
# pgbench traffic of an application role on 20 of them, and one long transaction that holds a lock
# on one of those. Then CALL tenantguard.adopt(lock_timeout => ...) protects the rest, one table
# per transaction. Checked:
# - the locked table is skipped, with the reason, in tenantguard.adoption_log;
# - every other ready table is protected, every blocked one is logged as blocked, none twice;
# - no pgbench transaction waited longer than lock_timeout plus a margin: the maximum latency of
#   the traffic during the run, against the same traffic without the batch.
# A second CALL after the lock is gone protects the skipped table and nothing else.
#
# usage: bash scripts/adopt_test.sh [tables (2000)]   (PostgreSQL 15; the extension must be installed)
set -euo pipefail
cd "$(dirname "$0")/.."
unset RUST_BACKTRACE
. scripts/lib.sh
use_pg 15
tables=${1:-2000}
lock_timeout_ms=${TG_ADOPT_LOCK_TIMEOUT_MS:-300}
margin_ms=${TG_ADOPT_MARGIN_MS:-300}
dir=/tmp/tenantguard-adopt
port=55484
work=$dir/work

holder_pid=
cleanup() {
  [ -n "$holder_pid" ] && kill "$holder_pid" 2>/dev/null || true
  cluster_stop "$dir"
}
trap cleanup EXIT
cluster_start "$dir" $port "shared_preload_libraries = 'tenantguard'" "max_locks_per_transaction = 256"
mkdir -p "$work"; chown postgres:postgres "$work"
sql() { as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p $port -U postgres -d postgres "$@"; }

echo "== $tables tables before tenantguard, then CREATE EXTENSION"
sql -v n="$tables" <<'SQL'
SET client_min_messages = warning;
CREATE ROLE app LOGIN NOSUPERUSER NOBYPASSRLS;
-- hot_1 .. hot_20: the application's traffic; 1,000 rows each, two tenants.
SELECT format('CREATE TABLE hot_%s (id int PRIMARY KEY, tenant_id uuid NOT NULL, n int NOT NULL DEFAULT 0)', i)
  FROM generate_series(1, 20) i \gexec
SELECT format('INSERT INTO hot_%s SELECT k, CASE WHEN k %% 2 = 0 THEN ''a0000000-0000-0000-0000-00000000000a''::uuid
               ELSE ''b0000000-0000-0000-0000-00000000000b''::uuid END FROM generate_series(1, 1000) k', i)
  FROM generate_series(1, 20) i \gexec
SELECT format('CREATE INDEX ON hot_%s (tenant_id)', i) FROM generate_series(1, 20) i \gexec
SELECT format('GRANT SELECT, UPDATE ON hot_%s TO app', i) FROM generate_series(1, 20) i \gexec
-- The rest: every 7th blocked (a nullable tenant column with a NULL row), every 11th without a
-- tenant column, the others ready.
SELECT format('CREATE TABLE t_%s (id int PRIMARY KEY, %s payload text)', i,
              CASE WHEN i % 11 = 0 THEN '' WHEN i % 7 = 0 THEN 'tenant_id uuid,'
                   ELSE 'tenant_id uuid NOT NULL,' END)
  FROM generate_series(21, :n) i \gexec
SELECT format('INSERT INTO t_%s VALUES (1, NULL, ''x'')', i) FROM generate_series(21, :n) i
 WHERE i % 7 = 0 AND i % 11 <> 0 \gexec
CREATE EXTENSION tenantguard;
VACUUM ANALYZE;
SQL
sql -At -c "SELECT status, count(*) FROM tenantguard.adoption_plan() GROUP BY 1 ORDER BY 1"
ready=$(sql -At -c "SELECT count(*) FROM tenantguard.adoption_plan() WHERE status = 'ready'")
blocked=$(sql -At -c "SELECT count(*) FROM tenantguard.adoption_plan() WHERE status = 'blocked'")

cat >"$work/traffic.sql" <<'SQL'
\set t random(1, 20)
\set k random(1, 1000)
BEGIN;
SET LOCAL app.current_tenant_id = 'a0000000-0000-0000-0000-00000000000a';
SELECT n FROM hot_:t WHERE id = :k;
UPDATE hot_:t SET n = n + 1 WHERE id = :k;
COMMIT;
SQL
chown postgres:postgres "$work/traffic.sql"

# traffic NAME: pgbench as app in 5-second rounds (each round's per-transaction log is complete)
# until $work/NAME.stop exists; then prints the maximum latency in ms and the transaction count.
traffic() {
  local name=$1 round=0
  rm -f "$work/$name".*
  while [ ! -f "$work/$name.stop" ]; do
    round=$((round + 1))
    (cd "$work" && as_pg "$PGBIN/pgbench" -n -M simple -c 4 -j 2 -T 5 -l --log-prefix="$name.$round" \
      -f traffic.sql -h "$dir" -p $port -U app postgres >"$work/$name.$round.out" 2>&1) ||
      { cat "$work/$name.$round.out"; return 1; }
  done
  cat "$work/$name".[0-9]*.[0-9]* 2>/dev/null | awk '{ if ($3 > max) max = $3; n++ } END { printf "%.1f %d\n", max / 1000, n }'
}

hold_lock() { # a long transaction that read hot_20: it holds ACCESS SHARE until killed
  as_pg "$PGBIN/psql" -X -q -h "$dir" -p $port -U postgres -d postgres \
    -c "BEGIN" -c "SELECT count(*) FROM hot_20" -c "SELECT pg_sleep(3600)" >/dev/null 2>&1 &
  holder_pid=$!
  for _ in $(seq 50); do
    [ "$(sql -At -c "SELECT count(*) FROM pg_locks WHERE relation = 'hot_20'::regclass AND granted AND mode = 'AccessShareLock' AND pid <> pg_backend_pid()")" -gt 0 ] && return
    sleep 0.1
  done
  echo "adopt test: the long transaction did not get its lock" >&2; exit 1
}

echo "== baseline: the same traffic and the long transaction, no batch (15 s)"
hold_lock
traffic base >"$work/result.base" &
tpid=$!
sleep 15; touch "$work/base.stop"; wait $tpid
read -r base_max base_n <"$work/result.base"

echo "== CALL tenantguard.adopt(lock_timeout => '${lock_timeout_ms}ms') under the same traffic"
traffic batch >"$work/result.batch" &
tpid=$!
sleep 2
start=$(date +%s.%N)
sql -c "CALL tenantguard.adopt(lock_timeout => '${lock_timeout_ms}ms', max_attempts => 3, backoff => '200ms')" \
  2>"$work/adopt.notices"
end=$(date +%s.%N)
sleep 2; touch "$work/batch.stop"; wait $tpid
read -r batch_max batch_n <"$work/result.batch"
grep -E "^NOTICE:  (1/|[0-9]+/[0-9]+ public.hot_20|blocked: public.t_21 |adopt:)" "$work/adopt.notices" | head -8 || true

fail=0
check() { # description, expected, actual
  if [ "$2" = "$3" ]; then echo "ok: $1 ($3)"; else echo "FAILED: $1: expected $2, got $3" >&2; fail=1; fi
}
check "the locked table was skipped, with its reason" "skipped|true" \
  "$(sql -At -c "SELECT outcome || '|' || (reason LIKE 'lock not available%') FROM tenantguard.adoption_log WHERE relid = 'hot_20'::regclass")"
check "every other ready table protected" "$((ready - 1))" \
  "$(sql -At -c "SELECT count(*) FROM tenantguard.adoption_log WHERE outcome = 'protected'")"
check "coverage agrees" "$((ready - 1))" \
  "$(sql -At -c "SELECT count(*) FROM tenantguard.coverage() WHERE status = 'protected'")"
check "every blocked table logged as blocked, none protected" "$blocked|0" \
  "$(sql -At -c "SELECT count(*) FILTER (WHERE a.outcome = 'blocked') || '|' || count(*) FILTER (WHERE r.relid IS NOT NULL AND a.outcome = 'blocked') FROM tenantguard.adoption_log a LEFT JOIN tenantguard.registry r ON r.relid = a.relid")"
limit=$((lock_timeout_ms + margin_ms))
echo "traffic: max latency ${base_max} ms without the batch ($base_n transactions), ${batch_max} ms during it ($batch_n transactions); adopt took $(awk -v a="$start" -v b="$end" 'BEGIN { printf "%.1f", b - a }') s; limit lock_timeout + margin = $limit ms"
if awk -v m="$batch_max" -v l="$limit" 'BEGIN { exit !(m <= l) }'; then
  echo "ok: no transaction waited longer than lock_timeout + ${margin_ms} ms"
else
  echo "FAILED: a transaction took ${batch_max} ms during the batch (limit $limit ms)" >&2; fail=1
fi

echo "== the lock released: a second CALL protects the skipped table, nothing twice"
sql -At -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(3600)'" >/dev/null
wait "$holder_pid" 2>/dev/null || true; holder_pid=
sql -c "CALL tenantguard.adopt(lock_timeout => '${lock_timeout_ms}ms')" 2>"$work/adopt2.notices"
grep "^NOTICE:  adopt:" "$work/adopt2.notices"
check "second run: protected exactly the skipped table" "1" \
  "$(sql -At -c "SELECT count(*) FROM tenantguard.adoption_log WHERE outcome = 'protected' AND run_started = (SELECT max(run_started) FROM tenantguard.adoption_log)")"
check "no table protected twice" "0" \
  "$(sql -At -c "SELECT count(*) FROM (SELECT relid FROM tenantguard.adoption_log WHERE outcome = 'protected' GROUP BY relid HAVING count(*) > 1) d")"
check "the traffic's table isolates tenants" "500" \
  "$(as_pg "$PGBIN/psql" -X -At -h "$dir" -p $port -U app -d postgres -c "BEGIN" -c "SET LOCAL app.current_tenant_id = 'a0000000-0000-0000-0000-00000000000a'" -c "SELECT count(*) FROM hot_20" -c "COMMIT" | sed -n 3p)"

[ $fail -eq 0 ] || exit 1
echo "adopt test: passed ($tables tables)"
