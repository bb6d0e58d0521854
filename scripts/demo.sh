#!/usr/bin/env bash
# The txbox demo on a fresh Debian 12 machine: installs packages, builds,
# starts a throwaway PostgreSQL and a broker on loopback (Kafka: librdkafka's
# mock cluster; or RabbitMQ, NATS JetStream, Redis), applies the migrations,
# runs an order service that writes orders and their events in one
# transaction, the relay that delivers them, and a consumer that records them
# through the inbox; prints a summary.
#   scripts/demo.sh [--orders N] [--broker kafka|rabbitmq|nats|redis]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=../scripts/lib.sh
source "$root/scripts/lib.sh"
build=${TXBOX_BUILD_DIR:-$root/build}
orders=2000
broker=kafka
while [ $# -gt 0 ]; do
  case "$1" in
    --orders) orders=$2; shift 2 ;;
    --broker) broker=$2; shift 2 ;;
    *) echo "usage: scripts/demo.sh [--orders N] [--broker kafka|rabbitmq|nats|redis]" >&2; exit 2 ;;
  esac
done
case "$broker" in
  kafka|rabbitmq|nats|redis) ;;
  *) echo "error: --broker $broker is not supported: use kafka, rabbitmq, nats or redis" >&2; exit 2 ;;
esac

step() { printf '\n== %s\n' "$*"; }
step "installing packages and building (first run takes a few minutes)"
"$root/scripts/install-deps.sh"
TXBOX_BUILD_DIR=$build "$root/scripts/build.sh"

dir=$(make_run_dir txbox-demo)
consumer_pid=""
broker_script=$root/scripts/$broker.sh
[ "$broker" != kafka ] || broker_script=$root/scripts/kafka-mock.sh
cleanup() {
  if [ -n "$consumer_pid" ]; then stop_process consumer "$consumer_pid" 10 || true; fi
  "$broker_script" stop "$dir/broker" >/dev/null 2>&1 || true
  "$root/scripts/pg.sh" stop "$dir/pg" >/dev/null 2>&1 || true
}
trap cleanup EXIT
step "starting throwaway PostgreSQL and $broker in $dir"
admin=$("$root/scripts/pg.sh" start "$dir/pg" "${TXBOX_DEMO_PG_PORT:-55442}")
case "$broker" in
  kafka) broker_url="kafka://$(TXBOX_KAFKA_MOCK_BIN=$build/scripts/txbox-kafka-mock "$broker_script" start "$dir/broker" --brokers 3)" ;;
  rabbitmq) broker_url=$("$broker_script" start "$dir/broker" "${TXBOX_DEMO_BROKER_PORT:-55682}") ;;
  nats) broker_url="$("$broker_script" start "$dir/broker" "${TXBOX_DEMO_BROKER_PORT:-54232}")?create_streams=true" ;;
  redis) broker_url=$("$broker_script" start "$dir/broker" "${TXBOX_DEMO_BROKER_PORT:-56389}") ;;
esac
psql -q "$admin" -c "CREATE DATABASE shop"
db=${admin%/postgres}/shop
echo "PostgreSQL: $db"
echo "broker:     $broker_url"
consumer() {
  "$build/examples/txbox-example-order-consumer" --database-url "$db" --broker-url "$broker_url" --expect "$orders"
}

step "applying migrations: txbox migrate"
"$build/relay/txbox" migrate --database-url "$db"

step "order service: $orders orders, each written with its event in one transaction"
"$build/examples/txbox-example-order-service" --database-url "$db" --orders "$orders"
"$build/relay/txbox" status --database-url "$db"

# RabbitMQ drops messages nobody listens for (the relay publishes with
# `mandatory` and would dead-letter them): start the consumer first, it
# declares its queue. The other brokers keep the messages for it.
if [ "$broker" = rabbitmq ]; then
  step "consumer (started first, declares its queue): order events -> customer totals, through the inbox"
  consumer & consumer_pid=$!
  sleep 3
fi

step "relay: txbox-relay --drain"
"$build/relay/txbox-relay" --database-url "$db" --broker-url "$broker_url" --workers 4 --drain

if [ "$broker" = rabbitmq ]; then
  wait "$consumer_pid"; consumer_pid=""
else
  step "consumer: order events -> customer totals, through the inbox"
  consumer
fi

step "summary"
psql -qAt "$db" <<SQL
SELECT 'orders written:           ' || (SELECT count(*) FROM orders);
SELECT 'outbox rows left:         ' || (SELECT count(*) FROM txbox.outbox);
SELECT 'inbox entries (billing):  ' || (SELECT count(*) FROM txbox.inbox WHERE consumer = 'billing');
SELECT 'orders in customer totals:' || (SELECT sum(orders) FROM customer_totals);
SELECT 'amount matches orders:    ' || ((SELECT sum(amount_cents) FROM orders) = (SELECT sum(amount_cents) FROM customer_totals));
SQL
ok=$(psql -qAt "$db" -c "SELECT (SELECT count(*) FROM orders) = $orders AND (SELECT count(*) FROM txbox.outbox) = 0 AND (SELECT sum(orders) FROM customer_totals) = $orders AND (SELECT sum(amount_cents) FROM orders) = (SELECT sum(amount_cents) FROM customer_totals)")
if [ "$ok" = t ]; then echo "demo OK: every order's event was delivered and applied exactly once"; else echo "demo FAILED: see above" >&2; exit 1; fi
