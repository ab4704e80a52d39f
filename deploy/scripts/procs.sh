# Sourced: start and stop the project's Python processes in the background.
# Each process runs in its own session (so the whole group can be stopped), logs to
# .run/services/NAME.log and keeps its pid in .run/services/NAME.pid.
PROCS_DIR="$IKD_ROOT/.run/services"

proc_alive() {
  local pidfile="$PROCS_DIR/$1.pid"
  [[ -f "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

# proc_start NAME CMD... : start unless already running
proc_start() {
  local name=$1; shift
  mkdir -p "$PROCS_DIR"
  if proc_alive "$name"; then
    echo "$name: already running (pid $(cat "$PROCS_DIR/$name.pid"))"
    return 0
  fi
  setsid "$@" >>"$PROCS_DIR/$name.log" 2>&1 < /dev/null &
  echo $! > "$PROCS_DIR/$name.pid"
}

# proc_wait_http NAME URL [SECONDS] : wait until URL answers 200, or fail with the log's tail
proc_wait_http() {
  local name=$1 url=$2 seconds=${3:-60}
  local deadline=$((SECONDS + seconds))
  until curl -fsS -o /dev/null "$url" 2>/dev/null; do
    if ! proc_alive "$name"; then
      echo "$name: exited during start; last lines of $PROCS_DIR/$name.log:" >&2
      tail -n 30 "$PROCS_DIR/$name.log" >&2
      return 1
    fi
    if (( SECONDS > deadline )); then
      echo "$name: no answer from $url within ${seconds}s; last log lines:" >&2
      tail -n 30 "$PROCS_DIR/$name.log" >&2
      return 1
    fi
    sleep 0.3
  done
}

# proc_stop NAME : SIGTERM the process group, SIGKILL after 15 s
proc_stop() {
  local name=$1 pidfile="$PROCS_DIR/$1.pid" pid
  [[ -f "$pidfile" ]] || return 0
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  fi
  rm -f "$pidfile"
}

proc_stop_all() {
  local pidfile
  shopt -s nullglob
  for pidfile in "$PROCS_DIR"/*.pid; do
    proc_stop "$(basename "$pidfile" .pid)"
  done
  shopt -u nullglob
}
