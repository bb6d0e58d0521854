#!/usr/bin/env bash
# Throwaway Kafka (librdkafka mock cluster) on loopback, state in DIR.
#   scripts/kafka-mock.sh start DIR [txbox-kafka-mock flags...]  -> prints the bootstrap servers
#   scripts/kafka-mock.sh stop DIR
#   scripts/kafka-mock.sh control DIR "COMMAND"   -> fault injection, e.g.
#       scripts/kafka-mock.sh control DIR "push-errors Produce NOT_ENOUGH_REPLICAS"
#       scripts/kafka-mock.sh control DIR "all-down"
#     writes COMMAND to the mock's FIFO DIR/control, waits (<= 5 s) for its
#     "ok ..." / "error ..." line in DIR/control.log, prints it; exit 1 on error.
#     Commands: txbox-kafka-mock --help.
# Binary: $TXBOX_KAFKA_MOCK_BIN, else build/scripts/txbox-kafka-mock in the
# repository, else txbox-kafka-mock on PATH. Files in DIR: kafka-mock.pid,
# kafka-mock.log, bootstrap, control (FIFO), control.log.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
usage="usage: scripts/kafka-mock.sh start DIR [flags...] | stop DIR | control DIR COMMAND"
cmd=${1:?$usage}
dir=${2:?$usage}
shift 2
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

find_bin() {
  if [ -n "${TXBOX_KAFKA_MOCK_BIN:-}" ]; then
    [ -x "$TXBOX_KAFKA_MOCK_BIN" ] || { echo "error: TXBOX_KAFKA_MOCK_BIN=$TXBOX_KAFKA_MOCK_BIN is not an executable" >&2; exit 1; }
    echo "$TXBOX_KAFKA_MOCK_BIN"
  elif [ -x "$root/build/scripts/txbox-kafka-mock" ]; then
    echo "$root/build/scripts/txbox-kafka-mock"
  elif command -v txbox-kafka-mock >/dev/null 2>&1; then
    command -v txbox-kafka-mock
  else
    echo "error: txbox-kafka-mock not found: build it (cmake --build build --target txbox-kafka-mock) or set TXBOX_KAFKA_MOCK_BIN" >&2
    exit 1
  fi
}

case "$cmd" in
  start)
    bin=$(find_bin)
    dir=$(absolute_dir "$dir")
    check_startable "a kafka mock" "$dir/kafka-mock.pid" "" "$0 stop $dir"
    rm -f "$dir/bootstrap"
    daemon_start "$dir/kafka-mock.pid" "$dir/kafka-mock.log" \
      "$bin" --bootstrap-file "$dir/bootstrap" --control "$dir/control" "$@"
    # The mock writes the bootstrap file once its brokers listen.
    wait_ready txbox-kafka-mock 20 "$dir/kafka-mock.pid" "$dir/kafka-mock.log" -- test -s "$dir/bootstrap"
    cat "$dir/bootstrap"
    ;;
  stop)
    stop_daemon txbox-kafka-mock "$dir/kafka-mock.pid" 10 || true
    rm -f "$dir/bootstrap" "$dir/control"
    ;;
  control)
    command=${1:?$usage}
    [ $# -eq 1 ] || { echo "error: quote the command: $0 control DIR \"push-errors Produce NOT_ENOUGH_REPLICAS\"" >&2; exit 2; }
    running_pid "$dir/kafka-mock.pid" >/dev/null || die "no kafka mock is running in $dir (start it with: $0 start $dir)"
    [ -p "$dir/control" ] || { echo "error: $dir/control is not a FIFO: the mock was started without --control" >&2; exit 1; }
    # The mock echoes the command with single spaces (hence the unquoted,
    # unglobbed $command).
    # shellcheck disable=SC2086
    normalized=$(set -f; echo $command)
    log="$dir/control.log"
    before=$( [ -f "$log" ] && wc -l <"$log" || echo 0 )
    # open() of a FIFO blocks until the mock reads it: bound it.
    # shellcheck disable=SC2016  # $1 and $2 belong to the inner bash
    if ! timeout 5 bash -c 'printf "%s\n" "$1" >"$2"' _ "$normalized" "$dir/control"; then
      echo "error: the kafka mock did not read $dir/control within 5 s" >&2
      exit 1
    fi
    for _ in $(seq 1 50); do
      line=$(tail -n +"$((before + 1))" "$log" 2>/dev/null \
        | grep -m1 -F -x -e "ok $normalized" -e "error $normalized" || true)
      [ -n "$line" ] || line=$(tail -n +"$((before + 1))" "$log" 2>/dev/null \
        | grep -m1 -F "error $normalized: " || true)
      if [ -n "$line" ]; then
        echo "$line"
        [[ $line == ok* ]] && exit 0
        exit 1
      fi
      sleep 0.1
    done
    echo "error: no reply to '$normalized' in $log within 5 s" >&2
    exit 1
    ;;
  *)
    echo "$usage" >&2
    exit 2
    ;;
esac
