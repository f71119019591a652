#!/usr/bin/env bash
# Signed tenant tokens (release build): (1) what one set_tenant_token() costs, per algorithm
# (HS256, EdDSA, RS256 with a 2048-bit key), timed in the server over 2,000 calls each, against
# a pgbench -S transaction on the same server; (2) the per-query policy cost with the tenant from
# a verified token (require_signed_tenant on) against the plain setting, each a server-side loop
# of 20,000 range queries on a protected table of 1M rows in one transaction, rounds alternating.
#
# usage: bash bench/token_bench.sh [rounds (5)]
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
rounds=${1:-5}
dir=/tmp/tenantguard-token-bench
port=55437
keys=$dir-keys
python3 scripts/make_test_tokens.py "$keys" >/dev/null
bench_setup tenantguard-token-bench "$dir" "$port" "shared_buffers = '256MB'" "autovacuum = off" \
  "$(cat "$keys/token_keys.conf")"
psql_su() { as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d postgres "$@"; }
psql_su >/dev/null <<'SQL'
CREATE EXTENSION tenantguard;
SET tenantguard.auto_protect = off;
CREATE ROLE app LOGIN NOSUPERUSER NOBYPASSRLS;
CREATE ROLE app_signed LOGIN NOSUPERUSER NOBYPASSRLS;
ALTER ROLE app_signed SET tenantguard.require_signed_tenant = on;
CREATE TABLE t (id bigint PRIMARY KEY, tenant_id text NOT NULL, v int NOT NULL);
INSERT INTO t SELECT g, CASE WHEN g % 100 = 0 THEN 'acme' ELSE 't' || (g % 100) END, (g / 100) % 1000
  FROM generate_series(1, 1000000) g;
CREATE INDEX ON t (tenant_id, v);
SELECT tenantguard.protect('t', audit => false);
GRANT SELECT ON t TO app, app_signed;
VACUUM (FREEZE, ANALYZE) t;
SQL
psql_su -c "CREATE TABLE tokens (name text PRIMARY KEY, token text)" >/dev/null
while IFS= read -r line; do
  name=$(echo "$line" | sed -n "s/^\\\\set \\([a-z_0-9]*\\) '.*'$/\\1/p")
  tok=$(echo "$line" | sed -n "s/^\\\\set [a-z_0-9]* '\\(.*\\)'$/\\1/p")
  [ -n "$name" ] && psql_su -c "INSERT INTO tokens VALUES ('$name', '$tok')" >/dev/null
done < "$keys/tokens.sql"
psql_su -c "GRANT SELECT ON tokens TO app, app_signed" >/dev/null

echo "== one verification, per algorithm (2,000 calls each, in the server)"
as_pg "$PGBIN/psql" -X -q -At -h "$dir" -p "$port" -U app_signed -d postgres <<'SQL'
CREATE TEMP TABLE r (alg text, us numeric);
DO $$
DECLARE t0 timestamptz; tok text; a text; i int;
BEGIN
  FOREACH a IN ARRAY ARRAY['tok_acme', 'tok_acme_ed', 'tok_acme_rs'] LOOP
    SELECT token INTO tok FROM tokens WHERE name = a;
    PERFORM tenantguard.set_tenant_token(tok);            -- warm: keys parsed once
    t0 := clock_timestamp();
    FOR i IN 1 .. 2000 LOOP
      PERFORM tenantguard.set_tenant_token(tok);
    END LOOP;
    INSERT INTO r VALUES (a, round(extract(epoch FROM clock_timestamp() - t0) * 1e6 / 2000, 1));
  END LOOP;
END $$;
SELECT format('%s: %s us per set_tenant_token()', CASE alg WHEN 'tok_acme' THEN 'HS256'
              WHEN 'tok_acme_ed' THEN 'EdDSA' ELSE 'RS256 (2048-bit)' END, us) FROM r;
SQL
as_pg "$PGBIN/pgbench" -i -q -s 1 -h "$dir" -p "$port" postgres >/dev/null 2>&1
tps=$(as_pg "$PGBIN/pgbench" -n -S -c 1 -T 5 -h "$dir" -p "$port" postgres 2>/dev/null | awk '/^tps/ {print $3; exit}')
echo "a pgbench -S transaction on this server, one client: $(awk -v t="$tps" 'BEGIN {printf "%.1f", 1e6 / t}') us"

echo "== per-query policy cost: tenant from a verified token / from the setting"
loop() { # role how
  as_pg "$PGBIN/psql" -X -q -At -h "$dir" -p "$port" -U "$1" -d postgres <<SQL
BEGIN;
$2;
DO \$\$
DECLARE t0 timestamptz; i int;
BEGIN
  t0 := clock_timestamp();
  FOR i IN 1 .. 20000 LOOP
    PERFORM count(*) FROM t WHERE v BETWEEN (i % 990) AND (i % 990) + 10;
  END LOOP;
  RAISE NOTICE 'us %', round(extract(epoch FROM clock_timestamp() - t0) * 1e6 / 20000, 3);
END \$\$;
COMMIT;
SQL
}
median() { sort -n | awk '{a[NR] = $1} END {print a[int((NR + 1) / 2)]}'; }
ratios=()
for r in $(seq "$rounds"); do
  s=$(loop app_signed "SELECT tenantguard.set_tenant_token(token) FROM tokens WHERE name = 'tok_acme'" 2>&1 | sed -n 's/.*us \([0-9.]*\).*/\1/p')
  p=$(loop app "SET LOCAL app.current_tenant_id = 'acme'" 2>&1 | sed -n 's/.*us \([0-9.]*\).*/\1/p')
  ratio=$(awk -v s="$s" -v p="$p" 'BEGIN {printf "%.4f", s / p}')
  ratios+=("$ratio")
  echo "round $r: signed $s us, setting $p us per query, signed/setting $ratio"
done
echo "median signed/setting per-query time: $(printf '%s\n' "${ratios[@]}" | median)"

# (3) The same comparison in CPU instructions, which the machine's noise does not move: one
# backend in single-user mode runs 2,000 of the queries (and, for the signed case, the one
# verification), under callgrind, as the application role.
echo "== per-query policy cost in instructions (callgrind, 2,000 queries)"
cluster_stop "$dir"
hs=$(grep "^\\\\set tok_acme '" "$keys/tokens.sql" | sed "s/^\\\\set tok_acme '\\(.*\\)'$/\\1/")
for how in signed setting; do
  for n in 0 2000; do
    {
      # As the superuser the single-user backend is, before it becomes the application role.
      [ $how = signed ] && echo "SET tenantguard.require_signed_tenant = on;"
      echo "SET ROLE $( [ $how = signed ] && echo app_signed || echo app );"
      echo "BEGIN;"
      if [ $how = signed ]; then echo "SELECT tenantguard.set_tenant_token('$hs');"
      else echo "SET LOCAL app.current_tenant_id = 'acme';"; fi
      echo "DO \$\$ DECLARE i int; BEGIN FOR i IN 1 .. $n LOOP PERFORM count(*) FROM t WHERE v BETWEEN (i % 990) AND (i % 990) + 10; END LOOP; END \$\$;"
      echo "SELECT count(*) AS rows_seen FROM t;"
      echo "COMMIT;"
    } > "$dir-$how-$n.sql"
    chown postgres "$dir-$how-$n.sql"
    eval "ir_${how}_$n=\$(callgrind_count \"\$dir/data\" \"\$dir-\$how-\$n.sql\" \"\$dir-\$how-\$n.log\")"
  done
done
# Both must have seen the tenant's rows (10,000 of 1M), or the comparison means nothing.
for f in "$dir"-signed-2000.log "$dir"-setting-2000.log; do
  grep -q 'rows_seen = "10000"' "$f" || { echo "$f: the tenant's rows were not visible" >&2; grep -i "error\|rows_seen" "$f" >&2; exit 1; }
done
per_signed=$(( (ir_signed_2000 - ir_signed_0) / 2000 ))
per_setting=$(( (ir_setting_2000 - ir_setting_0) / 2000 ))
echo "instructions per query: signed $per_signed, setting $per_setting, signed/setting $(awk -v s=$per_signed -v p=$per_setting 'BEGIN {printf "%.4f", s / p}')"
