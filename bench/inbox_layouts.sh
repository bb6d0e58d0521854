#!/usr/bin/env bash
# Insert and retention cost of the two inbox layouts (docs/inbox.md), in one
# run on one server: the plain table and the time-partitioned inbox
# (`txbox inbox partition`), each holding the same 8 past days of rows.
#   insert:    pgbench claims batches of 100 new UUID ids per transaction
#              through txbox.inbox_claim (4 clients), msgs/s and WAL bytes;
#              also the plain table's statement before migration 0004
#              (INSERT ... ON CONFLICT, no function), to show what the
#              function call costs.
#   retention: the oldest day's rows removed: DELETE ... WHERE processed_at <
#              (then the VACUUM that makes the space reusable) on the plain
#              table, `txbox inbox partition` (DETACH CONCURRENTLY + DROP) on
#              the partitioned one; seconds and WAL bytes.
# Writes bench/results/inbox-layouts.md.
#   bench/inbox_layouts.sh [--quick]
# Env: TXBOX_BUILD_DIR (built tree, default build/), TXBOX_BENCH_PG_URL (an
# admin URL of a server to use instead of starting one),
# TXBOX_BENCH_PG_PORT (port of the server it starts, default 55453),
# TXBOX_BENCH_IDS (ids claimed per layout, default 1000000),
# TXBOX_BENCH_DAY_ROWS (rows per past day, default 300000).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source-path=SCRIPTDIR source=../scripts/lib.sh
source "$root/scripts/lib.sh"
build=${TXBOX_BUILD_DIR:-$root/build}
txbox=$build/relay/txbox
[ -x "$txbox" ] || die "$txbox not found: build first (scripts/build.sh) or set TXBOX_BUILD_DIR"
ids=${TXBOX_BENCH_IDS:-1000000}
day_rows=${TXBOX_BENCH_DAY_ROWS:-300000}
if [ "${1:-}" = --quick ]; then ids=100000; day_rows=30000; fi
clients=4
batch=100
pgbench=$(printf '%s\n' /usr/lib/postgresql/*/bin/pgbench | sort -V | tail -1)

admin=${TXBOX_BENCH_PG_URL:-}
if [ -z "$admin" ]; then
  dir=$(make_run_dir txbox-inbox-bench)
  trap '"$root/scripts/pg.sh" stop "$dir" >/dev/null 2>&1' EXIT
  admin=$("$root/scripts/pg.sh" start "$dir" "${TXBOX_BENCH_PG_PORT:-55453}")
fi
url_of() { echo "${admin%/*}/$1"; }
sql() { psql -X -q -At -v ON_ERROR_STOP=1 "$1" -c "$2"; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
lsn() { sql "$1" "SELECT pg_current_wal_lsn()"; }
wal_since() { sql "$1" "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '$2')"; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }

# The same 8 past days of rows (day -8 is the one retention removes) for
# both layouts; processed_at spread over each day.
prefill() {
  sql "$1" "INSERT INTO txbox.inbox (consumer, message_id, processed_at)
    SELECT 'bench', gen_random_uuid()::text,
           date_bin('1 day', now(), timestamptz '2000-01-01 00:00:00+00') - d * interval '1 day'
             + (i::float8 / $day_rows) * interval '1 day'
    FROM generate_series(1, 8) AS d, generate_series(0, $day_rows - 1) AS i"
  sql "$1" "VACUUM ANALYZE txbox.inbox"
}

fresh_db() {
  sql "$admin" "DROP DATABASE IF EXISTS $1" 2>/dev/null
  sql "$admin" "CREATE DATABASE $1"
  "$txbox" migrate --database-url "$(url_of "$1")" >/dev/null
}

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
echo "== preparing: 8 past days of $day_rows rows in each layout"
fresh_db inbox_bench_plain
prefill "$(url_of inbox_bench_plain)"
sql "$admin" "DROP DATABASE IF EXISTS inbox_bench_direct"
sql "$admin" "CREATE DATABASE inbox_bench_direct TEMPLATE inbox_bench_plain"

# The partitioned inbox as `txbox inbox partition` leaves it after running
# daily for a while: one partition per past day (the conversion made those
# ahead; running it again now would drop day -8 before the measurement). The conversion puts the
# (empty) old table in front as the partition of everything before the
# second boundary ahead; it is swapped here for the daily partitions it
# would have become.
fresh_db inbox_bench_part
part=$(url_of inbox_bench_part)
"$txbox" inbox partition --database-url "$part" --interval '1 day' --retention '7 days' >/dev/null
old=$(sql "$part" "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
                   WHERE i.inhparent = 'txbox.inbox'::regclass AND c.relname LIKE 'inbox_before_%'")
sql "$part" "ALTER TABLE txbox.inbox DETACH PARTITION txbox.$old; DROP TABLE txbox.$old"
sql "$part" "DO \$\$ DECLARE lower timestamptz; BEGIN
  FOR lower IN SELECT generate_series(date_bin('1 day', now(), timestamptz '2000-01-01 00:00:00+00') - interval '8 days',
                                      date_bin('1 day', now(), timestamptz '2000-01-01 00:00:00+00') + interval '1 day',
                                      interval '1 day') LOOP
    EXECUTE format('CREATE TABLE txbox.%I PARTITION OF txbox.inbox (PRIMARY KEY (consumer, message_id)) FOR VALUES FROM (%L) TO (%L)',
                   'inbox_' || to_char(lower AT TIME ZONE 'UTC', 'YYYYMMDD_HH24MISS'), lower, lower + interval '1 day');
  END LOOP; END \$\$"
prefill "$part"
partitions=$(sql "$part" "SELECT count(*) FROM pg_inherits WHERE inhparent = 'txbox.inbox'::regclass")

claim_sql=$(mktemp)
direct_sql=$(mktemp)
trap 'rm -f "$claim_sql" "$direct_sql"; [ -n "${dir:-}" ] && "$root/scripts/pg.sh" stop "$dir" >/dev/null 2>&1' EXIT
echo "SELECT count(*) FROM txbox.inbox_claim('bench', ARRAY(SELECT gen_random_uuid()::text FROM generate_series(1, $batch)));" >"$claim_sql"
echo "INSERT INTO txbox.inbox (consumer, message_id) SELECT 'bench', gen_random_uuid()::text FROM generate_series(1, $batch) ON CONFLICT DO NOTHING RETURNING message_id;" >"$direct_sql"

# claims DB SCRIPT -> "msgs/s WAL-bytes-per-id" of one pgbench run
claims() {
  local url start wal tps
  url=$(url_of "$1")
  sql "$url" "CHECKPOINT"
  start=$(lsn "$url")
  tps=$("$pgbench" -n -f "$2" -c "$clients" -j 2 -t $((ids / batch / clients)) "$url" 2>&1 |
        awk '/^tps = / { print $3; exit }')
  wal=$(wal_since "$url" "$start")
  awk -v t="$tps" -v b="$batch" -v w="$wal" -v n="$ids" 'BEGIN { printf "%.0f %.0f\n", t * b, w / n }'
}

# Two rounds, the layouts taking turns, so that a burst of load from
# elsewhere on the machine shows as a difference between the rounds.
echo "== insert: $ids ids per layout and round, batches of $batch, $clients clients"
declare -A round1 round2
for round in 1 2; do
  for layout in direct plain part; do
    script=$claim_sql
    [ "$layout" = direct ] && script=$direct_sql
    result=$(claims "inbox_bench_$layout" "$script")
    echo "round $round, $layout: $result msgs/s, WAL bytes/id"
    if [ "$round" = 1 ]; then round1[$layout]=$result; else round2[$layout]=$result; fi
  done
done
row() { printf '| %s | %s | %s | %s |\n' "$1" "${round1[$2]% *}" "${round2[$2]% *}" "${round2[$2]#* }"; }
insert_rows=$(
  row "plain table, \`INSERT ... ON CONFLICT\` (before migration 0004)" direct
  row "plain table, \`txbox.inbox_claim\`" plain
  row "partitioned ($partitions daily partitions), \`txbox.inbox_claim\`" part
)
echo "$insert_rows"

echo "== retention: the oldest day ($day_rows rows)"
plain=$(url_of inbox_bench_plain)
sql "$plain" "CHECKPOINT"
start_lsn=$(lsn "$plain")
t0=$(now)
deleted=$(psql -X -At -v ON_ERROR_STOP=1 "$plain" -c "DELETE FROM txbox.inbox
  WHERE processed_at < date_bin('1 day', now(), timestamptz '2000-01-01 00:00:00+00') - interval '7 days'" | awk '{ print $2 }')
t1=$(now)
delete_wal=$(wal_since "$plain" "$start_lsn")
mid_lsn=$(lsn "$plain")
sql "$plain" "VACUUM txbox.inbox"
t2=$(now)
vacuum_wal=$(wal_since "$plain" "$mid_lsn")

sql "$part" "CHECKPOINT"
start_lsn=$(lsn "$part")
t3=$(now)
dropped=$("$txbox" inbox partition --database-url "$part" | grep -c 'dropped expired partition' || true)
t4=$(now)
drop_wal=$(wal_since "$part" "$start_lsn")

# Backquotes are markdown here.
# shellcheck disable=SC2016
retention_rows=$(
  printf '| plain table: `DELETE ... WHERE processed_at < ...` (%s rows) | %s | %s |\n' "$deleted" "$(elapsed "$t0" "$t1")" "$(mib "$delete_wal")"
  printf '| plain table: the `VACUUM` after it | %s | %s |\n' "$(elapsed "$t1" "$t2")" "$(mib "$vacuum_wal")"
  printf '| partitioned: `txbox inbox partition` (%s partition detached concurrently and dropped) | %s | %s |\n' \
    "$dropped" "$(elapsed "$t3" "$t4")" "$(mib "$drop_wal")"
)
echo "$retention_rows"

# The lookup visits every partition that holds rows: with fewer of them (a
# longer interval, or a shorter retention) the claim costs less. Here all but
# the newest past day are detached (without dropping: nothing is measured on
# them), leaving yesterday, today and the empty partitions ahead.
echo "== insert with fewer partitions: yesterday and today hold rows"
sql "$part" "DO \$\$ DECLARE p regclass; BEGIN
  FOR p IN SELECT c.oid::regclass FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
            WHERE i.inhparent = 'txbox.inbox'::regclass
              AND pg_get_expr(c.relpartbound, c.oid) NOT LIKE '%MINVALUE%'
              AND (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']*)''\)'))[1]::timestamptz
                  <= date_bin('1 day', now(), timestamptz '2000-01-01 00:00:00+00') - interval '1 day' LOOP
    EXECUTE format('ALTER TABLE txbox.inbox DETACH PARTITION %s', p);
  END LOOP; END \$\$"
few=$(sql "$part" "SELECT count(*) FROM pg_inherits WHERE inhparent = 'txbox.inbox'::regclass")
declare -A round3
for layout in plain part; do
  round3[$layout]=$(claims "inbox_bench_$layout" "$claim_sql")
  echo "$layout: ${round3[$layout]} msgs/s, WAL bytes/id"
done
# shellcheck disable=SC2016
few_rows=$(
  printf '| plain table, `txbox.inbox_claim` | %s |\n' "${round3[plain]% *}"
  printf '| partitioned (%s partitions, 2 of them holding rows), `txbox.inbox_claim` | %s |\n' "$few" "${round3[part]% *}"
)

out=$root/bench/results
mkdir -p "$out"
cat >"$out/inbox-layouts.md" <<EOF
# Inbox layouts: insert and retention cost

Measured by \`bench/inbox_layouts.sh\` on $(date -u +%Y-%m-%d): $(nproc) cores, PostgreSQL $(sql "$admin" "SHOW server_version" | cut -d' ' -f1)
(fsync and synchronous_commit on), the clients on the same machine; load
average before the run $load_before, after it $(cut -d' ' -f1-3 /proc/loadavg)
(other work on the machine shows there). Both
layouts hold the same 8 past days of $day_rows rows (one consumer) before the
run.

## Insert: claims of $batch new ids per transaction ($clients pgbench clients)

Each round claims $ids new ids per layout; the layouts take turns.

| layout | msgs/s, round 1 | msgs/s, round 2 | WAL bytes per id, round 2 |
|---|---:|---:|---:|
$insert_rows

With fewer partitions holding rows (all past days but yesterday detached;
same run, after the retention step below):

| layout | msgs/s |
|---|---:|
$few_rows

## Retention: removing the oldest day ($day_rows rows)

| how | seconds | WAL |
|---|---:|---:|
$retention_rows

The DELETE's cost grows with the rows of a day (and leaves dead rows for
VACUUM, which also writes WAL and scans the indexes); a partition's detach
and drop cost the same for any size.
EOF
echo "wrote $out/inbox-layouts.md"
