# Sourced by the project's scripts: repo root and development settings.
# A variable already exported wins over deploy/dev.env.
IKD_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
export IKD_ROOT
while IFS='=' read -r name value; do
  [[ -z "$name" || "$name" == \#* ]] && continue
  if [[ -z "${!name+x}" ]]; then export "$name=$value"; fi
done < "$IKD_ROOT/deploy/dev.env"
export PATH="$IKD_ROOT/.venv/bin:$PATH"
