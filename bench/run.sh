#!/usr/bin/env bash
# Every benchmark against throwaway servers on loopback (a benchmark, not a
# test): relay throughput per broker beside its reference, latency at fixed
# writer rates, an idle relay's cost, memory, what the outbox costs a writer
# (pgbench), and the consumer per broker beside the broker's consume ceiling.
# Writes bench/results/results.jsonl, summary.md, consumer.md and the charts
# latency.png, throughput.png and consumer.png.
#   bench/run.sh [--quick] [--consumer-only]
#     --quick          smaller runs, to try the script
#     --consumer-only  only the consumer benchmarks: their rows of
#                      results.jsonl, consumer.md and consumer.png are
#                      replaced, the relay's results kept
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=../scripts/lib.sh
source "$root/scripts/lib.sh"
build=${TXBOX_BUILD_DIR:-$root/build}
quick=false
consumer_only=false
for arg in "$@"; do
  case $arg in
    --quick) quick=true ;;
    --consumer-only) consumer_only=true ;;
    *) echo "usage: bench/run.sh [--quick] [--consumer-only]" >&2; exit 2 ;;
  esac
done
"$root/scripts/install-deps.sh"
command -v gnuplot >/dev/null || { sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo;
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends gnuplot-nox >/dev/null; }
TXBOX_BUILD_DIR=$build "$root/scripts/build.sh"
dir=$(make_run_dir txbox-bench)
trap '"$root/scripts/test-env.sh" stop "$dir" >/dev/null 2>&1' EXIT
# Captured first, so that a server that does not start stops the run.
vars=$(TXBOX_TEST_PG_PORT=${TXBOX_BENCH_PG_PORT:-55452} TXBOX_TEST_RABBITMQ_PORT=55692 TXBOX_TEST_NATS_PORT=54252 \
  TXBOX_TEST_REDIS_PORT=56399 TXBOX_KAFKA_MOCK_BIN=$build/scripts/txbox-kafka-mock "$root/scripts/test-env.sh" start "$dir")
eval "$vars"
psql -q "$TXBOX_TEST_PG_URL" -c "CREATE DATABASE bench"
db="${TXBOX_TEST_PG_URL%/postgres}/bench"
bench=$build/bench/txbox-bench
relay=$build/relay/txbox-relay
out=$root/bench/results
mkdir -p "$out"
json=$out/results.jsonl
extra=$out/extra.md
messages=200000
$quick && messages=20000
seconds=20
$quick && seconds=5
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; PostgreSQL 15, the brokers and the relay share it" | tee "$out/machine.txt"
kafka="kafka://$TXBOX_TEST_KAFKA_BOOTSTRAP"
# Destinations must exist where the broker does not create them: NATS creates
# its stream on first use (create_streams=true); RabbitMQ publishes to the
# default exchange into a queue made here.
queue=bench-$$
amqp-declare-queue --url="${TXBOX_TEST_RABBITMQ_URL%/}" -q "$queue" -d >/dev/null
sql() { psql -qAtX "$db" -c "$1"; }

# Each run reads a destination of its own, filled beforehand by the adapter's
# publisher, so the relay's runs above leave nothing it depends on. The Kafka
# mock cluster answers a fetch that finds nothing only after
# fetch.wait.max.ms (default 500 ms), where a real broker answers as soon as
# a message arrives: 10 ms keeps the mock's wait out of the latencies (a
# backlog's fetches find data and are answered at once either way). The
# Kafka mock keeps 5 MB a partition (older message sets are dropped), so a
# Kafka run reads 100,000 messages (about 4 MB a partition), not 200,000.
# Redis rewrites its append-only file each time it doubles; with a 200,000-entry
# stream per run the rewrites (a fork writing the whole data set) land on
# whichever run is going on. They are off for the consumer runs, so that the
# runs compare the consumer and not the rewrite schedule.
redis_aof_rewrites() { redis-cli -u "$TXBOX_TEST_REDIS_URL" CONFIG SET auto-aof-rewrite-percentage "$1" >/dev/null; }
consumer_bench() {
  redis_aof_rewrites 0
  echo "== consumer: $messages order events over 1,000 keys per run and broker; the adapter alone, the inbox"
  echo "   consumer (no-op and upsert handlers, 1 and 4 lanes); latency at 1,000 msg/s for $seconds s"
  "$bench" consumer --database-url "$db" --json "$json" --messages "$messages" --workers 1,4 \
    --kafka-property fetch.wait.max.ms=10 --messages-for "kafka=$((messages / 2))" \
    --latency-rate 1000 --latency-seconds "$seconds" \
    --broker-url "$kafka" --broker-url "$TXBOX_TEST_RABBITMQ_URL" \
    --broker-url "$TXBOX_TEST_NATS_URL?create_streams=true" --broker-url "$TXBOX_TEST_REDIS_URL"
  redis_aof_rewrites 100
}
if $consumer_only; then
  touch "$json"
  # The relay's rows stay; the consumer's are measured again.
  grep -v '"kind":"consumer' "$json" >"$dir/relay-rows.jsonl" || true
  cp "$dir/relay-rows.jsonl" "$json"
  consumer_bench
  "$bench" report --json "$json" --out "$out" --consumer-only
  gnuplot -e "dir='$out'" "$root/bench/charts.gp"
  echo
  cat "$out/machine.txt" "$out/consumer.md"
  echo
  echo "chart: $out/consumer.png"
  exit 0
fi
: >"$json"
: >"$extra"

echo "== throughput, $messages messages over 1,000 keys, every broker"
repeat=3
$quick && repeat=1
"$bench" throughput --database-url "$db" --json "$json" --label 200k --messages "$messages" --topic "$queue" --repeat "$repeat" \
  --broker-url "$kafka" --broker-url "$TXBOX_TEST_RABBITMQ_URL" \
  --broker-url "$TXBOX_TEST_NATS_URL?create_streams=true" --broker-url "$TXBOX_TEST_REDIS_URL"
echo "== throughput to Kafka: 10,000 keys, one hot key, a 2,000,000-row backlog, beside the same run with 1,000 keys"
extra_repeat=2
$quick && extra_repeat=1
kafka_run() {  # label, then txbox-bench flags
  local label=$1
  shift
  "$bench" throughput --database-url "$db" --json "$json" --label "$label" --skip-reference --repeat "$extra_repeat" \
    --broker-url "$kafka" "$@"
}
kafka_run "1,000 keys (baseline of this group)" --messages "$messages"
kafka_run "10,000 keys" --messages "$messages" --keys 10000
kafka_run "1 hot key" --messages "$messages" --keys 1
$quick || kafka_run "2,000,000-row backlog" --messages 2000000
echo "== latency, commit -> Kafka confirmation"
"$bench" latency --database-url "$db" --broker-url "$kafka" --rates 100,1000,5000 --seconds "$seconds" --json "$json"

consumer_bench

# Peak resident memory (VmHWM, KiB) of a process until it exits.
peak_rss() {
  local pid=$1 peak=0 now
  while kill -0 "$pid" 2>/dev/null; do
    now=$(awk '/VmHWM/{print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
    [ "${now:-0}" -gt "$peak" ] && peak=$now
    sleep 0.05
  done
  echo "$peak"
}

echo "== an idle relay: CPU and statements"
sql "TRUNCATE txbox.outbox"
"$relay" --database-url "$db" --broker-url "$kafka" >"$dir/idle.log" 2>&1 &
relay_pid=$!
sleep 15
ticks() { awk '{print $14 + $15}' "/proc/$relay_pid/stat"; }
commits() { psql -qAtX "$db" -c "SELECT pg_stat_clear_snapshot(); SELECT xact_commit FROM pg_stat_database WHERE datname = 'bench'" | tail -1; }
t0=$(ticks); c0=$(commits)
window=30
$quick && window=10
sleep "$window"
t1=$(ticks); c1=$(commits)
stop_process txbox-relay "$relay_pid" 30 || true
hz=$(getconf CLK_TCK)
cpu=$(awk -v d=$((t1 - t0)) -v hz="$hz" -v w="$window" 'BEGIN{printf "%.2f", 100 * d / hz / w}')
# Our own two readings are in the count.
stmts=$(awk -v d=$((c1 - c0 - 2)) -v w="$window" 'BEGIN{printf "%.2f", d / w}')
echo "idle relay: $cpu% of a core, $stmts transactions/s"

echo "== memory: 200,000 rows of 1 KB to Kafka, then 12 rows of 20 MB to Redis"
sql "TRUNCATE txbox.outbox; INSERT INTO txbox.outbox (destination, message_key, payload)
     SELECT '$queue', 'key-' || (i % 1000), convert_to(repeat('x', 1024), 'UTF8') FROM generate_series(1, $messages) i"
"$relay" --database-url "$db" --broker-url "$kafka" --drain >"$dir/rss1.log" 2>&1 &
rss_small=$(peak_rss $!)
sql "INSERT INTO txbox.outbox (destination, message_key, payload)
     SELECT 'bench-big', 'one-key', convert_to(repeat('y', 20 * 1024 * 1024), 'UTF8') FROM generate_series(1, 12)"
"$relay" --database-url "$db" --broker-url "$TXBOX_TEST_REDIS_URL?maxlen=1" --drain >"$dir/rss2.log" 2>&1 &
rss_big=$(peak_rss $!)
echo "peak RSS: $((rss_small / 1024)) MiB with 1 KB payloads, $((rss_big / 1024)) MiB with 20 MB payloads"

echo "== writer cost (pgbench): a business transaction with and without an outbox row"
pgbench=$(printf '%s\n' /usr/lib/postgresql/*/bin/pgbench | sort -V | tail -1)
sql "CREATE TABLE IF NOT EXISTS bench_orders (id bigserial PRIMARY KEY, customer_id int NOT NULL,
     amount numeric(12,2) NOT NULL, note text, created_at timestamptz NOT NULL DEFAULT now())"
payload=$(printf 'x%.0s' $(seq 200))
cat >"$dir/business.sql" <<SQL
\set cid random(1, 100000)
BEGIN;
INSERT INTO bench_orders (customer_id, amount, note) VALUES (:cid, 42.50, 'placed by pgbench');
COMMIT;
SQL
cat >"$dir/outbox.sql" <<SQL
\set cid random(1, 100000)
BEGIN;
INSERT INTO bench_orders (customer_id, amount, note) VALUES (:cid, 42.50, 'placed by pgbench');
INSERT INTO txbox.outbox (destination, message_key, payload) VALUES ('orders', :cid, '$payload');
COMMIT;
SQL
pgseconds=20
$quick && pgseconds=5
tps() {  # script clients
  sql "TRUNCATE bench_orders, txbox.outbox"
  sql "VACUUM ANALYZE bench_orders"
  sql "VACUUM ANALYZE txbox.outbox"
  "$pgbench" -n -M prepared -c "$2" -j 2 -T "$pgseconds" -f "$1" "$db" 2>/dev/null | awk '/^tps/{printf "%.0f", $3}'
}
declare -A writer
median() { printf '%s\n' "$@" | sort -n | sed -n "$(( ($# + 1) / 2 ))p"; }
rounds=3
$quick && rounds=1
for clients in 8 32; do
  b=(); o=(); n=()
  # Interleaved rounds, the median of each: this machine is noisy.
  for _ in $(seq "$rounds"); do
    b+=("$(tps "$dir/business.sql" "$clients")")
    o+=("$(tps "$dir/outbox.sql" "$clients")")
    # A relay asleep that wants wake-ups: every writer transaction then
    # NOTIFYs (the case the relay avoids under load by letting its wake-up
    # horizon run out). Each -c is a transaction of its own.
    psql -qAtX "$db" -c "LISTEN txbox_outbox" \
      -c "SELECT setval('txbox.relay_wakeup_until', extract(epoch FROM now())::bigint + 3600)" \
      -c "SELECT pg_sleep($pgseconds + 15)" >/dev/null &
    sleeper=$!
    sleep 1
    n+=("$(tps "$dir/outbox.sql" "$clients")")
    sql "SELECT setval('txbox.relay_wakeup_until', 0)" >/dev/null
    kill "$sleeper" 2>/dev/null || true
    wait "$sleeper" 2>/dev/null || true
  done
  writer[business,$clients]=$(median "${b[@]}")
  writer[outbox,$clients]=$(median "${o[@]}")
  writer[notify,$clients]=$(median "${n[@]}")
  echo "$clients clients: business ${writer[business,$clients]} tps, with an outbox row ${writer[outbox,$clients]}, with NOTIFY ${writer[notify,$clients]} (medians of $rounds)"
done

slower() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.0f%%", 100 * (1 - b / a)}'; }
{
  echo "### An idle relay (4 workers, empty outbox, $window s)"
  echo
  echo "| CPU | transactions/s |"
  echo "|---:|---:|"
  echo "| $cpu% of a core | $stmts |"
  echo
  echo "### Memory (peak resident set of txbox-relay, defaults: --max-batch-bytes 16 MiB)"
  echo
  echo "| payloads | peak RSS | bound |"
  echo "|---|---:|---|"
  echo "| $messages rows of 1 KB to Kafka | $((rss_small / 1024)) MiB | 64 MB |"
  echo "| 12 rows of 20 MB in one lane to Redis | $((rss_big / 1024)) MiB | 3 x 16 MiB + 64 MB = 112 MiB |"
  echo
  echo "### What the outbox costs a writer (pgbench, ${pgseconds} s each, -M prepared, medians of $rounds interleaved rounds)"
  echo
  echo "| clients | business transaction | + one outbox row (trigger on, no relay asleep) | slower | + NOTIFY (a relay asleep) | slower |"
  echo "|---:|---:|---:|---:|---:|---:|"
  for clients in 8 32; do
    bt=${writer[business,$clients]}; ot=${writer[outbox,$clients]}; nt=${writer[notify,$clients]}
    echo "| $clients | $bt tps | $ot tps | $(slower "$bt" "$ot") | $nt tps | $(slower "$bt" "$nt") |"
  done
} >"$extra"

"$bench" report --json "$json" --out "$out"
cat "$extra" >>"$out/summary.md"
rm -f "$extra"
gnuplot -e "dir='$out'" "$root/bench/charts.gp"
echo
cat "$out/machine.txt" "$out/summary.md" "$out/consumer.md"
echo
echo "charts: $out/latency.png $out/throughput.png $out/consumer.png"
