#!/usr/bin/env bash
# Installs what building and testing tenantguard needs on a Debian 12 machine, skipping whatever is
# already there: PostgreSQL 15 and its server headers, clang, sudo, cargo-pgrx 0.18.0, and the pgrx
# configuration pointing at the system PostgreSQL (pgrx never downloads a server).
# Run as root (CI is root). Safe to run again: the second run only checks.
set -euo pipefail

PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
PGRX_VERSION=0.18.0
say() { printf '== %s\n' "$*"; }

# postgresql-15 carries pgbench and the contrib modules (dblink, moddatetime, pg_stat_statements).
need_pkgs=()
for p in postgresql-15 postgresql-server-dev-15 libclang-dev clang sudo; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || need_pkgs+=("$p")
done
if [ ${#need_pkgs[@]} -gt 0 ]; then
  say "installing ${need_pkgs[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need_pkgs[@]}"
fi

if ! command -v cargo >/dev/null; then
  echo "cargo is not on PATH: install Rust (rustup) first" >&2
  exit 1
fi

if ! cargo pgrx --version 2>/dev/null | grep -q "$PGRX_VERSION"; then
  say "installing cargo-pgrx $PGRX_VERSION (takes several minutes)"
  cargo install cargo-pgrx --version "$PGRX_VERSION" --locked
fi

if ! grep -qs "pg15 = \"$PG_CONFIG\"" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
  say "pointing pgrx at $PG_CONFIG"
  cargo pgrx init --pg15 "$PG_CONFIG"
fi
