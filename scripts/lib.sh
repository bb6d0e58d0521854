# shellcheck shell=bash
# The life of a throwaway server, shared by the server scripts (pg.sh,
# kafka-mock.sh, nats.sh, rabbitmq.sh, redis.sh), test-env.sh, demo.sh,
# test.sh and bench/run.sh, so that pid files, readiness waits and
# "stop gently, then kill" behave the same everywhere. Source it:
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# A server's life here:
#   check_startable  -> not running from this DIR already, its port is free
#   daemon_start     -> in the background, output to its log, pid in a pid file
#   wait_ready       -> a probe until it answers; else a clear error with the
#                       log's last lines, and nothing left running
#   stop_daemon      -> a signal (TERM), up to N s to exit, then SIGKILL;
#                       the pid file goes once the process is gone
# Messages go to stderr: a server script's stdout is its answer (a URL), which
# callers capture with $(...).
# Nothing here relies on `set -e`, since callers use these functions in
# `if` and `||`, where bash ignores it.

die() {
  echo "error: $*" >&2
  exit 1
}

# need PROGRAM PACKAGE: PROGRAM (a name on PATH, or a path) is there, or the
# script stops with the apt-get line that installs it.
need() {
  command -v "$1" >/dev/null 2>&1 || die "$1 not found; install it: apt-get install -y $2"
}

# absolute_dir DIR: creates DIR and prints its absolute path. Servers get
# absolute paths (they may change directory, and pid files are read from
# elsewhere).
absolute_dir() {
  mkdir -p "$1" && (cd "$1" && pwd)
}

# make_run_dir NAME: a fresh /tmp/NAME.XXXXXX for a run's servers, readable by
# all: PostgreSQL runs as the postgres user when we are root and must reach
# its directory inside.
make_run_dir() {
  local dir
  dir=$(mktemp -d "/tmp/$1.XXXXXX") && chmod 755 "$dir" && echo "$dir"
}

# --- pid files: one decimal pid on the first line (the format of
# PostgreSQL's postmaster.pid, RabbitMQ's pid file and ours).

pid_write() { echo "$2" >"$1"; }

# pid_read FILE: prints the pid in FILE; fails when there is none.
pid_read() {
  local pid=
  if [ -r "$1" ]; then
    IFS= read -r pid <"$1" || true  # a last line without a newline still counts
  fi
  [[ $pid =~ ^[0-9]+$ ]] && echo "$pid"
}

pid_remove() { rm -f "$1"; }

# pid_alive PID: the process exists and is not a zombie. kill -0 is not
# enough: a killed server whose parent has exited stays a zombie until
# something reaps it (in a container, maybe never), and a zombie holds no
# port and no file. Read from /proc, so procps need not be installed.
pid_alive() {
  local stat
  [[ ${1:-} =~ ^[0-9]+$ ]] || return 1
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  stat=${stat##*) }  # the state follows the command name, which may hold spaces
  [[ $stat != [ZX]* ]]
}

# running_pid FILE: prints the pid in FILE when that process is alive, the
# "is it running" check; fails otherwise.
running_pid() {
  local pid
  pid=$(pid_read "$1") && pid_alive "$pid" && echo "$pid"
}

# --- ports

# port_open PORT: something accepts connections on 127.0.0.1:PORT.
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# check_startable NAME PIDFILE PORT STOP_COMMAND: stops the script when NAME
# already runs from PIDFILE or when something else listens on PORT (empty:
# no port to check). Otherwise a readiness probe on PORT could be answered by
# the other server and the start would "succeed" while ours failed to bind.
check_startable() {
  local pid
  if pid=$(running_pid "$2"); then
    die "$1 already runs (pid $pid in $2); stop it first: $4"
  fi
  if [ -n "$3" ] && port_open "$3"; then
    die "port $3 is already in use, so $1 cannot listen on it; pick another one"
  fi
  return 0
}

# --- start and wait

# daemon_start PIDFILE LOG COMMAND...: runs COMMAND in the background, its
# output appended to LOG (kept across restarts, for post-mortems), stdin
# closed, immune to the hangup of the terminal that started it, and records
# its pid in PIDFILE. The pid is right as long as COMMAND execs the server
# (nohup, setsid and the servers' own wrappers do).
daemon_start() {
  local pidfile=$1 log=$2
  shift 2
  nohup "$@" >>"$log" 2>&1 </dev/null &
  pid_write "$pidfile" "$!"
}

# show_logs LOG...: the last lines of each log, on stderr, for an error.
show_logs() {
  local log
  for log in "$@"; do
    if [ -s "$log" ]; then
      echo "--- last lines of $log:" >&2
      tail -n 20 "$log" >&2
    else
      echo "--- $log is empty or missing" >&2
    fi
  done
}

# now_ms: milliseconds since the epoch ($SECONDS counts whole seconds from
# the script's start, which would cut a wait short by up to a second).
now_ms() {
  local t=${EPOCHREALTIME//[.,]/}  # microseconds; the separator follows the locale
  echo $((t / 1000))
}

# wait_ready NAME SECONDS PIDFILE LOG... -- PROBE...: runs PROBE (a command;
# its output is dropped) until it succeeds, while the process in PIDFILE is
# alive. Every 0.1 s, or $WAIT_INTERVAL s (for probes that are costly to
# run). When the process exits first, or PROBE has not succeeded within
# SECONDS, prints what happened, naming NAME and the LOGs with their last
# lines, stops the process (TERM, then KILL after 5 s) and fails: a failed
# start leaves nothing running and no pid file.
wait_ready() {
  local name=$1 seconds=$2 pidfile=$3 logs=() deadline
  shift 3
  while [ $# -gt 0 ] && [ "$1" != -- ]; do
    logs+=("$1")
    shift
  done
  [ $# -gt 1 ] || { echo "wait_ready: no probe after --" >&2; return 2; }
  shift
  deadline=$(($(now_ms) + seconds * 1000))
  while true; do
    if ! running_pid "$pidfile" >/dev/null; then
      echo "error: $name exited during startup" >&2
      show_logs "${logs[@]}"
      pid_remove "$pidfile"
      return 1
    fi
    if "$@" >/dev/null 2>&1; then
      return 0
    fi
    if [ "$(now_ms)" -ge "$deadline" ]; then
      echo "error: $name did not become ready within $seconds s (waited for: $*); stopping it" >&2
      show_logs "${logs[@]}"
      stop_daemon "$name" "$pidfile" 5 || true
      return 1
    fi
    sleep "${WAIT_INTERVAL:-0.1}"
  done
}

# --- stop

# wait_exit PID SECONDS: waits up to SECONDS for PID to be gone.
wait_exit() {
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    pid_alive "$1" || return 0
    sleep 0.1
  done
  ! pid_alive "$1"
}

# stop_process NAME PID SECONDS [SIGNAL]: sends SIGNAL (TERM: a clean
# shutdown; KILL: a crash, for fault tests; 0: none, the server was asked to
# stop another way) and waits up to SECONDS for the exit; a process still
# there then gets SIGKILL, with a warning. Succeeds when the process was gone
# in time (or was not running); fails when it had to be killed, or survived
# even that.
stop_process() {
  local name=$1 pid=$2 seconds=$3 signal=${4:-TERM} after
  pid_alive "$pid" || return 0
  kill -s "$signal" "$pid" 2>/dev/null || true
  wait_exit "$pid" "$seconds" && return 0
  after=" of SIG$signal"
  [ "$signal" != 0 ] || after=""
  echo "warning: $name (pid $pid) did not exit within $seconds s$after; killing it (SIGKILL)" >&2
  kill -s KILL "$pid" 2>/dev/null || true
  wait_exit "$pid" 5 || echo "error: $name (pid $pid) survived SIGKILL" >&2
  return 1
}

# stop_daemon NAME PIDFILE SECONDS [SIGNAL]: stop_process on the pid in
# PIDFILE, then removes PIDFILE unless the process somehow lives on. Not
# running is not an error (stop is idempotent). Fails like stop_process.
stop_daemon() {
  local pid status=0
  if pid=$(running_pid "$2"); then
    stop_process "$1" "$pid" "$3" "${4:-TERM}" || status=1
  fi
  running_pid "$2" >/dev/null || pid_remove "$2"
  return "$status"
}
