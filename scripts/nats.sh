#!/usr/bin/env bash
# Throwaway nats-server with JetStream on loopback, in a directory of its own.
#   scripts/nats.sh start DIR PORT   -> prints nats://127.0.0.1:PORT
#   scripts/nats.sh stop DIR         (SIGTERM, waits for a clean shutdown)
#   scripts/nats.sh kill DIR         (SIGKILL: a crash; `start` again on the
#                                     same DIR recovers the JetStream data)
# JetStream file storage lives in DIR/jetstream, the log in DIR/server.log,
# the pid in DIR/nats.pid, the monitoring port (PORT+1, /healthz) in DIR/monitor_port.
set -euo pipefail
usage="usage: scripts/nats.sh start DIR PORT | stop DIR | kill DIR"
cmd=${1:?$usage}
dir=${2:?$usage}

server_pid() {
  [ -f "$dir/nats.pid" ] || return 1
  local pid
  pid=$(cat "$dir/nats.pid")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

case "$cmd" in
  start)
    port=${3:?$usage}
    command -v nats-server >/dev/null || { echo "error: nats-server not found; install it: apt-get install -y nats-server" >&2; exit 1; }
    mkdir -p "$dir/jetstream"
    dir=$(cd "$dir" && pwd)
    if pid=$(server_pid); then
      echo "error: nats-server already runs from $dir (pid $pid); stop it first: scripts/nats.sh stop $dir" >&2
      exit 1
    fi
    if port_open "$port"; then
      echo "error: port $port is already in use; pick another one" >&2
      exit 1
    fi
    monitor=$((port + 1))
    echo "$monitor" >"$dir/monitor_port"
    nohup nats-server -js -a 127.0.0.1 -p "$port" -m "$monitor" -sd "$dir/jetstream" \
      -n "txbox-test-$port" >>"$dir/server.log" 2>&1 </dev/null &
    echo $! >"$dir/nats.pid"
    for _ in $(seq 1 200); do
      if ! server_pid >/dev/null; then
        echo "error: nats-server exited at start, see $dir/server.log:" >&2
        tail -n 20 "$dir/server.log" >&2 || true
        exit 1
      fi
      if port_open "$port" && { ! command -v curl >/dev/null || curl -fs "http://127.0.0.1:$monitor/healthz?js-enabled-only=true" >/dev/null; }; then
        echo "nats://127.0.0.1:$port"
        exit 0
      fi
      sleep 0.05
    done
    echo "error: nats-server did not accept connections on port $port within 10 s, see $dir/server.log" >&2
    exit 1
    ;;
  stop|kill)
    pid=$(server_pid) || { rm -f "$dir/nats.pid"; exit 0; }
    if [ "$cmd" = kill ]; then kill -KILL "$pid" 2>/dev/null || true; else kill -TERM "$pid" 2>/dev/null || true; fi
    for _ in $(seq 1 200); do
      kill -0 "$pid" 2>/dev/null || { rm -f "$dir/nats.pid"; exit 0; }
      sleep 0.05
    done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$dir/nats.pid"
    ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
