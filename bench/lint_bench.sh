#!/usr/bin/env bash
# lint() and coverage() on a database with 10,000 tables, half of them tenant tables (protected
# by auto-protect as they are created), plus a view, a hand-written policy and a SECURITY DEFINER
# function per 100 tables so every check has something to look at. Reports the median of 5 runs
# of each function, with the server's default settings (JIT on).
# Target: under 300 ms each at 10,000 tables, under 3 s at 100,000 (bash bench/lint_bench.sh 100000).
#
# usage: bash bench/lint_bench.sh [tables (10000)]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
tables=${1:-10000}
dir=/tmp/tenantguard-lint-bench
port=55436

bench_setup tenantguard-lint-bench "$dir" "$port" "max_locks_per_transaction = 1024"
psql_su() { as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d postgres "$@"; }

echo "== creating $tables tables" >&2
psql_su -c "CREATE EXTENSION tenantguard"
psql_su -v n="$tables" <<'SQL'
SET client_min_messages = warning;
SELECT format('CREATE TABLE public.t%s (id bigint PRIMARY KEY, %s name text)', i,
              CASE WHEN i % 2 = 0 THEN 'tenant_id uuid NOT NULL,' ELSE '' END)
  FROM generate_series(1, :n) i \gexec
SELECT format('CREATE INDEX ON public.t%s (tenant_id)', i) FROM generate_series(2, :n, 2) i \gexec
SELECT format('CREATE VIEW public.v%s AS SELECT * FROM public.t%s', i, i) FROM generate_series(100, :n, 100) i \gexec
SELECT format('CREATE POLICY hand ON public.t%s USING (name IS NOT NULL)', i) FROM generate_series(100, :n, 100) i \gexec
SELECT format('CREATE FUNCTION public.f%s() RETURNS bigint SECURITY DEFINER LANGUAGE sql AS %L', i,
              format('SELECT count(*) FROM public.t%s', i)) FROM generate_series(100, :n, 100) i \gexec
VACUUM ANALYZE;
SQL

time_of() { # sql -> milliseconds
  as_pg "$PGBIN/psql" -X -q -h "$dir" -p "$port" -U postgres -d postgres \
    -c '\timing on' -c "$1" 2>&1 | awk '/^Time:/ {print $2}'
}
median() { sort -n | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }
psql_su -Atc "SELECT 'tenant tables: ' || count(*) || ', protected: ' || count(*) FILTER (WHERE status = 'protected') FROM tenantguard.coverage()" >&2
psql_su -Atc "SELECT 'lint findings: ' || count(*) FROM tenantguard.lint()" >&2
cov=$(for i in 1 2 3 4 5; do time_of "SELECT count(*) FROM tenantguard.coverage()"; done | median)
lint=$(for i in 1 2 3 4 5; do time_of "SELECT count(*) FROM tenantguard.lint()"; done | median)
echo
echo "| function | tables | median ms (5 runs) |"
echo "|---|---|---|"
echo "| coverage() | $tables | $cov |"
echo "| lint() | $tables | $lint |"
