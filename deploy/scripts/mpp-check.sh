#!/usr/bin/env bash
# The whole MPP on one machine: `make up` with every agency of the policy (IKD_DEMO_AGENCIES=all),
# then what it takes (memory, processes, idle CPU, PostgreSQL connections), the demo
# walkthrough, and a citizen served by agencies of all five kinds. Stops everything afterwards
# unless MPP_KEEP=1. Output: .run/mpp-check/report.md (docs/BENCHMARKS.md, "Whole MPP").
set -euo pipefail
export IKD_DEMO_AGENCIES=all
source "$(dirname "$0")/env.sh"
source "$(dirname "$0")/supervise.sh"
source "$(dirname "$0")/services.sh"  # expands `all`
cd "$IKD_ROOT"
out=.run/mpp-check
mkdir -p "$out"

python deploy/scripts/dev_secrets.py .run/dev  # a Kafka password for every gateway
# Stopped however the check ends, a failed start included, unless MPP_KEEP=1.
trap '[[ ${MPP_KEEP:-0} == 1 ]] || bash deploy/scripts/down.sh' EXIT
started=$SECONDS
bash deploy/scripts/up.sh 2>&1 | tee "$out/up.log"
up_seconds=$((SECONDS - started))
# What the services take once started, not while they start.
sleep "${MPP_SETTLE_SECONDS:-20}"
{
  echo "## $(date -u +%FT%TZ): $(wc -w <<<"$IKD_DEMO_AGENCIES") agencies, $(nproc) cores," \
    "$(awk '/MemTotal/ {printf "%.0f GB", $2 / 1048576}' /proc/meminfo)"
  echo
  grep '^ready:' "$out/up.log" || true
  echo "make up took ${up_seconds} s in all"
  echo
  python deploy/scripts/mpp_check.py figures "$SV_CONF"
} | tee "$out/report.md"
rc=0
printf '\n### ikdctl demo walkthrough\n' >>"$out/report.md"
ikdctl demo walkthrough 2>&1 | tee -a "$out/report.md" || rc=1
printf '\n### a citizen at agencies of every kind\n' >>"$out/report.md"
python deploy/scripts/mpp_check.py walk 2>&1 | tee -a "$out/report.md" || rc=1
exit "$rc"
