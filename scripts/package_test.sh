#!/usr/bin/env bash
# Tests the packages scripts/package.sh built:
# - PostgreSQL 15 (Debian's): any tenantguard files a build installed are removed first, so nothing
#   from the build tree is on the library path; `apt-get install ./postgresql-15-tenantguard_*.deb`;
#   CREATE EXTENSION and a smoke test on a cluster that preloads it; `apt-get remove`, and the
#   files are gone.
# - 14, 16, 17, 18: Debian 12 has no postgresql-<major> package for these (PGDG does), so the
#   package's metadata is checked, its files are unpacked with dpkg-deb into that major's
#   install at the paths the package names, and the same smoke test runs there.
#
# usage: bash scripts/package_test.sh [MAJOR...]   (default: all of them)
set -euo pipefail
cd "$(dirname "$0")/.."
unset RUST_BACKTRACE
. scripts/lib.sh
majors=${*:-$ALL_MAJORS}
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
dir=/tmp/tenantguard-package-test
port=55480

smoke() { # the installed extension works: protect, isolation, audit, a slow query captured
  local psql=("$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir" -p "$port" -U postgres -d postgres)
  as_pg "${psql[@]}" -At <<'SQL'
CREATE EXTENSION tenantguard;
CREATE ROLE pkg_app LOGIN NOSUPERUSER NOBYPASSRLS;
CREATE TABLE orders (id int PRIMARY KEY, tenant_id text NOT NULL, total numeric);
GRANT SELECT, INSERT ON orders TO pkg_app;
INSERT INTO orders VALUES (1, 'acme', 10), (2, 'globex', 20);
SET tenantguard.slow_query_ms = 10;
SET ROLE pkg_app;
SET app.current_tenant_id = 'acme';
INSERT INTO orders VALUES (3, 'acme', 30);
SELECT 'acme sees ' || count(*) || ' orders' FROM orders;
SELECT 'acme sees ' || count(*) || ' audit rows' FROM tenantguard.audit_log;
SELECT pg_sleep(0.02);
SELECT 'captured ' || count(*) || ' slow query' FROM tenantguard.slow_queries WHERE query LIKE 'SELECT pg_sleep%';
RESET ROLE;
SELECT 'coverage: ' || string_agg(table_name || ' ' || status, ', ') FROM tenantguard.coverage();
SELECT 'version ' || extversion FROM pg_extension WHERE extname = 'tenantguard';
SQL
}

for m in $majors; do
  use_pg "$m"
  deb=target/packages/postgresql-$m-tenantguard_${version}_${arch}.deb
  [ -f "$deb" ] || { echo "package_test.sh: $deb is missing: run scripts/package.sh $m first" >&2; exit 2; }
  echo "== $deb"
  # (Read whole first: with pipefail, grep -q quitting early fails dpkg-deb's write.)
  info=$(dpkg-deb --info "$deb")
  grep -q "Package: postgresql-$m-tenantguard" <<<"$info" || { echo "wrong package name" >&2; exit 1; }
  grep -q "Depends: postgresql-$m," <<<"$info" || { echo "wrong dependency: $(grep Depends <<<"$info")" >&2; exit 1; }
  libdir=$("$PG_CONFIG" --pkglibdir)
  extdir=$("$PG_CONFIG" --sharedir)/extension
  if [ "$m" = 15 ]; then
    # Nothing of a build on the library path: only the package provides tenantguard.
    rm -f "$libdir/tenantguard.so" "$extdir"/tenantguard.control "$extdir"/tenantguard--*.sql
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "./$deb" >/tmp/tenantguard-apt.log 2>&1 ||
      { cat /tmp/tenantguard-apt.log; exit 1; }
    dpkg -L "postgresql-$m-tenantguard" | grep -E '\.so$|\.control$' | sed 's/^/   installed /'
  else
    root=$(mktemp -d)
    dpkg-deb -x "$deb" "$root"
    rm -f "$libdir/tenantguard.so" "$extdir"/tenantguard.control "$extdir"/tenantguard--*.sql
    cp "$root/usr/lib/postgresql/$m/lib/tenantguard.so" "$libdir/"
    cp "$root/usr/share/postgresql/$m/extension"/tenantguard* "$extdir/"
    rm -rf "$root"
    echo "   unpacked into $libdir and $extdir"
  fi
  cluster_start "$dir" "$port" "shared_preload_libraries = 'tenantguard'"
  smoke | sed 's/^/   /'
  cluster_stop "$dir"; rm -rf "$dir"
  if [ "$m" = 15 ]; then
    DEBIAN_FRONTEND=noninteractive apt-get remove -y -q "postgresql-$m-tenantguard" >/tmp/tenantguard-apt.log 2>&1 ||
      { cat /tmp/tenantguard-apt.log; exit 1; }
    if [ -e "$libdir/tenantguard.so" ] || ls "$extdir"/tenantguard* >/dev/null 2>&1; then
      echo "apt-get remove left tenantguard's files behind" >&2; exit 1
    fi
    echo "   removed: no tenantguard files left in $libdir or $extdir"
  fi
done
echo "package test: $(echo "$majors" | wc -w) package(s) installed and working"
