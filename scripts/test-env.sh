#!/usr/bin/env bash
# Starts (or stops) every server the tests need, on loopback, under DIR:
#   eval "$(scripts/test-env.sh start DIR)"   # exports TXBOX_TEST_* variables
#   scripts/test-env.sh stop DIR
# Ports (override with the variables): PostgreSQL $TXBOX_TEST_PG_PORT (55432),
# RabbitMQ $TXBOX_TEST_RABBITMQ_PORT (55672), NATS $TXBOX_TEST_NATS_PORT
# (54222), Redis $TXBOX_TEST_REDIS_PORT (56379); the Kafka mock cluster (3
# brokers) picks free ports. TXBOX_TEST_BROKERS limits which brokers start
# (default "kafka rabbitmq nats redis").
# When a server does not start, `start` stops those it started, says which
# one failed and why (on stderr), and exits 1.
set -euo pipefail
scripts=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
usage="usage: scripts/test-env.sh start|stop DIR"
cmd=${1:?$usage}
dir=${2:?$usage}
brokers=${TXBOX_TEST_BROKERS:-kafka rabbitmq nats redis}
has() { [[ " $brokers " == *" $1 "* ]]; }

# export VAR URL: one line of the output that callers eval. The URL comes from
# an assignment, so that a server script's failure stops this script (set -e
# does not look at a $(...) inside another command's arguments).
export_line() { echo "export $1='$2'"; }

stop_all() {
  local server
  for server in redis nats rabbitmq kafka; do
    # kafka's state lives in DIR/kafka, its script is kafka-mock.sh.
    [ -d "$dir/$server" ] && { "$scripts/${server/kafka/kafka-mock}.sh" stop "$dir/$server" || true; }
  done
  "$scripts/pg.sh" stop "$dir/pg" || true
}

case "$cmd" in
  start)
    mkdir -p "$dir"
    started=false
    trap '$started || stop_all >/dev/null 2>&1' EXIT
    url=$("$scripts/pg.sh" start "$dir/pg" "${TXBOX_TEST_PG_PORT:-55432}")
    export_line TXBOX_TEST_PG_URL "$url"
    if has kafka; then
      url=$("$scripts/kafka-mock.sh" start "$dir/kafka" --brokers 3)
      export_line TXBOX_TEST_KAFKA_BOOTSTRAP "$url"
    fi
    if has rabbitmq; then
      url=$("$scripts/rabbitmq.sh" start "$dir/rabbitmq" "${TXBOX_TEST_RABBITMQ_PORT:-55672}")
      export_line TXBOX_TEST_RABBITMQ_URL "$url"
    fi
    if has nats; then
      url=$("$scripts/nats.sh" start "$dir/nats" "${TXBOX_TEST_NATS_PORT:-54222}")
      export_line TXBOX_TEST_NATS_URL "$url"
    fi
    if has redis; then
      url=$("$scripts/redis.sh" start "$dir/redis" "${TXBOX_TEST_REDIS_PORT:-56379}")
      export_line TXBOX_TEST_REDIS_URL "$url"
    fi
    started=true
    ;;
  stop) stop_all ;;
  *) echo "$usage" >&2; exit 2 ;;
esac
