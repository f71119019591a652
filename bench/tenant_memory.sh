#!/usr/bin/env bash
# One session that sets 1,000,000 distinct tenants, one after another, and after each reads a
# protected table (the policy parses the new tenant), writes to an audited one every 100th time,
# and asks tenant_text() for a new setting name every time. Prints the backend's resident memory
# every 100,000 tenants: in all (VmRSS), private to the backend (RssAnon: PostgreSQL's memory
# contexts and the Rust heap), shared (RssShmem: shared buffers it has touched, which grow with
# the tables it reads), and the total of its PostgreSQL memory contexts. The private memory must
# stay flat, however many tenants a pooled connection serves.
#
# usage: bash bench/tenant_memory.sh [tenants (1000000)]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
n=${1:-1000000}
dir=/tmp/tenantguard-memory-bench
port=55437

bench_setup tenantguard-memory-bench "$dir" "$port"
psql_su() { as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d postgres "$@"; }

psql_su <<'SQL'
CREATE EXTENSION tenantguard;
CREATE ROLE app LOGIN NOSUPERUSER NOBYPASSRLS;
CREATE TABLE readings (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, tenant_id uuid NOT NULL, v int);
CREATE INDEX ON readings (tenant_id);
GRANT SELECT, INSERT ON readings TO app;
CREATE TABLE memory_log (tenants int, rss_kb bigint, private_kb bigint, shared_kb bigint, contexts_kb bigint);
GRANT INSERT ON memory_log TO app;
-- The caller's own backend, read with the superuser's rights (SECURITY DEFINER).
CREATE FUNCTION log_memory(tenants int) RETURNS void LANGUAGE sql SECURITY DEFINER AS $$
  INSERT INTO memory_log
  SELECT tenants,
         substring(s FROM 'VmRSS:\s*([0-9]+) kB')::bigint,
         substring(s FROM 'RssAnon:\s*([0-9]+) kB')::bigint,
         substring(s FROM 'RssShmem:\s*([0-9]+) kB')::bigint,
         (SELECT sum(total_bytes) / 1024 FROM pg_backend_memory_contexts)
    FROM pg_read_file('/proc/' || pg_backend_pid() || '/status') AS s $$;
CREATE PROCEDURE many_tenants(n int) LANGUAGE plpgsql AS $$
DECLARE
  i int;
  t text;
BEGIN
  PERFORM log_memory(0);
  FOR i IN 1 .. n LOOP
    t := md5(i::text)::uuid::text;
    PERFORM set_config('app.current_tenant_id', t, false);
    PERFORM count(*) FROM readings;
    PERFORM tenantguard.tenant_text('app.name_' || i);
    IF i % 100 = 0 THEN
      INSERT INTO readings (tenant_id, v) VALUES (t::uuid, i);
    END IF;
    IF i % 100000 = 0 THEN
      PERFORM log_memory(i);
      COMMIT;
    END IF;
  END LOOP;
END $$;
SQL
echo "== $n distinct tenants in one session" >&2
start=$(date +%s)
as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U app -d postgres -c "CALL many_tenants($n)"
echo "== took $(( $(date +%s) - start )) s" >&2
psql_su -c "SELECT tenants, rss_kb, private_kb, shared_kb, contexts_kb,
                   private_kb - first_value(private_kb) OVER (ORDER BY tenants) AS private_growth_kb
              FROM memory_log ORDER BY tenants"
