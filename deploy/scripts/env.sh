# Sourced by the project's scripts: repo root and development settings.
# A variable already exported wins over deploy/dev.env.
IKD_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export IKD_ROOT
while IFS='=' read -r name value; do
  [[ -z "$name" || "$name" == \#* ]] && continue
  if [[ -z "${!name+x}" ]]; then export "$name=$value"; fi
done < "$IKD_ROOT/deploy/dev.env"
export PATH="$IKD_ROOT/.venv/bin:$PATH"
# The bus: TLS with the development CA, SCRAM as the admin principal for the scripts' own
# ikdctl calls; services.sh gives each service its own principal instead.
KAFKA_SECRETS="$IKD_ROOT/.run/dev/kafka"
export IKD_KAFKA_CA_FILE="${IKD_KAFKA_CA_FILE:-$KAFKA_SECRETS/ca.pem}"
export IKD_KAFKA_USERNAME="${IKD_KAFKA_USERNAME:-admin}"
export IKD_KAFKA_PASSWORD="${IKD_KAFKA_PASSWORD:-@$KAFKA_SECRETS/admin.password}"
