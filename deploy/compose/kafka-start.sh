#!/usr/bin/env bash
# Entrypoint of the apache/kafka containers of docker-compose.yml and deploy/cluster/: a KRaft
# node with the security of deploy/scripts/kafka.sh. The image's own start script can neither
# take PEM keystores from the environment nor create SCRAM users when it formats the storage,
# and no client can authenticate before the first users exist, so this script does both.
#
# Plain settings come from KAFKA_* variables, named as the image names them
# (KAFKA_SUPER_USERS -> super.users; `__` -> `_`, `___` -> `-`). Secrets:
#   IKD_KAFKA_ADMIN_PASSWORD, IKD_KAFKA_BROKER_PASSWORD   SCRAM users created at format; the
#                                 broker's own user authenticates inter-broker traffic
#   IKD_KAFKA_BROKER_KEYSTORE     PEM: key, certificate, CA (the client listeners' identity)
#   IKD_KAFKA_CONTROLLER_KEYSTORE PEM: key, certificate CN=controller, CA (both ends of the
#                                 controller listener, which requires client certificates)
#   IKD_KAFKA_CA_FILE             the CA every certificate chains to (default /etc/ikd/kafka-ca.pem)
# A storage formatted earlier (e.g. before the bus was secured) is used as it is: its SCRAM
# users are not added then (`docker compose down -v` starts afresh; see deploy/cluster/README.md).
set -euo pipefail
umask 077

die() {
  echo "kafka-start: $*" >&2
  exit 1
}

for name in CLUSTER_ID KAFKA_LISTENER_SECURITY_PROTOCOL_MAP IKD_KAFKA_ADMIN_PASSWORD \
  IKD_KAFKA_BROKER_PASSWORD IKD_KAFKA_BROKER_KEYSTORE IKD_KAFKA_CONTROLLER_KEYSTORE; do
  [[ -n "${!name:-}" ]] || die "set $name"
done
ca="${IKD_KAFKA_CA_FILE:-/etc/ikd/kafka-ca.pem}"
[[ -s "$ca" ]] || die "$ca (the Kafka CA) is missing; run deploy/compose/make-secrets.sh"
for name in IKD_KAFKA_ADMIN_PASSWORD IKD_KAFKA_BROKER_PASSWORD; do
  # they end up inside a JAAS string and a --add-scram argument
  [[ "${!name}" =~ ^[A-Za-z0-9_-]+$ ]] || die "$name: use letters, digits, - and _ only"
done

kafka="${IKD_KAFKA_HOME:-/opt/kafka}"
conf="${IKD_KAFKA_CONFIG_DIR:-$kafka/config/ikd}"
mkdir -p "$conf"
printf '%s\n' "$IKD_KAFKA_BROKER_KEYSTORE" >"$conf/broker.pem"
printf '%s\n' "$IKD_KAFKA_CONTROLLER_KEYSTORE" >"$conf/controller.pem"

scram_login() {  # USER PASSWORD
  printf 'org.apache.kafka.common.security.scram.ScramLoginModule required username="%s" password="%s";' "$1" "$2"
}

# JVM options of the start scripts, not broker settings (the image skips the same ones).
not_a_setting=" KAFKA_VERSION KAFKA_HEAP_OPTS KAFKA_OPTS KAFKA_LOG4J_OPTS KAFKA_JMX_OPTS \
KAFKA_JVM_PERFORMANCE_OPTS KAFKA_GC_LOG_OPTS KAFKA_DEBUG KAFKA_JMX_HOSTNAME KAFKA_JMX_PORT "

{
  echo "# written by kafka-start.sh on every start"
  for name in $(compgen -e | grep '^KAFKA_' | sort); do
    [[ "$not_a_setting" == *" $name "* ]] && continue
    key="${name#KAFKA_}"
    key="${key,,}"
    key="${key//_/.}"
    key="${key//.../-}"
    key="${key//../_}"
    printf '%s=%s\n' "$key" "${!name}"
  done
  echo "ssl.keystore.type=PEM"
  echo "ssl.keystore.location=$conf/broker.pem"
  echo "ssl.truststore.type=PEM"
  echo "ssl.truststore.location=$ca"
  echo "listener.name.controller.ssl.keystore.type=PEM"
  echo "listener.name.controller.ssl.keystore.location=$conf/controller.pem"
  # Every SASL listener verifies SCRAM; the broker's own user logs in on the inter-broker one.
  IFS=, read -r -a mappings <<<"$KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"
  for mapping in "${mappings[@]}"; do
    listener="${mapping%%:*}"
    if [[ "${mapping#*:}" == SASL_SSL ]]; then
      printf 'listener.name.%s.scram-sha-512.sasl.jaas.config=%s\n' "${listener,,}" \
        "$(scram_login broker "$IKD_KAFKA_BROKER_PASSWORD")"
    fi
  done
} >"$conf/server.properties"

# The admin's client settings, for the health check and `docker compose exec kafka` tools.
cat >"$conf/admin.properties" <<EOF
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=$(scram_login admin "$IKD_KAFKA_ADMIN_PASSWORD")
ssl.truststore.type=PEM
ssl.truststore.location=$ca
EOF

"$kafka/bin/kafka-storage.sh" format --ignore-formatted --cluster-id "$CLUSTER_ID" \
  --config "$conf/server.properties" \
  --add-scram "SCRAM-SHA-512=[name=admin,password=$IKD_KAFKA_ADMIN_PASSWORD]" \
  --add-scram "SCRAM-SHA-512=[name=broker,password=$IKD_KAFKA_BROKER_PASSWORD]"

unset IKD_KAFKA_ADMIN_PASSWORD IKD_KAFKA_BROKER_PASSWORD IKD_KAFKA_BROKER_KEYSTORE \
  IKD_KAFKA_CONTROLLER_KEYSTORE
exec "$kafka/bin/kafka-server-start.sh" "$conf/server.properties"
