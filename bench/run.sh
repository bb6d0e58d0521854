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
eval "$(TXBOX_TEST_PG_PORT=${TXBOX_BENCH_PG_PORT:-55452} TXBOX_KAFKA_MOCK_BIN=$build/scripts/txbox-kafka-mock "$root/scripts/test-env.sh" start "$dir")"
psql -q "$TXBOX_TEST_PG_URL" -c "CREATE DATABASE bench"
nproc_line="$(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB"
echo "machine: $nproc_line; PostgreSQL, the Kafka mock and the relay share it"
"$build/bench/txbox-bench" --database-url "${TXBOX_TEST_PG_URL%/postgres}/bench" \
  --broker-url "kafka://$TXBOX_TEST_KAFKA_BOOTSTRAP" "$@"
