#!/usr/bin/env bash
# Throwaway Redis on loopback, state (AOF, pid, log) in DIR.
#   scripts/redis.sh start DIR PORT   -> prints redis://127.0.0.1:PORT
#   scripts/redis.sh stop DIR         -> SIGTERM (AOF flushed), waits for the exit
#                                        (30 s; then SIGKILL and exit status 1)
#   scripts/redis.sh kill DIR         -> SIGKILL (a crash); `start` on the same DIR
#                                        afterwards reloads the AOF
# Durable settings: appendonly yes, appendfsync always (a write is on disk
# before the client gets its reply, so a crash loses nothing acknowledged),
# no RDB snapshots. Files in DIR: redis.pid, redis.log, port, appendonlydir/.
# redis-server runs in the foreground under lib.sh's daemon_start (not
# --daemonize), so a server that dies at start is seen at once.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
usage="usage: scripts/redis.sh start DIR PORT | stop DIR | kill DIR"
cmd=${1:?$usage}
dir=${2:?$usage}

redis_pong() { [ "$(redis-cli -h 127.0.0.1 -p "$1" ping 2>/dev/null)" = PONG ]; }

case "$cmd" in
  start)
    port=${3:?$usage}
    need redis-server redis-server
    need redis-cli redis-tools
    dir=$(absolute_dir "$dir")
    check_startable Redis "$dir/redis.pid" "$port" "scripts/redis.sh stop $dir"
    echo "$port" >"$dir/port"
    daemon_start "$dir/redis.pid" "$dir/redis.log" \
      redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --appendonly yes --appendfsync always --save "" \
      --logfile "$dir/redis.log" --protected-mode no
    # Loading a large AOF delays the first PONG.
    wait_ready "Redis on 127.0.0.1:$port" 20 "$dir/redis.pid" "$dir/redis.log" -- redis_pong "$port"
    echo "redis://127.0.0.1:$port"
    ;;
  stop) stop_daemon Redis "$dir/redis.pid" 30 ;;
  kill) stop_daemon Redis "$dir/redis.pid" 30 KILL ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
