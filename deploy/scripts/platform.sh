#!/usr/bin/env bash
# The platform under the services: Kafka and PostgreSQL started, topics declared, databases
# created and migrated. `platform.sh start` is idempotent; `platform.sh stop` stops both servers.
set -euo pipefail
source "$(dirname "$0")/env.sh"
cd "$IKD_ROOT"
scripts=deploy/scripts

migrate_db() {  # NAME MIGRATIONS_DIR
  local db="ikd_${1//-/_}"
  ikdctl db migrate "$2" \
    "postgresql://${db}_owner:${IKD_PG_OWNER_PASSWORD}@127.0.0.1:${PG_PORT}/${db}"
}

case "${1:-}" in
  start)
    bash "$scripts/kafka.sh" start
    PG_GATEWAY_AGENCIES="$IKD_DEMO_AGENCIES" bash "$scripts/postgres.sh" start
    ikdctl topics ensure
    ikdctl kafka users apply
    ikdctl kafka acls apply --agencies "$IKD_DEMO_AGENCIES"
    migrate_db identity services/identity/migrations
    migrate_db audit services/audit/src/ikd_audit/migrations
    for agency in $IKD_DEMO_AGENCIES; do  # a few at once: the whole MPP has 37
      while (($(jobs -rp | wc -l) >= 4)); do wait -n; done
      migrate_db "gateway_$agency" services/agency_gateway/migrations &
    done
    while (($(jobs -rp | wc -l) > 0)); do wait -n; done
    ;;
  stop)
    bash "$scripts/postgres.sh" stop
    bash "$scripts/kafka.sh" stop
    ;;
  *)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
