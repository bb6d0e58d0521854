#!/usr/bin/env bash
# The txbox demo on a fresh Debian 12 machine: installs packages, builds,
# starts a throwaway PostgreSQL and Kafka (librdkafka's mock cluster) on
# loopback, applies the migrations, runs an order service that writes orders
# and their events in one transaction, the relay that delivers them, and a
# consumer that records them through the inbox; prints a summary.
#   scripts/demo.sh [--orders N] [--broker kafka]
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${TXBOX_BUILD_DIR:-$root/build}
orders=2000
broker=kafka
while [ $# -gt 0 ]; do
  case "$1" in
    --orders) orders=$2; shift 2 ;;
    --broker) broker=$2; shift 2 ;;
    *) echo "usage: scripts/demo.sh [--orders N] [--broker kafka]" >&2; exit 2 ;;
  esac
done
[ "$broker" = kafka ] || { echo "error: --broker $broker is not supported yet; use kafka" >&2; exit 2; }

step() { printf '\n== %s\n' "$*"; }
step "installing packages and building (first run takes a few minutes)"
"$root/scripts/install-deps.sh"
TXBOX_BUILD_DIR=$build "$root/scripts/build.sh"

dir=$(mktemp -d /tmp/txbox-demo.XXXXXX)
chmod 755 "$dir"
trap '"$root/scripts/kafka-mock.sh" stop "$dir/kafka" >/dev/null 2>&1 || true; "$root/scripts/pg.sh" stop "$dir/pg" >/dev/null 2>&1 || true' EXIT
step "starting throwaway PostgreSQL and Kafka in $dir"
admin=$("$root/scripts/pg.sh" start "$dir/pg" "${TXBOX_DEMO_PG_PORT:-55442}")
bootstrap=$(TXBOX_KAFKA_MOCK_BIN=$build/scripts/txbox-kafka-mock "$root/scripts/kafka-mock.sh" start "$dir/kafka" --brokers 3)
psql -q "$admin" -c "CREATE DATABASE shop"
db=${admin%/postgres}/shop
echo "PostgreSQL: $db"
echo "Kafka:      $bootstrap"

step "applying migrations: txbox migrate"
"$build/relay/txbox" migrate --database-url "$db"

step "order service: $orders orders, each written with its event in one transaction"
"$build/examples/txbox-example-order-service" --database-url "$db" --orders "$orders"
"$build/relay/txbox" status --database-url "$db"

step "relay: txbox-relay --drain"
"$build/relay/txbox-relay" --database-url "$db" --broker-url "kafka://$bootstrap" --workers 4 --drain

step "consumer: order events -> customer totals, through the inbox"
"$build/examples/txbox-example-order-consumer" --database-url "$db" --broker-url "kafka://$bootstrap" --expect "$orders"

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
