#!/usr/bin/env bash
# tenantguard in two minutes: installs what is missing, builds and installs the extension, starts a
# throwaway PostgreSQL cluster, protects an existing table, lets the event trigger protect a new
# one, shows two tenants sharing a protected table, the audit trail each tenant sees, and a slow
# query recorded with its tenant.
# The cluster is stopped and removed at the end; pass --keep to leave it running for a look around.
#
# usage: bash scripts/demo.sh [--pg MAJOR] [--keep]    MAJOR: 14 to 18 (default 15, Debian's own)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
keep=
while [ $# -gt 0 ]; do
  case $1 in
    --keep) keep=--keep ;;
    --pg) shift; use_pg "${1:-}" || exit 2 ;;
    *) echo "usage: bash scripts/demo.sh [--pg MAJOR] [--keep]" >&2; exit 2 ;;
  esac
  shift
done
dir=/tmp/tenantguard-demo
port=55433

bash scripts/setup.sh
echo "== building and installing tenantguard for PostgreSQL $PG_MAJOR"
install_extension >/tmp/tenantguard-demo-install.log 2>&1 || { cat /tmp/tenantguard-demo-install.log; exit 1; }
echo "== starting a throwaway cluster in $dir (port $port)"
cluster_start "$dir" "$port" "shared_preload_libraries = 'tenantguard'"
if [ "$keep" != --keep ]; then trap 'cluster_stop "$dir"; rm -rf "$dir"; echo "== cluster stopped and removed"' EXIT; fi

psql_as() { local role=$1; shift; as_pg "$PGBIN/psql" -X -q -h "$dir" -p "$port" -U "$role" -d postgres "$@"; }

psql_as postgres -v ON_ERROR_STOP=1 <<'SQL'
\echo '== as the DBA: a table from before tenantguard, shared by two tenants'
CREATE ROLE app LOGIN NOSUPERUSER NOBYPASSRLS;
CREATE TABLE products (
  id        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id uuid NOT NULL,
  name      text NOT NULL
);
CREATE INDEX ON products (tenant_id);
INSERT INTO products (tenant_id, name) VALUES
  ('a0000000-0000-0000-0000-00000000000a', 'Acme anvil'),
  ('a0000000-0000-0000-0000-00000000000a', 'Acme rocket'),
  ('b0000000-0000-0000-0000-00000000000b', 'Globex widget');
GRANT SELECT, INSERT, UPDATE, DELETE ON products TO app;
CREATE EXTENSION tenantguard;

\echo
\echo '== coverage: the existing table is not protected'
SELECT table_name, status, missing FROM tenantguard.coverage();

\echo '== one line in a migration'
SELECT tenantguard.protect('products');

\echo '== a new table with a tenant column is protected as it is created (event trigger)'
CREATE TABLE orders (id bigint PRIMARY KEY, tenant_id uuid NOT NULL, total numeric);
GRANT SELECT, INSERT, UPDATE, DELETE ON orders TO app;
SELECT table_name, rls_enabled, rls_forced, tenant_index, status FROM tenantguard.coverage();
SELECT tenantguard.assert_coverage();

\echo '== switching protection off by accident is refused'
\set ON_ERROR_STOP 0
ALTER TABLE products DISABLE ROW LEVEL SECURITY;
SQL

psql_as app <<'SQL'
\echo '== as the application role, tenant Acme'
SELECT tenantguard.set_tenant('a0000000-0000-0000-0000-00000000000a', is_local => false);
SELECT id, name FROM products ORDER BY id;
\echo '== as tenant Globex'
SET app.current_tenant_id = 'b0000000-0000-0000-0000-00000000000b';
SELECT id, name FROM products ORDER BY id;
\echo '== Globex tries to write a row into Acme (refused):'
INSERT INTO products (tenant_id, name) VALUES ('a0000000-0000-0000-0000-00000000000a', 'planted');
\echo '== Globex tries to delete Acme''s rows (0 rows affected):'
WITH d AS (DELETE FROM products WHERE tenant_id = 'a0000000-0000-0000-0000-00000000000a' RETURNING 1)
SELECT count(*) AS rows_deleted FROM d;
\echo '== no tenant set: nothing visible'
RESET app.current_tenant_id;
SELECT count(*) AS visible_rows FROM products;
\echo '== Acme renames a product; the audit trail shows Acme its own changes only'
SET app.current_tenant_id = 'a0000000-0000-0000-0000-00000000000a';
SET app.user_id = 'alice@acme';
UPDATE products SET name = 'Acme anvil (heavy)' WHERE name = 'Acme anvil';
SELECT op, record_key, changed_columns, old_values ->> 'name' AS old_name,
       new_values ->> 'name' AS new_name, app_user
  FROM tenantguard.audit_log ORDER BY id;
\echo '== a slow query (over tenantguard.slow_query_ms = 100) is recorded with its tenant'
SELECT pg_sleep(0.15) AS slow;
SELECT tenant_id, app_user, round(duration_ms) AS ms, status, query FROM tenantguard.slow_queries;
\echo '== per-tenant usage: every statement counted for its tenant; Acme sees its own row'
SELECT tenant_id, db_user, calls, rows, errors FROM tenantguard.tenant_stats();
SQL

psql_as postgres <<'SQL'
\echo '== as the DBA: every row is still there'
SELECT id, tenant_id, name FROM products ORDER BY id;
SQL
if [ "$keep" = --keep ]; then
  echo "== cluster left running: psql -h $dir -p $port -U postgres postgres"
  echo "   stop it with: runuser -u postgres -- $PGBIN/pg_ctl -D $dir/data stop"
fi
