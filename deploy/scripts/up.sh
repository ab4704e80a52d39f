#!/usr/bin/env bash
# `make up`: the platform, the services of the demo, demo clients and citizens; then where to look.
# A second run reuses whatever already runs.
set -euo pipefail
source "$(dirname "$0")/env.sh"
source "$(dirname "$0")/procs.sh"
source "$(dirname "$0")/services.sh"
cd "$IKD_ROOT"

bash deploy/scripts/platform.sh start

echo "registering demo clients"
secret=$IKD_DEMO_CLIENT_SECRET
add_client() { env $(identity_env) ikd-identity clients add --secret "$secret" "$@" >/dev/null; }
add_client --id counter-polres --scopes identity:verify --agency polres-cirebon
add_client --id dukcapil-feed --scopes identity:feed
add_client --id mpp-officer --scopes identity:consent --agency dpmptsp-cirebon
add_client --id auditor-demo --scopes audit:read
for agency in $IKD_DEMO_AGENCIES; do
  add_client --id "backend-$agency" --scopes "gateway:prefill gateway:webhooks" --agency "$agency"
done
env $(audit_env) ikd-audit auditors add --id auditor-demo --secret "$secret" >/dev/null

echo "starting services"
proc_start identity env $(identity_env) ikd-identity serve
proc_start audit env $(audit_env) ikd-audit serve
for agency in $IKD_DEMO_AGENCIES; do
  proc_start "gateway-$agency" env $(gateway_env "$agency") ikd-gateway serve
done
proc_wait_http identity "http://127.0.0.1:$IDENTITY_PORT/healthz"
proc_wait_http audit "http://127.0.0.1:$AUDIT_PORT/healthz"
for agency in $IKD_DEMO_AGENCIES; do
  proc_wait_http "gateway-$agency" "http://127.0.0.1:$(gateway_port "$agency")/readyz" 90
done

echo "seeding the demo"
ikdctl demo seed \
  --webhook-agency "$IKD_DEMO_WEBHOOK_AGENCY" --webhook-service "$IKD_DEMO_WEBHOOK_SERVICE" \
  --webhook-url "http://127.0.0.1:$RECEIVER_PORT/webhooks/ikd" \
  --webhook-secret-file "$DEV_KEYS/webhook-secret" --citizens "$IKD_DEMO_CITIZENS"
proc_start webhook-receiver ikd-gateway example-receiver --port "$RECEIVER_PORT" \
  --secret "$(cat "$DEV_KEYS/webhook-secret")"
proc_wait_http webhook-receiver "http://127.0.0.1:$RECEIVER_PORT/healthz"

ikdctl status
cat <<EOT

The IKD MPP platform is up (development settings; \`make down\` stops everything).
  Kafka $(bash deploy/scripts/kafka.sh version) on 127.0.0.1:$KAFKA_PORT
  PostgreSQL $(bash deploy/scripts/postgres.sh version) on 127.0.0.1:$PG_PORT
  identity API        http://127.0.0.1:$IDENTITY_PORT/docs
  audit API           http://127.0.0.1:$AUDIT_PORT/docs
  audit console       http://127.0.0.1:$AUDIT_PORT/console  (auditor-demo / $secret)
$(for agency in $IKD_DEMO_AGENCIES; do printf '  gateway %-16s http://127.0.0.1:%s/docs\n' "$agency" "$(gateway_port "$agency")"; done)
  webhook receiver    http://127.0.0.1:$RECEIVER_PORT  (pushes from $IKD_DEMO_WEBHOOK_AGENCY)
  logs                .run/services/*.log, .run/kafka/logs/, .run/postgres/postgres.log

Walk through the demo:  .venv/bin/ikdctl demo walkthrough
EOT
