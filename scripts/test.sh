#!/usr/bin/env bash
# Runs every tenantguard test: formatting and lints, the #[pg_test] unit tests, and the pg_regress
# suite in pg_test/ (real sessions, real roles) against a throwaway cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
# Expected outputs hold error messages; pgrx would add a Rust backtrace to each with this set.
unset RUST_BACKTRACE
. scripts/lib.sh
bash scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --check
echo "== cargo clippy"
cargo clippy --all-targets -- -D warnings

echo "== #[pg_test] tests"
rm -rf /tmp/tenantguard-pgtest
cargo pgrx test pg15 --runas postgres --pgdata /tmp/tenantguard-pgtest 2>&1 | tee /tmp/tenantguard-pgtest.log
unit=$(grep -oE 'test result: ok\. [0-9]+ passed' /tmp/tenantguard-pgtest.log | awk '{s += $4} END {print s + 0}')

echo "== pg_regress suite"
install_extension
# A fixture extension whose script creates a tenant table (auto-protect must skip it).
sharedir=$("$PG_CONFIG" --sharedir)/extension
install -m 644 pg_test/fixtures/tg_fixture.control pg_test/fixtures/tg_fixture--1.0.sql "$sharedir/"
out=/tmp/tenantguard-regress
rm -rf "$out"; mkdir -p "$out/input"; chown -R postgres:postgres "$out"
# The suite: pg_test/ plus the docs' SQL examples (scripts/docs_examples.sh), whose expected
# output is committed in pg_test/expected/docs_*.out.
cp -r pg_test/sql pg_test/expected "$out/input/"
docs=$(bash scripts/docs_examples.sh "$out/input")
chown -R postgres:postgres "$out"
schedule="$(ls pg_test/sql/*.sql | xargs -n1 basename | sed 's/\.sql$//' | sort) $docs"
if as_pg "$PGBIN/../lib/pgxs/src/test/regress/pg_regress" \
    --bindir="$PGBIN" \
    --inputdir="$out/input" \
    --outputdir="$out" \
    --temp-instance="$out/instance" \
    --temp-config=pg_test/regress.conf \
    --port=55432 \
    $schedule; then
  regress=$(echo "$schedule" | wc -w)
  # A crashed backend ends its session (the file would fail), but say it plainly too.
  if grep -E 'terminated by signal|terminated abnormally|PANIC' "$out/log/postmaster.log"; then
    echo "a server process crashed during the pg_regress suite" >&2
    exit 1
  fi
  echo "tenantguard: $((unit + regress)) passed, 0 failed"
else
  status=$?
  [ -f "$out/regression.diffs" ] && head -c 20000 "$out/regression.diffs"
  exit $status
fi
