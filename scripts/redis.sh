#!/usr/bin/env bash
# Throwaway Redis on loopback, state (AOF, pid, log) in DIR.
#   scripts/redis.sh start DIR PORT   -> prints redis://127.0.0.1:PORT
#   scripts/redis.sh stop DIR         -> SIGTERM (AOF flushed), waits for the exit
#   scripts/redis.sh kill DIR         -> SIGKILL (a crash); `start` on the same DIR
#                                        afterwards reloads the AOF
# Durable settings: appendonly yes, appendfsync always (a write is on disk
# before the client gets its reply, so a crash loses nothing acknowledged),
# no RDB snapshots. Files in DIR: redis.pid, redis.log, port, appendonlydir/.
set -euo pipefail
usage="usage: scripts/redis.sh start DIR PORT | stop DIR | kill DIR"
cmd=${1:?$usage}
dir=${2:?$usage}

alive() {
  local state
  state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ $state != Z* ]]
}
pid_of() { [ -f "$dir/redis.pid" ] && cat "$dir/redis.pid" || true; }

case "$cmd" in
  start)
    port=${3:?$usage}
    command -v redis-server >/dev/null || { echo "error: redis-server not found: apt-get install -y redis-server" >&2; exit 1; }
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    pid=$(pid_of)
    if [ -n "$pid" ] && alive "$pid"; then
      echo "error: a Redis server (pid $pid) already runs in $dir: stop it first (scripts/redis.sh stop $dir)" >&2
      exit 1
    fi
    rm -f "$dir/redis.pid"
    echo "$port" >"$dir/port"
    redis-server --bind 127.0.0.1 --port "$port" --dir "$dir" --appendonly yes --appendfsync always --save "" \
      --daemonize yes --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" --protected-mode no \
      || { echo "error: redis-server failed to start, see $dir/redis.log" >&2; tail -n 20 "$dir/redis.log" >&2 || true; exit 1; }
    for _ in $(seq 1 200); do
      if [ "$(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null)" = PONG ]; then
        echo "redis://127.0.0.1:$port"
        exit 0
      fi
      sleep 0.1
    done
    echo "error: Redis on 127.0.0.1:$port did not answer PING within 20 s (port taken? AOF being loaded?), see $dir/redis.log" >&2
    tail -n 20 "$dir/redis.log" >&2 || true
    exit 1
    ;;
  stop | kill)
    pid=$(pid_of)
    [ -n "$pid" ] && alive "$pid" || exit 0
    if [ "$cmd" = stop ]; then kill -TERM "$pid"; else kill -KILL "$pid"; fi
    for _ in $(seq 1 300); do
      alive "$pid" || { rm -f "$dir/redis.pid"; exit 0; }
      sleep 0.1
    done
    echo "error: Redis (pid $pid) did not exit within 30 s: kill it with kill -9 $pid" >&2
    exit 1
    ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
