#!/usr/bin/env bash
# Starts (or stops) every server the tests need, on loopback, under DIR:
#   eval "$(scripts/test-env.sh start DIR)"   # exports TXBOX_TEST_* variables
#   scripts/test-env.sh stop DIR
# Ports (override with the variables): PostgreSQL $TXBOX_TEST_PG_PORT (55432),
# RabbitMQ $TXBOX_TEST_RABBITMQ_PORT (55672), NATS $TXBOX_TEST_NATS_PORT
# (54222), Redis $TXBOX_TEST_REDIS_PORT (56379); the Kafka mock cluster (3
# brokers) picks free ports. TXBOX_TEST_BROKERS limits which brokers start
# (default "kafka rabbitmq nats redis").
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cmd=${1:?usage: scripts/test-env.sh start|stop DIR}
dir=${2:?usage: scripts/test-env.sh start|stop DIR}
brokers=${TXBOX_TEST_BROKERS:-kafka rabbitmq nats redis}
has() { [[ " $brokers " == *" $1 "* ]]; }
case "$cmd" in
  start)
    mkdir -p "$dir"
    pg_url=$("$root/scripts/pg.sh" start "$dir/pg" "${TXBOX_TEST_PG_PORT:-55432}")
    echo "export TXBOX_TEST_PG_URL='$pg_url'"
    if has kafka; then
      echo "export TXBOX_TEST_KAFKA_BOOTSTRAP='$("$root/scripts/kafka-mock.sh" start "$dir/kafka" --brokers 3)'"
    fi
    if has rabbitmq; then
      echo "export TXBOX_TEST_RABBITMQ_URL='$("$root/scripts/rabbitmq.sh" start "$dir/rabbitmq" "${TXBOX_TEST_RABBITMQ_PORT:-55672}")'"
    fi
    if has nats; then
      echo "export TXBOX_TEST_NATS_URL='$("$root/scripts/nats.sh" start "$dir/nats" "${TXBOX_TEST_NATS_PORT:-54222}")'"
    fi
    if has redis; then
      echo "export TXBOX_TEST_REDIS_URL='$("$root/scripts/redis.sh" start "$dir/redis" "${TXBOX_TEST_REDIS_PORT:-56379}")'"
    fi
    ;;
  stop)
    [ -d "$dir/redis" ] && { "$root/scripts/redis.sh" stop "$dir/redis" || true; }
    [ -d "$dir/nats" ] && { "$root/scripts/nats.sh" stop "$dir/nats" || true; }
    [ -d "$dir/rabbitmq" ] && { "$root/scripts/rabbitmq.sh" stop "$dir/rabbitmq" || true; }
    [ -d "$dir/kafka" ] && { "$root/scripts/kafka-mock.sh" stop "$dir/kafka" || true; }
    "$root/scripts/pg.sh" stop "$dir/pg" || true
    ;;
  *) echo "usage: scripts/test-env.sh start|stop DIR" >&2; exit 2 ;;
esac
