#!/usr/bin/env bash
# docker-entrypoint-initdb.d hook: one database per service (and per agency gateway), each with
# an owner role that runs migrations and a least-privileged runtime role `<db>_app`.
set -euo pipefail
: "${IKD_PG_OWNER_PASSWORD:?set IKD_PG_OWNER_PASSWORD}"
: "${IKD_PG_APP_PASSWORD:?set IKD_PG_APP_PASSWORD}"

for name in ${IKD_DATABASES}; do
  db="ikd_${name//-/_}"
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<SQL
CREATE ROLE ${db}_owner LOGIN PASSWORD '${IKD_PG_OWNER_PASSWORD}';
CREATE ROLE ${db}_app LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD '${IKD_PG_APP_PASSWORD}';
CREATE DATABASE ${db} OWNER ${db}_owner;
REVOKE CONNECT ON DATABASE ${db} FROM PUBLIC;
GRANT CONNECT ON DATABASE ${db} TO ${db}_app;
SQL
done
