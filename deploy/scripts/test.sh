#!/usr/bin/env bash
# `make test`: start what the suite needs (reusing what already runs), run it, stop what we started.
# `make test-cluster` (IKD_KAFKA_BROKERS=3): the same on a three-broker cluster, tests/cluster only.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$IKD_ROOT"
scripts=deploy/scripts
log=.run/test-platform.log
mkdir -p .run
started=()

cleanup() {
  local status=$?
  for (( i=${#started[@]}-1; i>=0; i-- )); do
    bash "$scripts/${started[$i]}.sh" stop >>"$log" 2>&1 || true
  done
  exit "$status"
}
trap cleanup EXIT INT TERM

suite=(tests)
if ((IKD_KAFKA_BROKERS > 1)); then
  suite=(tests/cluster)
  export IKD_CLUSTER_TESTS=1
fi

# Browser for the console's end-to-end test: Debian's chromium (Playwright's download is not used).
if ((IKD_KAFKA_BROKERS > 1)); then
  :  # the cluster tests drive no browser
elif ! command -v chromium >/dev/null 2>&1; then
  if [[ $(id -u) -eq 0 ]]; then
    echo "installing chromium for the console test (apt-get)"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >>"$log" 2>&1
  else
    echo "chromium is missing: install Debian's 'chromium' package to run the console test" >&2
  fi
fi

for part in kafka postgres; do
  if ! bash "$scripts/$part.sh" status >/dev/null 2>&1; then
    bash "$scripts/$part.sh" start
    started+=("$part")
  else
    echo "$part: already running, reusing it"
  fi
done
ikdctl topics ensure

set +e
pytest "${suite[@]}" "$@"
status=$?
set -e
# pytest's exit code 5 means "no tests collected": that is a failure here.
exit "$status"
