#!/usr/bin/env bash
# `make up`: the platform, the services of the demo, demo clients and citizens; then where to look.
# A second run reuses whatever already runs.
set -euo pipefail
source "$(dirname "$0")/env.sh"
source "$(dirname "$0")/supervise.sh"
source "$(dirname "$0")/services.sh"
cd "$IKD_ROOT"
started=$SECONDS

bash deploy/scripts/platform.sh start

echo "registering demo clients"
secret=$IKD_DEMO_CLIENT_SECRET
# Secrets go in on standard input, never as arguments (`ps` shows those to every user).
add_client() {
  printf '%s' "$secret" | env $(identity_env) ikd-identity clients add --secret-file - "$@" >/dev/null
}
add_client --id counter-polres --scopes identity:verify --agency polres-cirebon
# the MPP's front desk: the citizen shows the IKD once and names the services at any agencies
add_client --id mpp-reception --scopes identity:verify --agency mpp-kabupaten-cirebon
add_client --id dukcapil-feed --scopes identity:feed
# The MPP's officer desk records consents (with the citizen's credential) for the demo agencies.
add_client --id mpp-officer --scopes identity:consent --agency dpmptsp-cirebon --serves "$IKD_DEMO_AGENCIES"
add_client --id auditor-demo --scopes audit:read
# Each demo agency onboarded as an operator would: topic, Kafka principal, ACLs, OAuth clients
# backend-<code> and gateway-<code>; new credentials on every run, in one file each (mode 600):
# <code>.env for the backend, <code>.gateway-secret for its gateway (services.sh gateway_env).
agency_creds="$DEV_KEYS/agencies"
mkdir -p "$agency_creds" && chmod 700 "$agency_creds"
onboard() {  # AGENCY
  IKD_IDENTITY_MIGRATION_DATABASE_URL="$(pg_url owner identity)" \
    ikdctl agencies onboard "$1" --out "$agency_creds/$1.env"
}
# A few at once: each is mostly a Python start and round trips, and the whole MPP has 37.
for agency in $IKD_DEMO_AGENCIES; do
  while (($(jobs -rp | wc -l) >= 4)); do wait -n; done  # a failed one stops make up (set -e)
  onboard "$agency" &
done
while (($(jobs -rp | wc -l) > 0)); do wait -n; done
# The log's verifier key (from the signer's key, which only the signer reads) and the demo
# witness's, exchanged out of band as two organisations would: the service and the witness
# know the log by this key, the log keeps this witness's cosignatures.
env $(signer_env) ikd-audit vkey >"$DEV_KEYS/log.vkey"
printf '%s' "$secret" | env $(audit_env) ikd-audit auditors add --id auditor-demo --secret-file - >/dev/null
mkdir -p .run/witness
env $(witness_env) ikd-audit witness vkey >"$DEV_KEYS/witness.vkey"

echo "starting services (supervised: restarted whenever they exit)"
services_started=$SECONDS
sv_program identity env $(identity_env) ikd-identity serve
sv_program audit env $(audit_env) ikd-audit serve
# the signer: its own role and key file, and none of the scripts' admin credentials
sv_program signer env -u IKD_KAFKA_USERNAME -u IKD_KAFKA_PASSWORD $(signer_env) ikd-audit signer
sv_program witness env $(witness_env) ikd-audit witness serve
# The core first: the gateways fetch identity's token keys, and with the whole MPP's 74
# gateway processes starting beside it identity would take minutes to answer on two cores.
sv_apply
sv_wait_http identity "http://127.0.0.1:$IDENTITY_PORT/healthz"
sv_wait_http audit "http://127.0.0.1:$AUDIT_PORT/healthz"
sv_wait_http signer "http://127.0.0.1:$SIGNER_PORT/healthz"
sv_wait_http witness "http://127.0.0.1:$WITNESS_PORT/healthz"
for agency in $IKD_DEMO_AGENCIES; do
  # API and worker as two programs: either restarts alone while the other keeps running.
  sv_program "gateway-$agency-api" env $(gateway_env "$agency") ikd-gateway api
  sv_program "gateway-$agency-worker" env $(gateway_env "$agency") ikd-gateway worker
done
sv_apply
# They all start at once and share two cores: the first may answer only once most have started.
gateway_wait=$((120 + 6 * $(wc -w <<<"$IKD_DEMO_AGENCIES")))
for agency in $IKD_DEMO_AGENCIES; do
  sv_wait_http "gateway-$agency-api" "http://127.0.0.1:$(gateway_port "$agency")/readyz" "$gateway_wait"
  sv_wait_http "gateway-$agency-worker" "http://127.0.0.1:$(worker_metrics_port "$agency")/metrics" \
    "$gateway_wait"
done
echo "ready: $(wc -w <<<"$IKD_DEMO_AGENCIES") gateways and the core services $((SECONDS - services_started)) s" \
  "after their start, $((SECONDS - started)) s after make up began"

echo "seeding the demo"
ikdctl demo seed \
  --webhook-agency "$IKD_DEMO_WEBHOOK_AGENCY" --webhook-service "$IKD_DEMO_WEBHOOK_SERVICE" \
  --webhook-url "http://127.0.0.1:$RECEIVER_PORT/webhooks/ikd" \
  --webhook-secret-file "$DEV_KEYS/webhook-secret" --citizens "$IKD_DEMO_CITIZENS"
# The receiver needs the secret the seed wrote; it stands for an agency's side, so it gets none
# of the operator's Kafka credentials that env.sh exported for the scripts.
sv_program webhook-receiver env -u IKD_KAFKA_USERNAME -u IKD_KAFKA_PASSWORD \
  IKD_GATEWAY_RECEIVER_SECRET="$(cat "$DEV_KEYS/webhook-secret")" \
  ikd-gateway example-receiver --port "$RECEIVER_PORT"
sv_apply
sv_wait_http webhook-receiver "http://127.0.0.1:$RECEIVER_PORT/healthz"

ikdctl status
cat <<EOT

The IKD MPP platform is up (development settings; \`make down\` stops everything).
  Kafka $(bash deploy/scripts/kafka.sh version) on 127.0.0.1:$KAFKA_PORT
  PostgreSQL $(bash deploy/scripts/postgres.sh version) on 127.0.0.1:$PG_PORT
  identity API        http://127.0.0.1:$IDENTITY_PORT/docs
  audit API           http://127.0.0.1:$AUDIT_PORT/docs
  audit console       http://127.0.0.1:$AUDIT_PORT/console  (auditor-demo / $secret)
  public checkpoint   http://127.0.0.1:$AUDIT_PORT/v1/log/checkpoint  (vkey: .run/dev/log.vkey)
  tree-head signer    http://127.0.0.1:$SIGNER_PORT/metrics  (the only holder of .run/dev/tree-head.pem)
  witness             http://127.0.0.1:$WITNESS_PORT/checkpoint  (alarms: /v1/alarms)
$(for agency in $IKD_DEMO_AGENCIES; do printf '  gateway %-16s http://127.0.0.1:%s/docs\n' "$agency" "$(gateway_port "$agency")"; done)
  webhook receiver    http://127.0.0.1:$RECEIVER_PORT  (pushes from $IKD_DEMO_WEBHOOK_AGENCY)
  agency credentials  .run/dev/agencies/<code>.env  (Kafka + OAuth of each demo agency)
  logs                .run/services/*.log, .run/kafka/logs/, .run/postgres/postgres.log
  processes           .venv/bin/supervisorctl -c .run/services/supervisord.conf status

Walk through the demo:  .venv/bin/ikdctl demo walkthrough
An agency's own topic:  (set -a; . .run/dev/agencies/bank-bjb.env; .venv/bin/ikd-gateway agency-consume)
EOT
