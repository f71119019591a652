# Shared helpers for the scripts: a throwaway PostgreSQL cluster run as the postgres user
# (PostgreSQL refuses to run as root).
PGBIN=/usr/lib/postgresql/15/bin
PG_CONFIG=$PGBIN/pg_config

as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

# Build and install the extension into the system PostgreSQL.
install_extension() {
  local profile=${1:-}
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
