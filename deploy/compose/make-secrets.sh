#!/usr/bin/env bash
# Write a `.env` for `docker compose` with fresh random secrets and keys (needs only bash and
# OpenSSL 1.1.1+). docker-compose.yml requires every one of them and has no defaults.
#
#   bash deploy/compose/make-secrets.sh                          # writes ./.env and ./.secrets/
#   bash deploy/compose/make-secrets.sh --trust-jwks dukcapil.json   # real Dukcapil anchors
#   bash deploy/compose/make-secrets.sh --out /secure/ikd.env    # elsewhere (then pass
#                                                                # --env-file to docker compose)
#
# Without --trust-jwks a TRIAL issuer stands in for Dukcapil: its private key goes to
# .secrets/dukcapil-issuer.pem (with dukcapil-jwks.json) so test credentials can be minted with
# `.venv/bin/ikdctl dev-issuer mint --key-dir .secrets`. Never trust a trial issuer in production.
# An existing file is never overwritten: the databases and the Kafka volume were initialised
# with the old values, and a new IKD_PSEUDONYM_KEY changes every citizen's pseudonym.
set -euo pipefail
umask 077

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
out="$root/.env"
trust_jwks=""
keys=""
while (($#)); do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --trust-jwks) trust_jwks="$2"; shift 2 ;;
    -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "make-secrets: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [[ -e "$out" ]]; then
  echo "make-secrets: $out exists; keeping it (move it away to start afresh)" >&2
  exit 1
fi
command -v openssl >/dev/null || { echo "make-secrets: needs openssl" >&2; exit 1; }

hex() { openssl rand -hex "$1"; }                      # $1 random bytes as hex
b64url() { openssl base64 -A | tr '+/' '-_' | tr -d '='; }
ed25519_pem() { openssl genpkey -algorithm ed25519; }
ed25519_jwk() {  # PEM KID -> public JWK (RFC 8037): the last 32 bytes of the DER public key
  local x
  x="$(printf '%s\n' "$1" | openssl pkey -pubout -outform DER | tail -c 32 | b64url)"
  printf '{"kty":"OKP","crv":"Ed25519","x":"%s","kid":"%s","use":"sig","alg":"EdDSA"}' "$x" "$2"
}

stamp="$(date -u +%Y%m%d)"
token_kid="ikd-token-$stamp"
token_key="$(ed25519_pem)"
token_jwks="{\"keys\":[$(ed25519_jwk "$token_key" "$token_kid")]}"
tree_head_key="$(ed25519_pem)"

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

{
  echo "# IKD MPP secrets for docker compose, written $(date -u +%FT%TZ) by deploy/compose/make-secrets.sh."
  echo "# Keep this file out of version control and images; store a copy in your secret store."
  echo "IKD_PSEUDONYM_KEY=$(hex 32)"
  echo "IKD_TOKEN_KEY_ID=$token_kid"
  printf 'IKD_TOKEN_SIGNING_KEY="%s\n"\n' "$token_key"
  echo "IKD_TOKEN_JWKS='$token_jwks'"
  echo "IKD_TRUST_JWKS='$trust'"
  printf 'IKD_TREE_HEAD_SIGNING_KEY="%s\n"\n' "$tree_head_key"
  echo "IKD_AUDIT_SESSION_SECRET=$(hex 32)"
  echo "IKD_RECEIVER_SECRET=whsec_$(openssl rand 24 | openssl base64 -A)"
  echo "IKD_PG_SUPERUSER_PASSWORD=$(hex 24)"
  for db in IDENTITY AUDIT GATEWAY_POLRES_CIREBON GATEWAY_BANK_BJB GATEWAY_DINSOS_CIREBON; do
    echo "IKD_PG_${db}_OWNER_PASSWORD=$(hex 24)"
    echo "IKD_PG_${db}_APP_PASSWORD=$(hex 24)"
  done
  echo "KAFKA_CLUSTER_ID=$(openssl rand 16 | b64url)"
} >"$out"
echo "wrote $out${keys:+ and the trial issuer key in $keys/}"
