#!/usr/bin/env bash
# Builds a Debian package per PostgreSQL major, postgresql-<major>-tenantguard_<version>_amd64.deb,
# into target/packages/: the release build from `cargo pgrx package`, laid out as Debian's and
# PGDG's postgresql-<major> packages lay out extensions (/usr/lib/postgresql/<major>/lib,
# /usr/share/postgresql/<major>/extension). It installs with `apt-get install ./file.deb` on a
# machine with that PostgreSQL and no Rust or cargo-pgrx.
#
# usage: bash scripts/package.sh [MAJOR...]    MAJOR: 14 15 16 17 18 (default: all of them)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
majors=${*:-$ALL_MAJORS}
for m in $majors; do
  case " $ALL_MAJORS " in *" $m "*) ;; *)
    echo "package.sh: unsupported PostgreSQL major '$m' (supported: $ALL_MAJORS)" >&2; exit 2 ;;
  esac
done
bash scripts/setup.sh >/dev/null
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
out=target/packages
mkdir -p "$out"

for m in $majors; do
  use_pg "$m"
  name=postgresql-$m-tenantguard
  deb=$out/${name}_${version}_${arch}.deb
  echo "== $deb"
  log=/tmp/tenantguard-package-$m.log
  library_for "pg$m" release
  cargo pgrx package --pg-config "$PG_CONFIG" >"$log" 2>&1 || { tail -30 "$log"; exit 1; }
  built=target/release/tenantguard-pg$m
  libdir=$("$PG_CONFIG" --pkglibdir)
  sharedir=$("$PG_CONFIG" --sharedir)
  stage=$(mktemp -d)
  install -d "$stage/DEBIAN" "$stage/usr/lib/postgresql/$m/lib" \
    "$stage/usr/share/postgresql/$m/extension" "$stage/usr/share/doc/$name"
  install -m 644 "$built$libdir/tenantguard.so" "$stage/usr/lib/postgresql/$m/lib/"
  install -m 644 "$built$sharedir"/extension/tenantguard* "$stage/usr/share/postgresql/$m/extension/"
  install -m 644 README.md CHANGELOG.md "$stage/usr/share/doc/$name/"
  size=$(du -sk "$stage/usr" | cut -f1)
  cat >"$stage/DEBIAN/control" <<EOF
Package: $name
Version: $version
Architecture: $arch
Maintainer: tenantguard maintainers <tenantguard@users.noreply.github.com>
Installed-Size: $size
Depends: postgresql-$m, libc6 (>= 2.34), libgcc-s1
Section: database
Priority: optional
Homepage: https://github.com/tenantguard/tenantguard
Description: multi-tenant row-level security for PostgreSQL $m
 tenantguard protects a table with one call (row level security, tenant
 policies, audit and updated_at triggers), reports what is protected, guards
 against switching protection off, audits changes per tenant and records slow
 queries with their tenant. After installing: CREATE EXTENSION tenantguard;
 slow-query capture also needs shared_preload_libraries = 'tenantguard'.
EOF
  dpkg-deb --build --root-owner-group "$stage" "$deb" >/dev/null
  rm -rf "$stage"
  dpkg-deb --info "$deb" | sed -n 's/^ \(Package\|Version\|Depends\):/   \1:/p'
done
ls -l "$out"/*.deb
