#!/usr/bin/env bash
# Write the secrets of kafka-cluster.compose.yml (needs bash and OpenSSL 1.1.1+):
#
#   bash deploy/cluster/make-secrets.sh            # deploy/cluster/.env, CA in deploy/cluster/.secrets/kafka/
#   bash deploy/cluster/make-secrets.sh --out /secure/kafka.env --brokers "kafka-1 kafka-2 kafka-3"
#
# Per broker N (its host name, also its certificates' SAN): IKD_KAFKA_<N>_BROKER_KEYSTORE (the
# client and inter-broker listeners' identity) and IKD_KAFKA_<N>_CONTROLLER_KEYSTORE (CN=controller,
# both ends of the controller listener); the SCRAM passwords of admin and broker; the cluster id.
# The CA is kept if it exists (ca.key: keep it offline once the certificates are issued).
# An existing output file is never overwritten; see README.md for rotating what it holds.
set -euo pipefail
umask 077

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="$here/.env"
brokers="kafka-1 kafka-2 kafka-3"
while (($#)); do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --brokers) brokers="$2"; shift 2 ;;
    -h | --help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "make-secrets: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [[ -e "$out" ]]; then
  echo "make-secrets: $out exists; keeping it (move it away to start afresh)" >&2
  exit 1
fi
command -v openssl >/dev/null || { echo "make-secrets: needs openssl" >&2; exit 1; }
# shellcheck source-path=SCRIPTDIR source=../compose/kafka-pki.sh
source "$here/../compose/kafka-pki.sh"

kafka="$(cd "$(dirname "$out")" && pwd)/.secrets/kafka"
kafka_ca "$kafka"
{
  echo "# Kafka cluster secrets, written $(date -u +%FT%TZ) by deploy/cluster/make-secrets.sh."
  echo "KAFKA_CLUSTER_ID=$(openssl rand 16 | openssl base64 -A | tr '+/' '-_' | tr -d '=')"
  echo "IKD_KAFKA_CA_HOST_FILE=$kafka/ca.pem"
  echo "IKD_KAFKA_ADMIN_PASSWORD=$(openssl rand -hex 24)"
  echo "IKD_KAFKA_BROKER_PASSWORD=$(openssl rand -hex 24)"
  for broker in $brokers; do
    name="${broker^^}"
    name="${name//-/_}"
    printf 'IKD_%s_BROKER_KEYSTORE="%s"\n' "$name" \
      "$(kafka_keystore "$kafka" "$broker" "DNS:$broker" serverAuth)"
    printf 'IKD_%s_CONTROLLER_KEYSTORE="%s"\n' "$name" \
      "$(kafka_keystore "$kafka" controller "DNS:$broker" serverAuth,clientAuth)"
  done
} >"$out"
echo "wrote $out and the Kafka CA in $kafka/"
