#!/usr/bin/env bash
# Check, under `make up`, that the platform heals by itself. Exits non-zero on any failure.
#
#   1. crashes: SIGKILL each supervised process in turn (identity, audit, its signer and witness,
#      every gateway's API and worker, the webhook receiver) and require it to be ready again within RECOVERY_LIMIT
#      seconds (default 30) with nobody running a command (ready: its /readyz or /healthz
#      answers; a worker's metrics answer and its log says the faust worker is ready); while a
#      gateway's worker is down its API must keep answering.
#   2. broker outage: stop Kafka for OUTAGE_SECONDS (default 30), start it again, wait until the
#      services are ready and the outage is over in their logs, and require the services' logs
#      to have grown by at most LOG_LINE_LIMIT lines (default 300) in all.
#
# Usage: deploy/scripts/check-recovery.sh [crashes|outage|all]   (default all)
set -euo pipefail
source "$(dirname "$0")/env.sh"
source "$(dirname "$0")/services.sh"
source "$(dirname "$0")/supervise.sh"
cd "$IKD_ROOT"
RECOVERY_LIMIT=${RECOVERY_LIMIT:-30}
OUTAGE_SECONDS=${OUTAGE_SECONDS:-30}
LOG_LINE_LIMIT=${LOG_LINE_LIMIT:-300}
what=${1:-all}
failures=0

fail() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
answers() { curl -fsS -o /dev/null --max-time 2 "$1" 2>/dev/null; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

supervisord_pid=$(sv_pid) || { echo "nothing runs under supervisord here: run \`make up\` first" >&2; exit 2; }

# Every supervised program and the URL that answers once it is ready.
declare -A ready_url=(
  [identity]="http://127.0.0.1:$IDENTITY_PORT/readyz"
  [audit]="http://127.0.0.1:$AUDIT_PORT/readyz"
  [signer]="http://127.0.0.1:$SIGNER_PORT/readyz"
  [witness]="http://127.0.0.1:$WITNESS_PORT/healthz"
  [webhook-receiver]="http://127.0.0.1:$RECEIVER_PORT/healthz"
)
# ... and, for a worker, the line of its log that says it has joined its group and consumes.
declare -A ready_line=()
programs=(identity audit signer witness)
for agency in $IKD_DEMO_AGENCIES; do
  ready_line[gateway-$agency-worker]='Worker]: Ready' 
  ready_url[gateway-$agency-api]="http://127.0.0.1:$(gateway_port "$agency")/readyz"
  ready_url[gateway-$agency-worker]="http://127.0.0.1:$(worker_metrics_port "$agency")/metrics"
  programs+=("gateway-$agency-api" "gateway-$agency-worker")
done
programs+=(webhook-receiver)

all_ready() {
  local program
  for program in "${programs[@]}"; do answers "${ready_url[$program]}" || return 1; done
}

wait_all_ready() {  # SECONDS
  local deadline=$((SECONDS + $1))
  until all_ready; do
    ((SECONDS < deadline)) || return 1
    sleep 0.5
  done
}

check_crashes() {
  local program pid new started api api_misses took lines
  wait_all_ready 120 || { fail "not every service is ready before the test"; return; }
  for program in "${programs[@]}"; do
    pid=$(sv_ctl pid "$program")
    # Only a child of our own supervisord is ever killed.
    if [[ ! "$pid" =~ ^[0-9]+$ ]] || [[ "$(ps -o ppid= -p "$pid" | tr -d ' ')" != "$supervisord_pid" ]]; then
      fail "$program: no running process of ours (supervisorctl pid said '$pid')"
      continue
    fi
    api=""
    api_misses=0
    [[ $program == *-worker ]] && api=${ready_url[${program%-worker}-api]/readyz/healthz}
    lines=$(wc -l <"$SV_DIR/$program.log")
    kill -KILL "$pid"
    started=$(now)
    while :; do
      new=$(sv_ctl pid "$program" 2>/dev/null || true)
      if [[ "$new" =~ ^[0-9]+$ && "$new" != 0 && "$new" != "$pid" ]] && answers "${ready_url[$program]}" &&
        { [[ -z "${ready_line[$program]:-}" ]] ||
          tail -n "+$((lines + 1))" "$SV_DIR/$program.log" | grep -qF -- "${ready_line[$program]}"; }; then
        break
      fi
      if [[ -n $api ]] && ! answers "$api"; then api_misses=$((api_misses + 1)); fi
      if awk -v t="$(since "$started")" -v l="$RECOVERY_LIMIT" 'BEGIN { exit !(t > l) }'; then
        fail "$program: not ready again within ${RECOVERY_LIMIT}s after kill -9 of pid $pid"
        tail -n 20 "$SV_DIR/$program.log" >&2
        continue 2
      fi
      sleep 0.2
    done
    took=$(since "$started")
    printf '%-36s kill -9 pid %-7s -> pid %-7s ready again in %5ss' "$program" "$pid" "$new" "$took"
    if awk -v t="$took" -v l="$RECOVERY_LIMIT" 'BEGIN { exit !(t > l) }'; then
      fail "$program: ready again only after ${took}s (limit ${RECOVERY_LIMIT}s)"
    fi
    if [[ -n $api ]]; then
      printf ' (its API missed %d of the health checks meanwhile)' "$api_misses"
      ((api_misses == 0)) || fail "$program: the gateway's API stopped answering while its worker restarted"
    fi
    printf '\n'
  done
}

log_lines() {
  local program total=0 n
  for program in "${programs[@]}"; do
    n=$(wc -l <"$SV_DIR/$program.log")
    total=$((total + n))
    printf '%s=%s ' "$program" "$n"
  done
  printf 'total=%s\n' "$total"
}

check_outage() {
  # Stopping the broker is only for a checkout's own platform, never for a shared one.
  if [[ -L "$IKD_ROOT/.run" ]]; then
    fail "outage: .run is a link to a shared runtime; not stopping its broker"
    return
  fi
  wait_all_ready 120 || { fail "outage: not every service is ready before the outage"; return; }
  local before after started
  before=$(log_lines)
  started=$(now)
  bash deploy/scripts/kafka.sh stop
  echo "broker stopped; waiting ${OUTAGE_SECONDS}s"
  sleep "$OUTAGE_SECONDS"
  bash deploy/scripts/kafka.sh start
  echo "broker back after $(since "$started")s"
  wait_all_ready 120 || fail "outage: not every service is ready again within 120 s of the broker"
  # The filter writes its "recovered" line once the clients have been quiet for 15 s.
  sleep 20
  after=$(log_lines)
  local program b a total=0 delta
  for program in "${programs[@]}"; do
    b=$(sed -E "s/.*(^| )$program=([0-9]+).*/\\2/" <<<"$before")
    a=$(sed -E "s/.*(^| )$program=([0-9]+).*/\\2/" <<<"$after")
    delta=$((a - b))
    total=$((total + delta))
    printf '%-36s +%s log lines\n' "$program" "$delta"
  done
  echo "log lines written during the ${OUTAGE_SECONDS}s outage and its recovery: $total (limit $LOG_LINE_LIMIT)"
  ((total <= LOG_LINE_LIMIT)) || fail "outage: the services logged $total lines (limit $LOG_LINE_LIMIT)"
}

echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) CPUs"
case $what in
  crashes) check_crashes ;;
  outage) check_outage ;;
  all) check_crashes; check_outage ;;
  *) echo "usage: $0 [crashes|outage|all]" >&2; exit 2 ;;
esac
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
if ((failures)); then
  echo "check-recovery: $failures failure(s)" >&2
  exit 1
fi
echo "check-recovery: passed"
