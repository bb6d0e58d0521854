#!/usr/bin/env bash
# Throwaway RabbitMQ node on loopback, in a directory of its own, without
# systemd (several can run side by side on different ports).
#   scripts/rabbitmq.sh start DIR PORT  -> prints amqp://guest:guest@127.0.0.1:PORT/
#   scripts/rabbitmq.sh stop DIR        -> rabbitmqctl stop, then SIGKILL if needed
#   scripts/rabbitmq.sh kill DIR        -> SIGKILL the node (fault tests); `start` works again after it
# The node is txbox-PORT@localhost, Erlang distribution on PORT+20000 (PORT-20000
# when that exceeds 65535), data in
# DIR/mnesia, logs in DIR/log. HOME=DIR holds the node's Erlang cookie, so
# only this script (or rabbitmqctl with HOME=DIR) can talk to it.
set -euo pipefail
usage="usage: scripts/rabbitmq.sh start DIR PORT | stop DIR | kill DIR"
cmd=${1:?$usage}
dir=${2:?$usage}
bin=/usr/lib/rabbitmq/bin
[ -x "$bin/rabbitmq-server" ] || {
  echo "error: RabbitMQ not found under $bin; install it: apt-get install -y rabbitmq-server" >&2
  exit 1
}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
cd "$dir"

# The environment of the node and of every rabbitmqctl call (the same HOME,
# hence the same cookie; the same node name).
node_env() {
  local port=$1
  export HOME="$dir"
  export RABBITMQ_NODENAME="txbox-$port@localhost"
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT="$port"
  # PORT+20000, or PORT-20000 where that would exceed 65535.
  local dist=$((port + 20000))
  [ "$dist" -le 65535 ] || dist=$((port - 20000))
  export RABBITMQ_DIST_PORT="$dist"
  export RABBITMQ_MNESIA_BASE="$dir/mnesia"
  export RABBITMQ_LOG_BASE="$dir/log"
  export RABBITMQ_LOGS="$dir/log/rabbit.log"
  export RABBITMQ_PID_FILE="$dir/rabbit.pid"
  export RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf"
  export RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config"
  export RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins"
  export RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf"
  export ERL_CRASH_DUMP="$dir/log/erl_crash.dump"  # never into the caller's directory
  export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
}

saved_port() {
  [ -f "$dir/port" ] || { echo "error: $dir has no RabbitMQ node (no $dir/port); start one with: scripts/rabbitmq.sh start $dir PORT" >&2; exit 1; }
  cat "$dir/port"
}

node_pid() {
  [ -f "$dir/rabbit.pid" ] && cat "$dir/rabbit.pid" 2>/dev/null || true
}

alive() {
  local pid=$1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

case "$cmd" in
  start)
    port=${3:?$usage}
    echo "$port" >"$dir/port"
    mkdir -p "$dir/log" "$dir/mnesia"
    node_env "$port"
    if [ ! -f "$dir/.erlang.cookie" ]; then
      head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr 'a-f' 'A-F' >"$dir/.erlang.cookie"
      chmod 400 "$dir/.erlang.cookie"
    fi
    cat >"$dir/rabbitmq.conf" <<CONF
listeners.tcp.1 = 127.0.0.1:$port
loopback_users.guest = true
disk_free_limit.absolute = 50MB
log.file.level = info
log.console = false
CONF
    echo "[]." >"$dir/advanced.config"
    echo "[]." >"$dir/enabled_plugins"  # no management plugin
    : >"$dir/rabbitmq-env.conf"
    if alive "$(node_pid)"; then
      echo "error: a RabbitMQ node already runs from $dir (pid $(node_pid)); stop it first: scripts/rabbitmq.sh stop $dir" >&2
      exit 1
    fi
    rm -f "$dir/rabbit.pid"
    setsid "$bin/rabbitmq-server" >>"$dir/log/startup.log" 2>&1 </dev/null &
    echo $! >"$dir/launcher.pid"
    # await_startup fails at once while the node is not registered with epmd
    # yet, so retry it until 60 s have passed.
    started=false
    deadline=$((SECONDS + 60))
    while [ "$SECONDS" -lt "$deadline" ]; do
      if timeout $((deadline - SECONDS + 1)) "$bin/rabbitmqctl" -n "$RABBITMQ_NODENAME" -q await_startup \
          --timeout $((deadline - SECONDS + 1)) >>"$dir/log/ctl.log" 2>&1; then
        started=true
        break
      fi
      alive "$(cat "$dir/launcher.pid")" || break  # the server exited
      sleep 1
    done
    if [ "$started" != true ]; then
      echo "error: RabbitMQ node $RABBITMQ_NODENAME did not start within 60 s; last lines of $dir/log:" >&2
      tail -n 20 "$dir/log/startup.log" >&2 2>/dev/null || true
      tail -n 20 "$dir/log/rabbit.log" >&2 2>/dev/null || true
      tail -n 5 "$dir/log/ctl.log" >&2 2>/dev/null || true
      exit 1
    fi
    echo "amqp://guest:guest@127.0.0.1:$port/"
    ;;
  stop)
    [ -f "$dir/port" ] || exit 0
    port=$(saved_port)
    node_env "$port"
    pid=$(node_pid)
    timeout 60 "$bin/rabbitmqctl" -n "$RABBITMQ_NODENAME" -q stop >>"$dir/log/ctl.log" 2>&1 || true
    for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done
    if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
    launcher=$(cat "$dir/launcher.pid" 2>/dev/null || true)
    if alive "$launcher"; then kill -KILL "$launcher" 2>/dev/null || true; fi
    rm -f "$dir/rabbit.pid" "$dir/launcher.pid"
    ;;
  kill)
    pid=$(node_pid)
    if ! alive "$pid"; then
      echo "error: no running RabbitMQ node in $dir (no live pid in $dir/rabbit.pid)" >&2
      exit 1
    fi
    kill -KILL "$pid"
    for _ in $(seq 1 100); do alive "$pid" || break; sleep 0.1; done
    launcher=$(cat "$dir/launcher.pid" 2>/dev/null || true)
    if alive "$launcher"; then kill -KILL "$launcher" 2>/dev/null || true; fi
    rm -f "$dir/rabbit.pid" "$dir/launcher.pid"
    ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
