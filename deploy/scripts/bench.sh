#!/usr/bin/env bash
# `make bench`: measure the design brief's targets on this machine and write docs/BENCHMARKS.md
# and docs/benchmarks.json (see bench/README.md).
#
# The services run as `make up` runs them (same scripts, same commands), but as a separate copy
# so the numbers do not depend on demo data and a running demo is left alone:
#   - fresh databases ikd_bench_identity, ikd_bench_audit, ikd_gateway_bench_<agency>
#     (dropped and re-created, then migrated), dropped again at the end;
#   - a fresh topic prefix bench-<time>. (topics deleted at the end) and its own audit group;
#   - the three demo gateways under the codes bench-<agency>, from a copy of the MPP policy that
#     differs only in those codes: a gateway's consumer group is derived from its agency code,
#     so the same code would join a running demo's group;
#   - ports 28000 (identity), 28010 (audit), 28030 (signer), 28100.. (gateways), i.e. make
#     up's + 10000;
#     logs in .run/bench/services/;
#   - on the secured bus as the services run there: identity and audit as their principals,
#     each bench gateway as gateway-bench-<agency> (passwords in .run/bench/kafka/), under the
#     run's ACLs (granted at the start, deleted at the end); Kafka's producer benchmark with
#     the same TLS and SCRAM settings (bench/kafka_ceiling.py).
# Kafka and PostgreSQL are started if they are not running, and stopped again at the end only
# then. Settings: BENCH_QUICK=1 (short runs to check the harness), BENCH_RUNS (repeats of each
# measurement, default 3), BENCH_API_WORKERS (API processes per gateway, default 1),
# BENCH_IDENTITY_WORKERS (identity API processes, one active relay among them), BENCH_KEEP=1
# (keep the services, databases and topics afterwards), BENCH_OUT (default docs/; the report
# replaces only the part of BENCHMARKS.md between its marker comments), BENCH_ONLY=a,b (only
# these sections, see bench/README.md), BENCH_BACKFILL_CITIZENS (citizens per backfill run).
# The scaling section (bench/scaling.py) starts extra worker processes and restarts a gateway and
# identity with more API processes itself, each under a pid file here, so the clean-up stops them.
set -euo pipefail
source "$(dirname "$0")/env.sh"
source "$(dirname "$0")/procs.sh"
IKD_PORT_BASE=$((${IKD_PORT_BASE:-18000} + 10000))  # beside a running demo
unset IKD_IDENTITY_URL IKD_AUDIT_URL IKD_GATEWAY_BASE_PORT
source "$(dirname "$0")/services.sh"
cd "$IKD_ROOT"
scripts=deploy/scripts
started_at=$SECONDS

BENCH_DIR="$IKD_ROOT/.run/bench"
PROCS_DIR="$BENCH_DIR/services"
DEMO_AGENCIES=$IKD_DEMO_AGENCIES
BENCH_AGENCIES=""
for agency in $IKD_DEMO_AGENCIES; do BENCH_AGENCIES+="bench-$agency "; done
BENCH_AGENCIES=${BENCH_AGENCIES% }
IKD_DEMO_AGENCIES=$BENCH_AGENCIES  # gateway_port() numbers these
export IKD_KAFKA_TOPIC_PREFIX="bench-$(date +%s)."
BENCH_POLICY="$BENCH_DIR/policy.yaml"
BENCH_KAFKA="$BENCH_DIR/kafka"
BENCH_AUDIT_GROUP="ikd-audit-${IKD_KAFKA_TOPIC_PREFIX%.}"
mkdir -p "$BENCH_DIR"
# Load average before anything of ours runs: other work on the machine shows up in the numbers.
read -r load_before _ < /proc/loadavg

platform_started=()
cleanup() {
  local status=$?
  trap - EXIT INT TERM
  if [[ -z "${BENCH_KEEP:-}" ]]; then
    echo "bench: stopping the bench services, deleting bench topics and databases"
    proc_stop_all
    python -m bench.cleanup --prefix "$IKD_KAFKA_TOPIC_PREFIX" || true
    python -m bench.bus release --prefix "$IKD_KAFKA_TOPIC_PREFIX" \
      --agencies "$BENCH_AGENCIES" --audit-group "$BENCH_AUDIT_GROUP" || true
    for db in $(bench_databases); do drop_db "$db"; done
  else
    echo "bench: BENCH_KEEP set; services still run (logs in $PROCS_DIR)"
  fi
  for (( i=${#platform_started[@]}-1; i>=0; i-- )); do
    bash "$scripts/${platform_started[$i]}.sh" stop || true
  done
  echo "bench: took $((SECONDS - started_at)) s"
  exit "$status"
}
trap cleanup EXIT INT TERM

bench_databases() {
  echo bench_identity bench_audit
  for agency in $BENCH_AGENCIES; do echo "gateway_${agency//-/_}"; done
}

drop_db() {  # NAME
  bash "$scripts/postgres.sh" psql -q -c "DROP DATABASE IF EXISTS ikd_$1 WITH (FORCE)" >/dev/null
}

bench_identity_env() {
  # identity decides relationships with the same (renamed) policy as the bench's gateways
  echo "$(identity_env bench_identity)" IKD_IDENTITY_TOKEN_TTL_S=3600 IKD_IDENTITY_LOG_LEVEL=WARNING \
    IKD_IDENTITY_POLICY_FILE="$BENCH_POLICY" IKD_IDENTITY_API_WORKERS="${BENCH_IDENTITY_WORKERS:-1}"
}

bench_audit_env() {
  echo "$(audit_env bench_audit)" IKD_AUDIT_CONSUMER_GROUP="$BENCH_AUDIT_GROUP" \
    IKD_AUDIT_LOG_VKEY="@$BENCH_DIR/log.vkey"
}

bench_gateway_env() {  # AGENCY (the secrets below replace gateway_env's: env's last wins)
  echo "$(gateway_env "$1")" \
    IKD_KAFKA_PASSWORD="@$BENCH_KAFKA/gateway-$1.password" \
    IKD_GATEWAY_IDENTITY_CLIENT_SECRET="@$BENCH_DIR/gateway-client.secret" \
    IKD_GATEWAY_POLICY_FILE="$BENCH_POLICY" \
    IKD_GATEWAY_DATA_DIR="$BENCH_DIR/gateway/$1" \
    IKD_GATEWAY_API_WORKERS="${BENCH_API_WORKERS:-1}"
}

bus_answers() {  # a broker started from another checkout (its pid file names that path)
  local first=${IKD_KAFKA_BOOTSTRAP_SERVERS%%,*}
  # shellcheck disable=SC2016 # $1/$2 are expanded by the inner bash
  [[ $1 == kafka ]] && timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "${first%:*}" "${first##*:}" 2>/dev/null
}
for part in kafka postgres; do
  if ! bash "$scripts/$part.sh" status >/dev/null 2>&1 && ! bus_answers "$part"; then
    bash "$scripts/$part.sh" start
    platform_started+=("$part")
  fi
done

if ! command -v wrk >/dev/null 2>&1; then
  if [[ $(id -u) -eq 0 ]]; then
    echo "bench: installing wrk (apt-get), the prefill load generator"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk) >/dev/null
  else
    echo "bench: wrk is missing (Debian: apt-get install wrk); the prefill benchmark is skipped" >&2
  fi
fi

# Leftovers of an earlier bench (BENCH_KEEP=1 or an interrupted run): its services and topics.
# Only one bench runs at a time (fixed ports), so every bench- topic is an earlier run's.
proc_stop_all
rm -f "$PROCS_DIR"/*.log
python -m bench.cleanup --prefix bench-

echo "bench: fresh databases, topics with prefix $IKD_KAFKA_TOPIC_PREFIX"
python -m bench.policy deploy/policies/mpp-kabupaten-cirebon.yaml "$BENCH_POLICY" \
  --rename "$DEMO_AGENCIES"
for db in $(bench_databases); do
  drop_db "$db"
  bash "$scripts/postgres.sh" ensure-db "$db" 2>/dev/null
done
ikdctl db migrate services/identity/migrations "$(pg_url owner bench_identity)"
ikdctl db migrate services/audit/src/ikd_audit/migrations "$(pg_url owner bench_audit)"
env $(signer_env bench_audit) ikd-audit vkey >"$BENCH_DIR/log.vkey"
for agency in $BENCH_AGENCIES; do
  ikdctl db migrate services/agency_gateway/migrations "$(pg_url owner "gateway_$agency")"
done
ikdctl topics ensure --prefix "$IKD_KAFKA_TOPIC_PREFIX" --agencies "$IKD_DEMO_AGENCIES"
# The bench gateways' own principals (gateway-bench-<agency>): passwords of their own, kept
# for later runs; their users and the run's ACLs as an operator would create them.
mkdir -p "$BENCH_KAFKA"
for agency in $BENCH_AGENCIES; do
  secret_file="$BENCH_KAFKA/gateway-$agency.password"
  [[ -s $secret_file ]] || (umask 077 && python -c 'import secrets; print(secrets.token_urlsafe(24))' >"$secret_file")
done
ikdctl kafka users apply --credentials-dir "$BENCH_KAFKA"
ikdctl kafka acls apply --prefix "$IKD_KAFKA_TOPIC_PREFIX" --agencies "$IKD_DEMO_AGENCIES" \
  --audit-group "$BENCH_AUDIT_GROUP"

echo "bench: registering clients"
secret=$IKD_DEMO_CLIENT_SECRET
add_client() {
  printf '%s' "$secret" | env $(bench_identity_env) ikd-identity clients add --secret-file - "$@" >/dev/null
}
set -- $BENCH_AGENCIES
add_client --id counter-polres --scopes identity:verify --agency "$1"
add_client --id dukcapil-feed --scopes identity:feed
add_client --id mpp-officer --scopes identity:consent --agency dpmptsp-cirebon --serves "$BENCH_AGENCIES"
(umask 077 && printf '%s\n' "$secret" >"$BENCH_DIR/gateway-client.secret")
for agency in $BENCH_AGENCIES; do
  add_client --id "backend-$agency" --scopes "gateway:prefill gateway:registrations" \
    --agency "$agency"
  # The gateway registers the bench's citizens at identity with a client of its own.
  add_client --id "gateway-$agency" --scopes identity:register --agency "$agency"
done

echo "bench: starting services"
proc_start identity env $(bench_identity_env) ikd-identity serve
proc_start audit env $(bench_audit_env) ikd-audit serve
proc_start signer env -u IKD_KAFKA_USERNAME -u IKD_KAFKA_PASSWORD $(signer_env bench_audit) \
  ikd-audit signer
for agency in $BENCH_AGENCIES; do
  proc_start "gateway-$agency" env $(bench_gateway_env "$agency") ikd-gateway serve
done
proc_wait_http identity "http://127.0.0.1:$IDENTITY_PORT/healthz"
proc_wait_http audit "http://127.0.0.1:$AUDIT_PORT/healthz"
proc_wait_http signer "http://127.0.0.1:$SIGNER_PORT/healthz"
for agency in $BENCH_AGENCIES; do
  proc_wait_http "gateway-$agency" "http://127.0.0.1:$(gateway_port "$agency")/readyz" 90
done

gateways=()
for agency in $BENCH_AGENCIES; do
  gateways+=("$agency=http://127.0.0.1:$(gateway_port "$agency")")
done
pg_super="postgresql://postgres:${IKD_PG_SUPERUSER_PASSWORD}@127.0.0.1:${PG_PORT}"
echo "bench: measuring (setup took $((SECONDS - started_at)) s)"
python -m bench.run \
  --identity "http://127.0.0.1:$IDENTITY_PORT" \
  --audit-dsn "$pg_super/ikd_bench_audit" \
  --identity-dsn "$pg_super/ikd_bench_identity" \
  --gateway-dsn-template "$pg_super/ikd_gateway_{db}" \
  --gateways "${gateways[*]}" \
  --topic-prefix "$IKD_KAFKA_TOPIC_PREFIX" \
  --bootstrap "$IKD_KAFKA_BOOTSTRAP_SERVERS" \
  --issuer-key "$DEV_KEYS/dukcapil-issuer.pem" \
  --load-before "$load_before" \
  --api-workers "${BENCH_API_WORKERS:-1}" \
  --identity-workers "${BENCH_IDENTITY_WORKERS:-1}" \
  --setup-seconds "$((SECONDS - started_at))" \
  --out "${BENCH_OUT:-docs}"
