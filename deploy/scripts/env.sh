# Sourced by the project's scripts: repo root and development settings.
# A variable already exported wins over deploy/dev.env.
IKD_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export IKD_ROOT
# IKD_KAFKA_BROKERS=3: a local three-node cluster (deploy/scripts/kafka.sh); unless exported,
# every client gets all three addresses and topics are created with three replicas.
_ikd_caller_bootstrap=${IKD_KAFKA_BOOTSTRAP_SERVERS+x}
_ikd_caller_replicas=${IKD_KAFKA_REPLICATION_FACTOR+x}
while IFS='=' read -r name value; do
  [[ -z "$name" || "$name" == \#* ]] && continue
  if [[ -z "${!name+x}" ]]; then export "$name=$value"; fi
done < "$IKD_ROOT/deploy/dev.env"
export IKD_KAFKA_BROKERS=${IKD_KAFKA_BROKERS:-1}
if ((IKD_KAFKA_BROKERS > 1)); then
  if [[ -z "$_ikd_caller_bootstrap" ]]; then
    IKD_KAFKA_BOOTSTRAP_SERVERS=$(for ((n = 0; n < IKD_KAFKA_BROKERS; n++)); do
      printf '127.0.0.1:%s,' $((KAFKA_PORT + 100 * n)); done)
    export IKD_KAFKA_BOOTSTRAP_SERVERS=${IKD_KAFKA_BOOTSTRAP_SERVERS%,}
  fi
  [[ -n "$_ikd_caller_replicas" ]] ||
    export IKD_KAFKA_REPLICATION_FACTOR=$((IKD_KAFKA_BROKERS < 3 ? IKD_KAFKA_BROKERS : 3))
fi
unset _ikd_caller_bootstrap _ikd_caller_replicas
export PATH="$IKD_ROOT/.venv/bin:$PATH"
# The bus: TLS with the development CA, SCRAM as the admin principal for the scripts' own
# ikdctl calls; services.sh gives each service its own principal instead.
KAFKA_SECRETS="$IKD_ROOT/.run/dev/kafka"
export IKD_KAFKA_CA_FILE="${IKD_KAFKA_CA_FILE:-$KAFKA_SECRETS/ca.pem}"
export IKD_KAFKA_USERNAME="${IKD_KAFKA_USERNAME:-admin}"
export IKD_KAFKA_PASSWORD="${IKD_KAFKA_PASSWORD:-@$KAFKA_SECRETS/admin.password}"
