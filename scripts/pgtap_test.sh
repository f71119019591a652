#!/usr/bin/env bash
# tenantguard's isolation checks used from real pgTAP (Debian's postgresql-15-pgtap) and pg_prove:
# runs pg_test/pgtap/*.sql as tg_app, a NOSUPERUSER NOBYPASSRLS role that owns no table, then
# once more as the superuser, where the first assertion (assert_enforced) must fail.
#
# usage: bash scripts/pgtap_test.sh   (PostgreSQL 15; the extension must be installed)
set -euo pipefail
cd "$(dirname "$0")/.."
unset RUST_BACKTRACE
. scripts/lib.sh
use_pg 15
dir=/tmp/tenantguard-pgtap
port=55483
command -v pg_prove >/dev/null || { echo "pg_prove is not installed (scripts/setup.sh)" >&2; exit 1; }
trap 'cluster_stop "$dir"' EXIT
cluster_start "$dir" $port "shared_preload_libraries = 'tenantguard'"
sql() { as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p $port -U postgres "$@"; }
sql -d postgres -c "CREATE DATABASE tg"
sql -d tg <<'SQL'
SET client_min_messages = warning;
CREATE EXTENSION pgtap;
CREATE EXTENSION tenantguard;
CREATE ROLE tg_owner NOLOGIN NOSUPERUSER NOBYPASSRLS;
CREATE ROLE tg_app LOGIN NOSUPERUSER NOBYPASSRLS IN ROLE tg_owner NOINHERIT;
CREATE SCHEMA shop AUTHORIZATION tg_owner;
GRANT USAGE ON SCHEMA shop TO tg_app;
SET ROLE tg_owner;
CREATE TABLE shop.customers (id bigint PRIMARY KEY, tenant_id uuid NOT NULL, name text NOT NULL);
CREATE TABLE shop.orders (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, tenant_id uuid NOT NULL,
                          customer_id bigint NOT NULL REFERENCES shop.customers,
                          amount numeric NOT NULL CHECK (amount >= 0));
GRANT SELECT, INSERT, UPDATE, DELETE ON shop.customers, shop.orders TO tg_app;
RESET ROLE;
SELECT tenantguard.protect('shop.customers'), tenantguard.protect('shop.orders');
SQL

run_prove() { # user -> pg_prove's exit status
  as_pg pg_prove --verbose --psql-bin "$PGBIN/psql" -h "$dir" -p $port -U "$1" -d tg pg_test/pgtap/*.sql
}
echo "== pg_prove as tg_app (NOSUPERUSER NOBYPASSRLS)"
run_prove tg_app
echo "== pg_prove as postgres (a superuser): assert_enforced() must fail the run"
if out=$(run_prove postgres 2>&1); then
  echo "$out"
  echo "pgtap test: the suite passed as a superuser; assert_enforced() did not stop it" >&2
  exit 1
fi
grep -q "not ok 1 - tg_app does not bypass row level security" <<<"$out" || {
  echo "$out"; echo "pgtap test: the superuser run failed, but not on assert_enforced()" >&2; exit 1; }
echo "pgtap test: passed as tg_app, refused as a superuser"
