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
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
usage="usage: scripts/rabbitmq.sh start DIR PORT | stop DIR | kill DIR"
cmd=${1:?$usage}
dir=${2:?$usage}
bin=/usr/lib/rabbitmq/bin
need "$bin/rabbitmq-server" rabbitmq-server
dir=$(absolute_dir "$dir")
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
  [ -f "$dir/port" ] || die "$dir has no RabbitMQ node (no $dir/port); start one with: scripts/rabbitmq.sh start $dir PORT"
  cat "$dir/port"
}

# Ready: rabbitmqctl await_startup. It fails at once while the node is not
# registered with epmd yet, so wait_ready retries it (every second: each
# rabbitmqctl call starts an Erlang VM of its own).
rabbit_booted() {
  timeout 15 "$bin/rabbitmqctl" -n "$RABBITMQ_NODENAME" -q await_startup --timeout 10 >>"$dir/log/ctl.log" 2>&1
}

# stop_node SIGNAL SECONDS: the node (the Erlang VM, whose pid RabbitMQ
# writes to rabbit.pid), then its launcher (the rabbitmq-server shell that
# started it and only forwards signals: SIGKILL is enough).
stop_node() {
  stop_daemon "RabbitMQ node" "$dir/rabbit.pid" "$2" "$1" || true
  stop_daemon "rabbitmq-server launcher" "$dir/launcher.pid" 1 KILL || true
}

case "$cmd" in
  start)
    port=${3:?$usage}
    node_env "$port"
    check_startable "RabbitMQ node $RABBITMQ_NODENAME" "$dir/rabbit.pid" "$port" "scripts/rabbitmq.sh stop $dir"
    echo "$port" >"$dir/port"
    mkdir -p "$dir/log" "$dir/mnesia"
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
    rm -f "$dir/rabbit.pid"
    # setsid: the node leaves the caller's session, as under a service manager.
    daemon_start "$dir/launcher.pid" "$dir/log/startup.log" setsid "$bin/rabbitmq-server"
    if ! WAIT_INTERVAL=1 wait_ready "RabbitMQ node $RABBITMQ_NODENAME" 60 "$dir/launcher.pid" \
        "$dir/log/startup.log" "$dir/log/rabbit.log" "$dir/log/ctl.log" -- rabbit_booted; then
      stop_node TERM 5  # wait_ready stopped the launcher; the node may outlive it
      exit 1
    fi
    echo "amqp://guest:guest@127.0.0.1:$port/"
    ;;
  stop)
    [ -f "$dir/port" ] || exit 0
    port=$(saved_port)
    node_env "$port"
    node=$(running_pid "$dir/rabbit.pid") || node=""
    # rabbitmqctl stop: a clean shutdown.
    timeout 60 "$bin/rabbitmqctl" -n "$RABBITMQ_NODENAME" -q stop >>"$dir/log/ctl.log" 2>&1 || true
    # It returns, and RabbitMQ deletes rabbit.pid, a moment before the VM
    # has exited: wait for the pid read before (then SIGKILL).
    [ -z "$node" ] || stop_process "RabbitMQ node" "$node" 10 0 || true
    stop_node TERM 10
    ;;
  kill)
    running_pid "$dir/rabbit.pid" >/dev/null \
      || die "no running RabbitMQ node in $dir (no live pid in $dir/rabbit.pid)"
    stop_node KILL 10
    ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
