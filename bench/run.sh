#!/usr/bin/env bash
# Runs the relay throughput benchmark against throwaway servers on loopback.
#   bench/run.sh [txbox-bench flags...]     e.g. bench/run.sh --repeat 3
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${TXBOX_BUILD_DIR:-$root/build}
"$root/scripts/install-deps.sh"
TXBOX_BUILD_DIR=$build "$root/scripts/build.sh"
dir=$(mktemp -d /tmp/txbox-bench.XXXXXX)
chmod 755 "$dir"
trap '"$root/scripts/test-env.sh" stop "$dir" >/dev/null 2>&1' EXIT
eval "$(TXBOX_TEST_PG_PORT=${TXBOX_BENCH_PG_PORT:-55452} TXBOX_TEST_RABBITMQ_PORT=55692 TXBOX_TEST_NATS_PORT=54252 \
  TXBOX_TEST_REDIS_PORT=56399 TXBOX_KAFKA_MOCK_BIN=$build/scripts/txbox-kafka-mock "$root/scripts/test-env.sh" start "$dir")"
psql -q "$TXBOX_TEST_PG_URL" -c "CREATE DATABASE bench"
nproc_line="$(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB"
echo "machine: $nproc_line; PostgreSQL, the brokers and the relay share it"
# Destinations must exist where the broker does not create them: NATS creates
# its stream on first use (create_streams=true); RabbitMQ publishes to the
# default exchange, so the bench declares nothing and uses a queue it makes.
queue=bench-$$
amqp-declare-queue --url="${TXBOX_TEST_RABBITMQ_URL%/}" -q "$queue" -d >/dev/null
"$build/bench/txbox-bench" --database-url "${TXBOX_TEST_PG_URL%/postgres}/bench" \
  --broker-url "kafka://$TXBOX_TEST_KAFKA_BOOTSTRAP" --broker-url "$TXBOX_TEST_RABBITMQ_URL" \
  --broker-url "$TXBOX_TEST_NATS_URL?create_streams=true" --broker-url "$TXBOX_TEST_REDIS_URL" --topic "$queue" "$@"
