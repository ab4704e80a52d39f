# shellcheck shell=bash
# Shared helpers for deploy/scripts/*.sh. Source it; do not execute it.
#
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Provides IKD_ROOT (the repository root), IKD_RUN (the git-ignored runtime
# folder .run/ at the root) and small functions: log, die, have, wait_for,
# take_lock, pid_alive, port_open, file_hash, regex_escape.
# The caller sets LOG_TAG (e.g. "kafka") before calling log/die.

if [[ -n "${_IKD_LIB_SH:-}" ]]; then
  return 0
fi
_IKD_LIB_SH=1

IKD_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
IKD_RUN="${IKD_ROOT}/.run"
export IKD_ROOT IKD_RUN

# log MESSAGE... : one status line on stderr, tagged with the script name.
log() {
  printf '%s: %s\n' "${LOG_TAG:-ikd}" "$*" >&2
}

# die MESSAGE... : log and exit 1.
die() {
  log "error: $*"
  exit 1
}

# have COMMAND : is COMMAND on PATH (or a function/builtin)?
have() {
  command -v "$1" >/dev/null 2>&1
}

# now_ms : wall clock in milliseconds (bash 5 EPOCHREALTIME, no fork).
now_ms() {
  local t="${EPOCHREALTIME/[.,]/}"
  printf '%s\n' "$((t / 1000))"
}

# wait_for SECONDS INTERVAL COMMAND [ARGS...]
#   Run COMMAND every INTERVAL seconds until it succeeds (return 0) or
#   SECONDS have elapsed (return 1). COMMAND may return 2 to give up early
#   (e.g. the process being waited for died); wait_for then returns 2.
wait_for() {
  local timeout="$1" interval="$2"
  shift 2
  local deadline rc
  deadline=$(($(now_ms) + ${timeout%.*} * 1000))
  while :; do
    rc=0
    "$@" || rc=$?
    if ((rc == 0)); then
      return 0
    elif ((rc == 2)); then
      return 2
    fi
    if (($(now_ms) >= deadline)); then
      return 1
    fi
    sleep "$interval"
  done
}

# take_lock NAME : serialise start/stop of one server across concurrent
# callers (parallel test runs, several terminals). Holds .run/NAME.lock on
# fd 9 until the script exits.
take_lock() {
  mkdir -p "$IKD_RUN"
  exec 9>"${IKD_RUN}/$1.lock"
  if ! flock -n 9; then
    log "waiting for another $1 start/stop to finish"
    flock -w 180 9 || die "timed out waiting for ${IKD_RUN}/$1.lock"
  fi
}

# pid_alive PID : is there a live (non-zombie) process with this pid?
pid_alive() {
  local pid="$1" state
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  if [[ -r "/proc/$pid/stat" ]]; then
    state="$(cut -d' ' -f3 "/proc/$pid/stat" 2>/dev/null || true)"
    [[ "$state" != "Z" ]] || return 1
  fi
  return 0
}

# pid_cmdline PID : the process's command line, arguments joined by spaces.
pid_cmdline() {
  tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null || true
}

# port_open HOST PORT : does something accept TCP connections there?
port_open() {
  local host="$1" port="$2"
  # shellcheck disable=SC2016 # $1/$2 are expanded by the inner bash
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$host" "$port" 2>/dev/null
}

# file_hash FILE... : one sha256 over the given files' contents.
file_hash() {
  cat -- "$@" | sha256sum | cut -d' ' -f1
}

# regex_escape STRING : STRING with ERE metacharacters escaped (for pgrep -f).
regex_escape() {
  # shellcheck disable=SC2001
  sed 's#[][\.*^$+?(){}|]#\\&#g' <<<"$1"
}
