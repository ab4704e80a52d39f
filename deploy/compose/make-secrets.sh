#!/usr/bin/env bash
# Write a `.env` for `docker compose` with fresh random secrets and keys (needs only bash and
# OpenSSL 1.1.1+). docker-compose.yml requires every one of them and has no defaults.
#
#   bash deploy/compose/make-secrets.sh                          # writes ./.env and ./.secrets/
#   bash deploy/compose/make-secrets.sh --trust-jwks dukcapil.json   # real Dukcapil anchors
#   bash deploy/compose/make-secrets.sh --out /secure/ikd.env    # elsewhere (then pass
#                                                                # --env-file to docker compose)
#   bash deploy/compose/make-secrets.sh --log-origin audit.example.go.id/log   # the log's name
#
# Without --trust-jwks a TRIAL issuer stands in for Dukcapil: its private key goes to
# .secrets/dukcapil-issuer.pem (with dukcapil-jwks.json) so test credentials can be minted with
# `.venv/bin/ikdctl dev-issuer mint --key-dir .secrets`. Never trust a trial issuer in production.
# Kafka: a CA in .secrets/kafka/ (ca.pem, mounted into every container, and ca.key), the
# broker's and the controller's PEM keystores and one SCRAM password per principal (admin,
# broker, identity, audit, gateway-<agency> and agency-<agency>) go into the file as
# IKD_KAFKA_*; hand an agency backend its IKD_KAFKA_AGENCY_<AGENCY>_PASSWORD and ca.pem.
# The same CA signs IKD_IDENTITY_TLS_KEYSTORE, the certificate (DNS:identity-tls) under which
# the gateways and audit fetch identity's token keys over https.
# An existing file is never overwritten: the databases and the Kafka volume were initialised
# with the old values, and a new IKD_PSEUDONYM_KEY changes every citizen's pseudonym. An
# existing Kafka CA is kept.
# The audit log: the signer's key (IKD_TREE_HEAD_SIGNING_KEY, given to the signer container
# only), the log's origin and its verifier key IKD_LOG_VKEY (c2sp.org/signed-note; the service
# and witnesses get this), and the demo witness's own key, name and cosignature vkey.
set -euo pipefail
umask 077

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="$root/.env"
trust_jwks=""
keys=""
log_origin="ikd-mpp.local/audit-log"
witness_name="witness.ikd-mpp.local/compose"
while (($#)); do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --trust-jwks) trust_jwks="$2"; shift 2 ;;
    --log-origin) log_origin="$2"; shift 2 ;;
    -h | --help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "make-secrets: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [[ ! $log_origin =~ ^[^[:space:]+]{1,255}$ ]]; then
  echo "make-secrets: --log-origin needs 1-255 characters without spaces or '+'" >&2
  exit 2
fi
if [[ -e "$out" ]]; then
  echo "make-secrets: $out exists; keeping it (move it away to start afresh)" >&2
  exit 1
fi
command -v openssl >/dev/null || { echo "make-secrets: needs openssl" >&2; exit 1; }
# shellcheck source-path=SCRIPTDIR source=kafka-pki.sh
source "$root/deploy/compose/kafka-pki.sh"
# the agency gateways of docker-compose.yml
agencies=(polres-cirebon bank-bjb dinsos-cirebon disnaker-cirebon)
upper() { local name="${1^^}"; printf '%s' "${name//-/_}"; }

hex() { openssl rand -hex "$1"; }                      # $1 random bytes as hex
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
ed25519_pem() { openssl genpkey -algorithm ed25519; }
ed25519_jwk() {  # PEM KID -> public JWK (RFC 8037): the last 32 bytes of the DER public key
  local x
  x="$(printf '%s\n' "$1" | openssl pkey -pubout -outform DER | tail -c 32 | b64url)"
  printf '{"kty":"OKP","crv":"Ed25519","x":"%s","kid":"%s","use":"sig","alg":"EdDSA"}' "$x" "$2"
}

# A verifier key (c2sp.org/signed-note): NAME+hex(key id)+base64(type || public key), where
# the key id is SHA-256(NAME || "\n" || type || public key)[:4]. TYPE: 01 a note signer
# (the log), 04 a cosigner (c2sp.org/tlog-cosignature, a witness).
vkey() {  # NAME TYPE PEM
  local material id
  material="$(mktemp -d)"
  printf '%s\n' "$3" | openssl pkey -pubout -outform DER | tail -c 32 >"$material/key"
  { printf "\\x$2"; cat "$material/key"; } >"$material/typed"
  id="$({ printf '%s\n' "$1"; cat "$material/typed"; } | openssl dgst -sha256 -binary |
    head -c 4 | od -An -tx1 | tr -d ' \n')"
  printf '%s+%s+%s' "$1" "$id" "$(openssl base64 -A <"$material/typed")"
  rm -rf "$material"
}

stamp="$(date -u +%Y%m%d)"
token_kid="ikd-token-$stamp"
token_key="$(ed25519_pem)"
token_jwks="{\"keys\":[$(ed25519_jwk "$token_key" "$token_kid")]}"
tree_head_key="$(ed25519_pem)"
witness_key="$(ed25519_pem)"

if [[ -n "$trust_jwks" ]]; then
  trust="$(tr -d '\n' <"$trust_jwks")"
  [[ "$trust" == *'"keys"'* ]] || { echo "make-secrets: $trust_jwks is not a JWKS" >&2; exit 1; }
else
  keys="$(dirname "$out")/.secrets"
  mkdir -p "$keys"
  issuer_key="$(ed25519_pem)"
  trust="{\"keys\":[$(ed25519_jwk "$issuer_key" "trial-dukcapil-$stamp")]}"
  printf '%s\n' "$issuer_key" >"$keys/dukcapil-issuer.pem"
  printf '%s\n' "$trust" >"$keys/dukcapil-jwks.json"
fi
[[ "$trust" != *"'"* ]] || { echo "make-secrets: the JWKS must not contain a quote (')" >&2; exit 1; }

kafka="$(cd "$(dirname "$out")" && pwd)/.secrets/kafka"
kafka_ca "$kafka"
# The broker's name on the compose network and, for tools on the host, on loopback; the
# controller's certificate is both ends of the controller listener (client authentication).
broker_keystore="$(kafka_keystore "$kafka" kafka DNS:kafka,DNS:localhost,IP:127.0.0.1 serverAuth)"
controller_keystore="$(kafka_keystore "$kafka" controller DNS:kafka serverAuth,clientAuth)"
# identity's token JWKS over TLS (the identity-tls container), from the same CA
identity_tls_keystore="$(kafka_keystore "$kafka" identity-tls DNS:identity-tls serverAuth)"
principals=(admin broker identity audit)
for agency in "${agencies[@]}"; do
  principals+=("gateway-$agency" "agency-$agency")
done

{
  echo "# IKD MPP secrets for docker compose, written $(date -u +%FT%TZ) by deploy/compose/make-secrets.sh."
  echo "# Keep this file out of version control and images; store a copy in your secret store."
  echo "IKD_PSEUDONYM_KEY=$(hex 32)"
  echo "IKD_TOKEN_KEY_ID=$token_kid"
  printf 'IKD_TOKEN_SIGNING_KEY="%s\n"\n' "$token_key"
  # the token key's public JWKS, for a record and off-line tools: the services in compose fetch
  # identity's published keys instead
  echo "IKD_TOKEN_JWKS='$token_jwks'"
  echo "IKD_TRUST_JWKS='$trust'"
  printf 'IKD_TREE_HEAD_SIGNING_KEY="%s\n"\n' "$tree_head_key"
  echo "IKD_LOG_ORIGIN=$log_origin"
  echo "IKD_LOG_VKEY=$(vkey "$log_origin" 01 "$tree_head_key")"
  echo "IKD_WITNESS_NAME=$witness_name"
  printf 'IKD_WITNESS_SIGNING_KEY="%s\n"\n' "$witness_key"
  echo "IKD_WITNESS_VKEY=$(vkey "$witness_name" 04 "$witness_key")"
  echo "IKD_AUDIT_SESSION_SECRET=$(hex 32)"
  echo "IKD_RECEIVER_SECRET=whsec_$(openssl rand 24 | openssl base64 -A)"
  echo "IKD_PG_SUPERUSER_PASSWORD=$(hex 24)"
  for db in identity audit "${agencies[@]/#/gateway_}"; do
    echo "IKD_PG_$(upper "$db")_OWNER_PASSWORD=$(hex 24)"
    echo "IKD_PG_$(upper "$db")_APP_PASSWORD=$(hex 24)"
  done
  echo "IKD_PG_AUDIT_SIGNER_PASSWORD=$(hex 24)"
  echo "KAFKA_CLUSTER_ID=$(openssl rand 16 | b64url)"
  echo "IKD_KAFKA_CA_HOST_FILE=$kafka/ca.pem"
  printf 'IKD_KAFKA_BROKER_KEYSTORE="%s"\n' "$broker_keystore"
  printf 'IKD_KAFKA_CONTROLLER_KEYSTORE="%s"\n' "$controller_keystore"
  printf 'IKD_IDENTITY_TLS_KEYSTORE="%s"\n' "$identity_tls_keystore"
  for principal in "${principals[@]}"; do
    # hex: never mistaken for a placeholder, and safe inside the broker's JAAS settings
    echo "IKD_KAFKA_$(upper "$principal")_PASSWORD=$(hex 24)"
  done
  # each gateway's own OAuth client at identity (gateway-<agency>, scope identity:register)
  for agency in "${agencies[@]}"; do
    echo "IKD_GATEWAY_$(upper "$agency")_IDENTITY_SECRET=$(hex 24)"
  done
} >"$out"
echo "wrote $out and the Kafka CA in $kafka/${keys:+, the trial issuer key in $keys/}"
