#!/usr/bin/env bash
# Throwaway PostgreSQL 15 on loopback, in a directory of its own.
#   scripts/pg.sh start DIR [PORT]   -> prints the admin URL
#   scripts/pg.sh stop DIR
# PostgreSQL refuses to run as root, so when run as root the server runs as
# the `postgres` user (created by the Debian package) and DIR is handed to it.
# pg_ctl runs the server's life (it waits for readiness and for a shutdown,
# and PostgreSQL keeps its own pid file, DIR/data/postmaster.pid); lib.sh
# adds the checks before a start and the errors.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cmd=${1:?usage: scripts/pg.sh start|stop DIR [PORT]}
dir=${2:?usage: scripts/pg.sh start|stop DIR [PORT]}
port=${3:-55432}
bindir=$(printf '%s\n' /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
[ -x "$bindir/initdb" ] || die "PostgreSQL server binaries not found under /usr/lib/postgresql; install them: apt-get install -y postgresql"

as_owner() {
  if [ "$(id -u)" = 0 ]; then su postgres -s /bin/bash -c "$*"; else bash -c "$*"; fi
}

# pg_stop MODE...: pg_ctl stop in each MODE until one succeeds. fast (gentle:
# rolls back open transactions, checkpoints), immediate (hard: SIGQUIT, crash
# recovery at the next start). pg_ctl rather than signals from lib.sh,
# because killing the postmaster alone would leave its backends behind.
pg_stop() {
  local mode
  for mode in "$@"; do
    as_owner "'$bindir/pg_ctl' -D '$dir/data' -m $mode -w -t 60 stop >/dev/null 2>&1" && return 0
  done
  return 0  # not running, or nothing more to do
}

case "$cmd" in
  start)
    dir=$(absolute_dir "$dir")
    check_startable PostgreSQL "$dir/data/postmaster.pid" "$port" "scripts/pg.sh stop $dir"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    if [ ! -f "$dir/data/PG_VERSION" ]; then
      as_owner "'$bindir/initdb' -D '$dir/data' -U postgres -A trust -E UTF8 --no-locale >'$dir/initdb.log' 2>&1" \
        || { echo "error: initdb failed" >&2; show_logs "$dir/initdb.log"; exit 1; }
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
    if ! as_owner "'$bindir/pg_ctl' -D '$dir/data' -l '$dir/server.log' -w -t 60 start >/dev/null"; then
      echo "error: PostgreSQL on 127.0.0.1:$port did not start (pg_ctl waits up to 60 s); stopping what is left" >&2
      show_logs "$dir/server.log"
      pg_stop immediate
      exit 1
    fi
    echo "postgresql://postgres@127.0.0.1:$port/postgres"
    ;;
  stop)
    [ -f "$dir/data/PG_VERSION" ] || exit 0
    pg_stop fast immediate
    ;;
  *) echo "usage: scripts/pg.sh start|stop DIR [PORT]" >&2; exit 2 ;;
esac
