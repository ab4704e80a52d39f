#!/usr/bin/env bash
# `make down`: stop the services, then Kafka and PostgreSQL. Safe to run when nothing runs.
set -euo pipefail
source "$(dirname "$0")/env.sh"
source "$(dirname "$0")/procs.sh"
source "$(dirname "$0")/supervise.sh"
cd "$IKD_ROOT"
sv_shutdown
proc_stop_all  # processes of an older checkout that started them without supervisord
bash deploy/scripts/platform.sh stop
echo "stopped: services, Kafka and PostgreSQL"
