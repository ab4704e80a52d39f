#!/usr/bin/env bash
# docker-entrypoint-initdb.d hook of the postgres image (runs once, on an empty data volume):
# one database per service and per agency gateway. Database ikd_<name> is owned by role
# ikd_<name>_owner (runs the migrations) and used at runtime by the least-privileged
# ikd_<name>_app. Every role has its own password, so one service's credentials open no other
# service's database:
#   IKD_DATABASES                       e.g. "identity audit gateway_bank_bjb"
#   IKD_PG_<NAME>_OWNER_PASSWORD        e.g. IKD_PG_GATEWAY_BANK_BJB_OWNER_PASSWORD
#   IKD_PG_<NAME>_APP_PASSWORD          e.g. IKD_PG_IDENTITY_APP_PASSWORD
# The databases named in IKD_SIGNER_DATABASES (audit's) also get ikd_<name>_signer, the
# tree-head signer's role; its migrations grant it reading the log and adding tree heads:
#   IKD_SIGNER_DATABASES                e.g. "audit"
#   IKD_PG_<NAME>_SIGNER_PASSWORD       e.g. IKD_PG_AUDIT_SIGNER_PASSWORD
# Passwords reach psql through \getenv, never on a command line.
set -euo pipefail
: "${IKD_DATABASES:?set IKD_DATABASES, e.g. identity audit gateway_bank_bjb}"
signer_databases=" ${IKD_SIGNER_DATABASES:-} "

names=()
for name in $IKD_DATABASES; do
  name="${name//-/_}"
  if [[ ! $name =~ ^[a-z][a-z0-9_]*$ ]]; then
    echo "postgres-init: '$name' in IKD_DATABASES is not a database name" >&2
    exit 1
  fi
  roles=(OWNER APP)
  if [[ $signer_databases == *" $name "* ]]; then roles+=(SIGNER); fi
  for role in "${roles[@]}"; do
    var="IKD_PG_${name^^}_${role}_PASSWORD"
    if [[ -z "${!var:-}" ]]; then
      echo "postgres-init: set $var" >&2
      exit 1
    fi
  done
  names+=("$name")
done
for name in ${IKD_SIGNER_DATABASES:-}; do
  if [[ " ${names[*]} " != *" $name "* ]]; then
    echo "postgres-init: '$name' in IKD_SIGNER_DATABASES is not in IKD_DATABASES" >&2
    exit 1
  fi
done

for name in "${names[@]}"; do
  db="ikd_${name}"
  psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet --username "${POSTGRES_USER:-postgres}" \
    --dbname postgres -v db="$db" -v owner="${db}_owner" -v app="${db}_app" \
    -v owner_env="IKD_PG_${name^^}_OWNER_PASSWORD" -v app_env="IKD_PG_${name^^}_APP_PASSWORD" \
    <<'SQL'
\getenv owner_pw :owner_env
\getenv app_pw :app_env
SELECT format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD %L', :'owner', :'owner_pw') \gexec
SELECT format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD %L', :'app', :'app_pw') \gexec
SELECT format('CREATE DATABASE %I OWNER %I TEMPLATE template0 ENCODING %L', :'db', :'owner', 'UTF8') \gexec
SELECT format('REVOKE CONNECT ON DATABASE %I FROM PUBLIC', :'db') \gexec
SELECT format('GRANT CONNECT ON DATABASE %I TO %I', :'db', :'app') \gexec
SQL
  if [[ $signer_databases != *" $name "* ]]; then
    echo "postgres-init: database $db with roles ${db}_owner and ${db}_app"
    continue
  fi
  psql -v ON_ERROR_STOP=1 --no-psqlrc --quiet --username "${POSTGRES_USER:-postgres}" \
    --dbname postgres -v db="$db" -v signer="${db}_signer" \
    -v signer_env="IKD_PG_${name^^}_SIGNER_PASSWORD" <<'SQL'
\getenv signer_pw :signer_env
SELECT format('CREATE ROLE %I LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD %L', :'signer', :'signer_pw') \gexec
SELECT format('GRANT CONNECT ON DATABASE %I TO %I', :'db', :'signer') \gexec
SQL
  echo "postgres-init: database $db with roles ${db}_owner, ${db}_app and ${db}_signer"
done
