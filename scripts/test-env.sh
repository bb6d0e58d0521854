#!/usr/bin/env bash
# Starts (or stops) every server the tests need, on loopback, under DIR:
#   eval "$(scripts/test-env.sh start DIR)"   # exports TXBOX_TEST_* variables
#   scripts/test-env.sh stop DIR
# Ports: PostgreSQL $TXBOX_TEST_PG_PORT (default 55432); the Kafka mock
# cluster picks free ports (3 brokers).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cmd=${1:?usage: scripts/test-env.sh start|stop DIR}
dir=${2:?usage: scripts/test-env.sh start|stop DIR}
case "$cmd" in
  start)
    mkdir -p "$dir"
    pg_url=$("$root/scripts/pg.sh" start "$dir/pg" "${TXBOX_TEST_PG_PORT:-55432}")
    kafka=$("$root/scripts/kafka-mock.sh" start "$dir/kafka" --brokers 3)
    echo "export TXBOX_TEST_PG_URL='$pg_url'"
    echo "export TXBOX_TEST_KAFKA_BOOTSTRAP='$kafka'"
    ;;
  stop)
    "$root/scripts/kafka-mock.sh" stop "$dir/kafka" || true
    "$root/scripts/pg.sh" stop "$dir/pg" || true
    ;;
  *) echo "usage: scripts/test-env.sh start|stop DIR" >&2; exit 2 ;;
esac
