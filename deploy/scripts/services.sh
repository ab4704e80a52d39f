# Sourced: each service's environment for the local demo (development keys under .run/dev/).
DEV_KEYS="$IKD_ROOT/.run/dev"
# Ports from one base (IKD_PORT_BASE, default 18000), so a second copy of the platform can run
# beside the demo; ikdctl finds the services through the exported URLs.
IKD_PORT_BASE=${IKD_PORT_BASE:-18000}
IDENTITY_PORT=$IKD_PORT_BASE
AUDIT_PORT=$((IKD_PORT_BASE + 10))
WITNESS_PORT=$((IKD_PORT_BASE + 20))
SIGNER_PORT=$((IKD_PORT_BASE + 30))
GATEWAY_BASE_PORT=$((IKD_PORT_BASE + 100))
WORKER_METRICS_BASE_PORT=$((IKD_PORT_BASE + 150))
RECEIVER_PORT=$((IKD_PORT_BASE + 200))
export IKD_IDENTITY_URL=${IKD_IDENTITY_URL:-http://127.0.0.1:$IDENTITY_PORT}
export IKD_AUDIT_URL=${IKD_AUDIT_URL:-http://127.0.0.1:$AUDIT_PORT}
export IKD_GATEWAY_BASE_PORT=${IKD_GATEWAY_BASE_PORT:-$GATEWAY_BASE_PORT}
# Gateways and audit fetch identity's token keys from its JWKS (plain HTTP on loopback: allowed
# in development only; elsewhere the URL must be https). Until the first fetch works they retry
# every IKD_*_TOKEN_JWKS_MIN_INTERVAL_SECONDS and their /readyz fails on token-keys.
TOKEN_JWKS_URL="$IKD_IDENTITY_URL/.well-known/jwks.json"

# IKD_DEMO_AGENCIES=all: the whole MPP of the policy (dev.env's demo agencies first, so their
# ports stay). Exported expanded, so platform.sh, postgres.sh and ikdctl see the codes.
if [[ ${IKD_DEMO_AGENCIES:-} == all ]]; then
  IKD_DEMO_AGENCIES=$(IKD_DEMO_AGENCIES=all python "$IKD_ROOT/deploy/scripts/dev_secrets.py" --agencies)
  export IKD_DEMO_AGENCIES
fi
# Each agency takes one API port below WORKER_METRICS_BASE_PORT and one worker port below
# RECEIVER_PORT: at most 50 gateways on one port base.
if (($(wc -w <<<"${IKD_DEMO_AGENCIES:-}") > WORKER_METRICS_BASE_PORT - GATEWAY_BASE_PORT)); then
  echo "services.sh: more than $((WORKER_METRICS_BASE_PORT - GATEWAY_BASE_PORT)) agencies in IKD_DEMO_AGENCIES" >&2
  return 1
fi
# PostgreSQL connections per gateway process: its pool plus the agency-topic relay's own
# connection. Many gateways on one server get small pools; postgres.sh sizes max_connections
# from PG_GATEWAY_CONNECTIONS.
if (($(wc -w <<<"${IKD_DEMO_AGENCIES:-}") > 8)); then
  GATEWAY_DB_POOL_MAX=${IKD_GATEWAY_DB_POOL_MAX:-4}
else
  GATEWAY_DB_POOL_MAX=${IKD_GATEWAY_DB_POOL_MAX:-10}
fi
# API and worker: a pool and a relay connection each.
export PG_GATEWAY_CONNECTIONS=$((2 * (GATEWAY_DB_POOL_MAX + 1)))

kafka_env() {  # PRINCIPAL: the service's own Kafka credentials (ACLs: ikdctl kafka acls apply)
  echo IKD_KAFKA_USERNAME="$1" IKD_KAFKA_PASSWORD="@$DEV_KEYS/kafka/$1.password"
}

pg_url() {  # ROLE_SUFFIX DB_NAME
  local db="ikd_${2//-/_}" password
  case $1 in
    owner) password=$IKD_PG_OWNER_PASSWORD ;;
    signer) password=$IKD_PG_SIGNER_PASSWORD ;;
    *) password=$IKD_PG_APP_PASSWORD ;;
  esac
  echo "postgresql://${db}_$1:${password}@127.0.0.1:${PG_PORT}/${db}"
}

identity_env() {  # [DATABASE NAME, default identity]
  local db=${1:-identity}
  echo IKD_IDENTITY_DATABASE_URL="$(pg_url app "$db")" \
    IKD_IDENTITY_MIGRATION_DATABASE_URL="$(pg_url owner "$db")" \
    IKD_IDENTITY_TRUST_JWKS="@$DEV_KEYS/dukcapil-jwks.json" \
    IKD_IDENTITY_TOKEN_SIGNING_KEY="@$DEV_KEYS/token-signing.pem" \
    IKD_IDENTITY_TOKEN_KEY_ID=dev-token-1 \
    IKD_IDENTITY_PORT=$IDENTITY_PORT \
    "$(kafka_env identity)"
}

# The audit service knows its log by the verifier key alone (log.vkey, which up.sh writes with
# `ikd-audit vkey` from the signer's settings); only the signer reads tree-head.pem.
audit_env() {  # [DATABASE NAME, default audit]
  local db=${1:-audit}
  echo IKD_AUDIT_DATABASE_URL="$(pg_url app "$db")" \
    IKD_AUDIT_MIGRATION_DATABASE_URL="$(pg_url owner "$db")" \
    IKD_AUDIT_LOG_VKEY="@$DEV_KEYS/log.vkey" \
    IKD_AUDIT_TOKEN_JWKS_URL="$TOKEN_JWKS_URL" \
    IKD_AUDIT_TRUST_JWKS="@$DEV_KEYS/dukcapil-jwks.json" \
    IKD_AUDIT_SESSION_SECRET=dev-console-session-secret-for-local-use \
    IKD_AUDIT_PORT=$AUDIT_PORT \
    IKD_AUDIT_WITNESS_KEYS="$(cat "$DEV_KEYS/witness.vkey" 2>/dev/null || true)" \
    "$(kafka_env audit)"
}

# The tree-head signer: its own database role and the key file; no Kafka, no other secret.
signer_env() {  # [DATABASE NAME, default audit] [PORT, default SIGNER_PORT]
  local db=${1:-audit}
  echo IKD_SIGNER_DATABASE_URL="$(pg_url signer "$db")" \
    IKD_SIGNER_SIGNING_KEY="@$DEV_KEYS/tree-head.pem" \
    IKD_SIGNER_LOG_ORIGIN="$LOG_ORIGIN" \
    IKD_SIGNER_PORT="${2:-$SIGNER_PORT}"
}

# The demo witness: its own key and SQLite file; it knows the log only by URL and vkey (both
# files written by up.sh), as a witness at another organisation would.
LOG_ORIGIN=${IKD_LOG_ORIGIN:-ikd-mpp.local/audit-log}
witness_env() {
  echo IKD_WITNESS_NAME=witness.ikd-mpp.local/demo \
    IKD_WITNESS_SIGNING_KEY="@$DEV_KEYS/witness.pem" \
    IKD_WITNESS_LOG_URL="$IKD_AUDIT_URL" \
    IKD_WITNESS_LOG_VKEY="$(cat "$DEV_KEYS/log.vkey" 2>/dev/null || true)" \
    IKD_WITNESS_DATABASE="$IKD_ROOT/.run/witness/witness.sqlite3" \
    IKD_WITNESS_POLL_INTERVAL_SECONDS=5 \
    IKD_WITNESS_PORT=$WITNESS_PORT
}

gateway_port() {  # AGENCY
  local i=0 agency
  for agency in $IKD_DEMO_AGENCIES; do
    [[ $agency == "$1" ]] && { echo $((GATEWAY_BASE_PORT + i)); return; }
    i=$((i + 1))
  done
  return 1
}

worker_metrics_port() {  # AGENCY
  echo $(($(gateway_port "$1") - GATEWAY_BASE_PORT + WORKER_METRICS_BASE_PORT))
}

gateway_env() {  # AGENCY (its identity client's secret: onboarding writes it, up.sh)
  echo IKD_GATEWAY_AGENCY="$1" \
    IKD_GATEWAY_DATABASE_URL="$(pg_url app "gateway_$1")" \
    IKD_GATEWAY_MIGRATION_DATABASE_URL="$(pg_url owner "gateway_$1")" \
    IKD_GATEWAY_TOKEN_JWKS_URL="$TOKEN_JWKS_URL" \
    IKD_GATEWAY_WEBHOOK_ALLOW_PRIVATE_TARGETS=true \
    IKD_GATEWAY_PORT="$(gateway_port "$1")" \
    IKD_GATEWAY_WORKER_METRICS_PORT="$(worker_metrics_port "$1")" \
    IKD_GATEWAY_IDENTITY_URL="$IKD_IDENTITY_URL" \
    IKD_GATEWAY_DB_POOL_MAX="$GATEWAY_DB_POOL_MAX" \
    IKD_GATEWAY_IDENTITY_CLIENT_ID="gateway-$1" \
    IKD_GATEWAY_IDENTITY_CLIENT_SECRET="@$DEV_KEYS/agencies/$1.gateway-secret" \
    "$(kafka_env "gateway-$1")"
}
