#!/usr/bin/env bash
# Throwaway nats-server with JetStream on loopback, in a directory of its own.
#   scripts/nats.sh start DIR PORT   -> prints nats://127.0.0.1:PORT
#   scripts/nats.sh stop DIR         (SIGTERM, waits for a clean shutdown)
#   scripts/nats.sh kill DIR         (SIGKILL: a crash; `start` again on the
#                                     same DIR recovers the JetStream data)
# JetStream file storage lives in DIR/jetstream, the log in DIR/server.log,
# the pid in DIR/nats.pid, the monitoring port (PORT+1, /healthz) in DIR/monitor_port.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
usage="usage: scripts/nats.sh start DIR PORT | stop DIR | kill DIR"
cmd=${1:?$usage}
dir=${2:?$usage}

# Ready: the client port accepts connections and, where curl is installed,
# /healthz says JetStream is up (it can lag the client port while it
# recovers its stored data).
nats_ready() {
  port_open "$1" && { ! command -v curl >/dev/null || curl -fs "http://127.0.0.1:$2/healthz?js-enabled-only=true"; }
}

case "$cmd" in
  start)
    port=${3:?$usage}
    need nats-server nats-server
    dir=$(absolute_dir "$dir")
    mkdir -p "$dir/jetstream"
    check_startable nats-server "$dir/nats.pid" "$port" "scripts/nats.sh stop $dir"
    monitor=$((port + 1))
    echo "$monitor" >"$dir/monitor_port"
    daemon_start "$dir/nats.pid" "$dir/server.log" \
      nats-server -js -a 127.0.0.1 -p "$port" -m "$monitor" -sd "$dir/jetstream" -n "txbox-test-$port"
    wait_ready "nats-server on 127.0.0.1:$port" 10 "$dir/nats.pid" "$dir/server.log" -- nats_ready "$port" "$monitor"
    echo "nats://127.0.0.1:$port"
    ;;
  stop) stop_daemon nats-server "$dir/nats.pid" 10 || true ;;
  kill) stop_daemon nats-server "$dir/nats.pid" 10 KILL || true ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
