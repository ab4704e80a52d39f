# Sourced: run the services of `make up` under supervisord (PyPI `supervisor`, installed by the
# workspace), which restarts any of them that exits or is killed. One supervisord per checkout:
# its config, socket, pid file and the services' logs live in .run/services/.
#
#   sv_program NAME CMD...   add a program to the config being written
#   sv_apply                 start supervisord with that config, or, when it already runs, load
#                            the config (changed programs restart, unchanged ones are reused) and
#                            start whatever is stopped
#   sv_wait_http NAME URL [SECONDS]   wait until URL answers 2xx; fail early if NAME gave up
#   sv_ctl ARGS...           supervisorctl on our socket
#   sv_shutdown              stop every program (whole process groups) and supervisord itself
SV_DIR="$IKD_ROOT/.run/services"
SV_CONF="$SV_DIR/supervisord.conf"
SV_PIDFILE="$SV_DIR/supervisord.pid"
SV_PROGRAMS=""

sv_ctl() {
  supervisorctl -c "$SV_CONF" "$@"
}

sv_pid() {  # supervisord's pid if ours runs
  local pid
  [[ -f "$SV_PIDFILE" ]] || return 1
  pid=$(cat "$SV_PIDFILE")
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null &&
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$SV_CONF" || return 1
  echo "$pid"
}

sv_program() {  # NAME CMD...
  local name=$1 word command=""
  shift
  for word in "$@"; do command+=" $(printf '%q' "$word")"; done
  # supervisord expands %(name)s in its config: a literal % is written %%.
  command=${command//%/%%}
  SV_PROGRAMS+="
[program:$name]
command=${command# }
directory=$IKD_ROOT
autostart=true
; Restarted whenever it exits, however it exits; a process that dies within startsecs is
; retried with a growing delay (1 s, 2 s, 3 s, ...) up to startretries times.
autorestart=true
startsecs=2
startretries=100
stopsignal=TERM
stopwaitsecs=20
stopasgroup=true
killasgroup=true
redirect_stderr=true
stdout_logfile=$SV_DIR/$name.log
stdout_logfile_maxbytes=50MB
stdout_logfile_backups=2
"
}

sv_write_conf() {
  mkdir -p "$SV_DIR"
  (
    umask 077  # the commands carry development secrets
    cat >"$SV_CONF.new" <<EOF
; Written by deploy/scripts/up.sh on every \`make up\`; edits are overwritten.
[supervisord]
logfile=$SV_DIR/supervisord.log
logfile_maxbytes=10MB
pidfile=$SV_PIDFILE
identifier=ikd-$(printf '%s' "$IKD_ROOT" | sha256sum | cut -c1-12)
directory=$IKD_ROOT
childlogdir=$SV_DIR

[unix_http_server]
file=$SV_DIR/supervisor.sock
chmod=0700

[rpcinterface:supervisor]
supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface

[supervisorctl]
serverurl=unix://$SV_DIR/supervisor.sock
$SV_PROGRAMS
EOF
  )
  mv "$SV_CONF.new" "$SV_CONF"
}

sv_apply() {
  sv_write_conf
  if sv_pid >/dev/null; then
    echo "supervisord (pid $(sv_pid)): loaded the programs; those already running are reused"
    sv_ctl update >/dev/null
    sv_ctl start all 2>/dev/null | grep -v "already started" || true
  else
    # 9>&-: supervisord must not hold a start/stop lock of the platform scripts.
    supervisord -c "$SV_CONF" 9>&-
    local i
    for i in $(seq 1 50); do sv_pid >/dev/null && return 0; sleep 0.1; done
    echo "supervisord did not start; see $SV_DIR/supervisord.log" >&2
    return 1
  fi
}

sv_wait_http() {  # NAME URL [SECONDS]
  local name=$1 url=$2 seconds=${3:-120}
  local deadline=$((SECONDS + seconds))
  until curl -fsS -o /dev/null "$url" 2>/dev/null; do
    if sv_ctl status "$name" 2>/dev/null | grep -q ' FATAL '; then
      echo "$name: gave up starting; last lines of $SV_DIR/$name.log:" >&2
      tail -n 30 "$SV_DIR/$name.log" >&2
      return 1
    fi
    if ((SECONDS > deadline)); then
      echo "$name: no answer from $url within ${seconds}s; last log lines:" >&2
      tail -n 30 "$SV_DIR/$name.log" >&2
      return 1
    fi
    sleep 0.3
  done
}

sv_shutdown() {
  local pid
  pid=$(sv_pid) || return 0
  sv_ctl shutdown >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
  # supervisord stops every program (TERM to its group, KILL after stopwaitsecs), then exits;
  # the whole MPP's 80 programs on a loaded machine take more than a minute.
  for _ in $(seq 1 1800); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$pid" 2>/dev/null; then
    echo "supervisord (pid $pid) still runs after 180 s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$SV_PIDFILE"
}
