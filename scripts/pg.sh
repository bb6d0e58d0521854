#!/usr/bin/env bash
# Throwaway PostgreSQL 15 on loopback, in a directory of its own.
#   scripts/pg.sh start DIR [PORT]   -> prints the admin URL
#   scripts/pg.sh stop DIR
# PostgreSQL refuses to run as root, so when run as root the server runs as
# the `postgres` user (created by the Debian package) and DIR is handed to it.
set -euo pipefail
cmd=${1:?usage: scripts/pg.sh start|stop DIR [PORT]}
dir=${2:?usage: scripts/pg.sh start|stop DIR [PORT]}
port=${3:-55432}
bindir=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -x "$bindir/initdb" ] || { echo "error: PostgreSQL server binaries not found under /usr/lib/postgresql; install them: apt-get install -y postgresql" >&2; exit 1; }

as_owner() {
  if [ "$(id -u)" = 0 ]; then su postgres -s /bin/bash -c "$*"; else bash -c "$*"; fi
}

case "$cmd" in
  start)
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      as_owner "'$bindir/initdb' -D '$dir/data' -U postgres -A trust -E UTF8 --no-locale >'$dir/initdb.log' 2>&1" \
        || { echo "error: initdb failed, see $dir/initdb.log" >&2; exit 1; }
      cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
max_connections = 300
shared_buffers = 256MB
fsync = on
synchronous_commit = on
autovacuum_vacuum_scale_factor = 0.01
autovacuum_vacuum_cost_limit = 2000
autovacuum_naptime = 5s
CONF
    fi
    as_owner "'$bindir/pg_ctl' -D '$dir/data' -l '$dir/server.log' -w -t 60 start >/dev/null" \
      || { echo "error: PostgreSQL did not start, see $dir/server.log" >&2; tail -n 20 "$dir/server.log" >&2 || true; exit 1; }
    echo "postgresql://postgres@127.0.0.1:$port/postgres"
    ;;
  stop)
    [ -f "$dir/data/PG_VERSION" ] || exit 0
    as_owner "'$bindir/pg_ctl' -D '$dir/data' -m fast -w stop >/dev/null 2>&1" || true
    ;;
  *) echo "usage: scripts/pg.sh start|stop DIR [PORT]" >&2; exit 2 ;;
esac
