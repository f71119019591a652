#!/usr/bin/env bash
# Runs every tenantguard test: formatting and lints, then on each PostgreSQL major the #[pg_test]
# unit tests and the pg_regress suite in pg_test/ (real sessions, real roles, the attack suite,
# the docs' SQL examples) against a throwaway cluster. With 15, the PgBouncer test
# (scripts/pgbouncer_test.sh), pgTAP under pg_prove (scripts/pgtap_test.sh), the slow-query ring
# read while written and flushed (scripts/slowlog_readers_test.sh), per-tenant usage with real
# sessions and postgres_exporter (scripts/tenant_stats_test.sh), adoption on a live
# database (scripts/adopt_test.sh: 2,000 tables under pgbench traffic) and the Citus suite
# (scripts/citus_test.sh: a coordinator and two workers). With every major (the default), then the
# lifecycle: the upgrade from the previous release (scripts/upgrade_test.sh), pg_upgrade and a
# dump and restore across majors (scripts/pg_upgrade_test.sh), and the Debian packages of every
# major built and installed (scripts/package.sh, scripts/package_test.sh).
#
# usage: bash scripts/test.sh [MAJOR...]    MAJOR: 14 15 16 17 18 (default: all of them)
set -euo pipefail
cd "$(dirname "$0")/.."
# Expected outputs hold error messages; pgrx would add a Rust backtrace to each with this set.
unset RUST_BACKTRACE
. scripts/lib.sh

majors=${*:-$ALL_MAJORS}
for m in $majors; do use_pg "$m" >/dev/null; done
bash scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy (every major: its version-specific code too)"
for m in $majors; do
  cargo clippy --all-targets --no-default-features --features "pg$m pg_test" -- -D warnings
done

passed=0
summary=()
for m in $majors; do
  use_pg "$m"
  echo "== PostgreSQL $m: #[pg_test] tests"
  rm -rf "/tmp/tenantguard-pgtest-$m"
  library_for "pg$m pg_test" debug
  cargo pgrx test "pg$m" --runas postgres --pgdata "/tmp/tenantguard-pgtest-$m" 2>&1 |
    tee "/tmp/tenantguard-pgtest-$m.log"
  unit=$(grep -oE 'test result: ok\. [0-9]+ passed' "/tmp/tenantguard-pgtest-$m.log" | awk '{s += $4} END {print s + 0}')

  echo "== PostgreSQL $m: pg_regress suite"
  install_extension
  # A fixture extension whose script creates a tenant table (auto-protect must skip it).
  sharedir=$("$PG_CONFIG" --sharedir)/extension
  install -m 644 pg_test/fixtures/tg_fixture.control pg_test/fixtures/tg_fixture--1.0.sql "$sharedir/"
  out=/tmp/tenantguard-regress-$m
  rm -rf "$out"; mkdir -p "$out/input"
  # The suite: the pg_test/ files for this major, plus the docs' SQL examples
  # (scripts/docs_examples.sh), whose expected output is pg_test/expected/docs_*.out.
  cp -r pg_test/sql pg_test/expected "$out/input/"
  docs=$(bash scripts/docs_examples.sh "$out/input")
  chown -R postgres:postgres "$out"
  schedule="$(regress_tests "$m") $docs"
  if ! as_pg "$PGBIN/../lib/pgxs/src/test/regress/pg_regress" \
      --bindir="$PGBIN" \
      --inputdir="$out/input" \
      --outputdir="$out" \
      --temp-instance="$out/instance" \
      --temp-config=pg_test/regress.conf \
      --port=$((55400 + m)) \
      $schedule; then
    [ -f "$out/regression.diffs" ] && head -c 20000 "$out/regression.diffs"
    echo "tenantguard: PostgreSQL $m: the pg_regress suite failed" >&2
    exit 1
  fi
  # A crashed backend ends its session (the file would fail), but say it plainly too.
  if grep -E 'terminated by signal|terminated abnormally|PANIC' "$out/log/postmaster.log"; then
    echo "tenantguard: PostgreSQL $m: a server process crashed during the pg_regress suite" >&2
    exit 1
  fi
  regress=$(echo "$schedule" | wc -w)
  passed=$((passed + unit + regress))
  summary+=("PostgreSQL $m: $unit #[pg_test] + $regress pg_regress")
done

case " $majors " in
  *" 15 "*)
    echo "== PgBouncer in transaction mode: tenantguard.tenant_scope (PostgreSQL 15)"
    use_pg 15
    install_extension >/tmp/tenantguard-pgbouncer-install.log 2>&1 ||
      { tail -30 /tmp/tenantguard-pgbouncer-install.log; exit 1; }
    bash scripts/pgbouncer_test.sh
    passed=$((passed + 1)); summary+=("PgBouncer: tenant_scope through a transaction-mode pooler")
    echo "== pgTAP: test_isolation() and assert_enforced() under pg_prove (PostgreSQL 15)"
    bash scripts/pgtap_test.sh
    passed=$((passed + 1)); summary+=("pgTAP: pg_prove as an application role and as a superuser")
    echo "== the slow-query ring read while it is written and flushed (PostgreSQL 15)"
    bash scripts/slowlog_readers_test.sh
    passed=$((passed + 1)); summary+=("slow-query ring: nothing lost or doubled across flushes under a reader")
    echo "== per-tenant usage with real sessions: counts, visibility, eviction, restart, exporter (PostgreSQL 15)"
    bash scripts/tenant_stats_test.sh
    passed=$((passed + 1)); summary+=("tenant stats: exact counts, visibility, eviction, restart and crash, postgres_exporter")
    echo "== adopting on a live database: 2,000 tables, traffic, a long lock (PostgreSQL 15)"
    bash scripts/adopt_test.sh | tee /tmp/tenantguard-adopt.log
    passed=$((passed + 1)); summary+=("adoption: adopt() on 2,000 tables under pgbench traffic")
    echo "== Citus: a coordinator and two workers (PostgreSQL 15)"
    bash scripts/citus_test.sh | tee /tmp/tenantguard-citus.log
    if grep -q "SKIPPED" /tmp/tenantguard-citus.log; then
      summary+=("Citus suite: SKIPPED (see above)")
    else
      n=$(ls pg_test/citus/sql/*.sql | wc -l)
      passed=$((passed + n)); summary+=("Citus suite: $n pg_regress")
    fi
    ;;
esac

if [ "$majors" = "$ALL_MAJORS" ]; then
  echo "== lifecycle: upgrade from the previous release"
  bash scripts/upgrade_test.sh 15
  passed=$((passed + 1)); summary+=("upgrade from the previous release")
  echo "== lifecycle: pg_upgrade 15 -> 17 and 18, dump on 15 restored on 17"
  bash scripts/pg_upgrade_test.sh 17 18
  passed=$((passed + 3)); summary+=("pg_upgrade to 17 and 18, dump and restore")
  echo "== lifecycle: Debian packages of every major"
  bash scripts/package.sh
  bash scripts/package_test.sh
  passed=$((passed + $(echo "$ALL_MAJORS" | wc -w))); summary+=("packages of $ALL_MAJORS")
fi

printf '%s\n' "${summary[@]}"
echo "tenantguard: $passed passed, 0 failed"
