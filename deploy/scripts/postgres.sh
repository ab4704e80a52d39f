#!/usr/bin/env bash
# Local PostgreSQL server for development and tests, with one database per
# service (and per gateway agency), each with an owner role for migrations
# and a least-privileged runtime role.
#
# Usage: deploy/scripts/postgres.sh start|stop|restart|status|version
#        deploy/scripts/postgres.sh ensure-db NAME | ensure-db --agency CODE
#        deploy/scripts/postgres.sh psql [PSQL ARGS...]
#        deploy/scripts/postgres.sh max-connections
#
#   start      initdb on first start, start the server on 127.0.0.1:$PG_PORT,
#              wait until ready, then (idempotently) create the roles and
#              databases; on a running server only does the latter
#   stop       fast shutdown; idempotent
#   status     exit 0 and print "postgresql <version> listening on ..." if up
#   version    print the server version
#   ensure-db  create database ikd_NAME with roles ikd_NAME_owner and
#              ikd_NAME_app (NAME like "identity" or "gateway_dukcapil";
#              --agency CODE means NAME=gateway_CODE); the server must run
#   psql       psql as superuser "postgres" over the unix socket
#   max-connections  print the max_connections start would configure
#
# For every NAME in $PG_SERVICES and gateway_<code> for every code in
# $PG_GATEWAY_AGENCIES ("-" becomes "_"):
#   database ikd_NAME          owned by ikd_NAME_owner, CONNECT revoked from PUBLIC
#   role     ikd_NAME_owner    LOGIN, owns the database, runs migrations
#   role     ikd_NAME_app      LOGIN, no other attributes, CONNECT on ikd_NAME only
#                              (table grants come from the service's migrations)
#   role     ikd_NAME_signer   audit's databases only (NAME audit or *_audit): the tree-head
#                              signer's, like _app; its migrations let it read the log and
#                              add tree heads, and take adding tree heads from _app
# plus role ikd_test (LOGIN CREATEDB CREATEROLE) for test fixtures, and a
# password on superuser "postgres" for TCP connections.
#
# Environment:
#   PG_PORT                     TCP port on 127.0.0.1          (default 15432)
#   PG_BIN                      directory with initdb/pg_ctl/psql (default: found)
#   PG_SERVICES                 service names                  (default "identity audit")
#   PG_GATEWAY_AGENCIES         gateway agency codes           (default "")
#   IKD_PG_OWNER_PASSWORD       owner roles' password          (default dev-owner-password)
#   IKD_PG_APP_PASSWORD         runtime roles' password        (default dev-app-password)
#   IKD_PG_SIGNER_PASSWORD      signer roles' password         (default dev-signer-password)
#   IKD_PG_TEST_PASSWORD        ikd_test's password            (default dev-test-password)
#   IKD_PG_SUPERUSER_PASSWORD   postgres's password            (default dev-superuser-password)
#   PG_START_TIMEOUT            seconds to wait for readiness  (default 30)
#   PG_GATEWAY_CONNECTIONS      connections one agency's gateway may hold (default 22: API and
#                               worker, a pool of 10 and a relay connection each)
#   PG_CORE_CONNECTIONS         the other services', migrations' and tools' share (default 100)
#   PG_MAX_CONNECTIONS          max_connections (default: the core share plus every gateway's,
#                               at least 200); a running server with fewer is restarted
#
# Runtime files: .run/postgres/data, .run/postgres/socket (unix socket),
# .run/postgres/postgres.log. As root the server runs as OS user "postgres"
# (PostgreSQL refuses to run as root); otherwise as the current user.
set -euo pipefail

LOG_TAG=postgres
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PG_PORT="${PG_PORT:-15432}"
PG_HOST=127.0.0.1
PG_SERVICES="${PG_SERVICES-identity audit}"
PG_GATEWAY_AGENCIES="${PG_GATEWAY_AGENCIES-}"
PG_START_TIMEOUT="${PG_START_TIMEOUT:-30}"
PG_GATEWAY_CONNECTIONS="${PG_GATEWAY_CONNECTIONS:-22}"
PG_CORE_CONNECTIONS="${PG_CORE_CONNECTIONS:-100}"
PG_RESERVED_CONNECTIONS=3
IKD_PG_OWNER_PASSWORD="${IKD_PG_OWNER_PASSWORD:-dev-owner-password}"
IKD_PG_APP_PASSWORD="${IKD_PG_APP_PASSWORD:-dev-app-password}"
IKD_PG_SIGNER_PASSWORD="${IKD_PG_SIGNER_PASSWORD:-dev-signer-password}"
IKD_PG_TEST_PASSWORD="${IKD_PG_TEST_PASSWORD:-dev-test-password}"
IKD_PG_SUPERUSER_PASSWORD="${IKD_PG_SUPERUSER_PASSWORD:-dev-superuser-password}"

RUN_DIR="${IKD_RUN}/postgres"
DATA_DIR="${RUN_DIR}/data"
SOCKET_DIR="${RUN_DIR}/socket"
LOG_FILE="${RUN_DIR}/postgres.log"
CONF_NAME=ikd-local.conf

PG_OS_USER=postgres

[[ "$PG_PORT" =~ ^[0-9]+$ ]] || die "PG_PORT must be a number, got '$PG_PORT'"

# ---------------------------------------------------------------- helpers --

# Locate initdb/pg_ctl/psql: $PG_BIN, pg_config --bindir, the newest
# /usr/lib/postgresql/*/bin; as root, install the Debian package if none.
find_pg_bin() {
  local dir
  if [[ -n "${PG_BIN:-}" ]]; then
    [[ -x "${PG_BIN}/pg_ctl" ]] || die "PG_BIN=${PG_BIN} has no pg_ctl"
    return 0
  fi
  if have pg_config; then
    dir="$(pg_config --bindir 2>/dev/null || true)"
    if [[ -n "$dir" && -x "${dir}/pg_ctl" && -x "${dir}/initdb" ]]; then
      PG_BIN="$dir"
      return 0
    fi
  fi
  dir="$(newest_debian_bin)"
  if [[ -z "$dir" && "$(id -u)" == 0 ]] && have apt-get; then
    log "no PostgreSQL server binaries found; installing the Debian 'postgresql' package"
    DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null
    # The package starts a cluster on 5432; ours is separate and unaffected.
    dir="$(newest_debian_bin)"
  fi
  if [[ -z "$dir" ]]; then
    die "PostgreSQL server binaries (initdb, pg_ctl) not found. Install them
  (Debian/Ubuntu: sudo apt-get install postgresql; Fedora: sudo dnf install postgresql-server;
  macOS: brew install postgresql@15) or set PG_BIN to the directory holding pg_ctl"
  fi
  PG_BIN="$dir"
}

newest_debian_bin() {
  local d
  d="$(compgen -G '/usr/lib/postgresql/*/bin/pg_ctl' | sort -V | tail -n1 || true)"
  [[ -n "$d" ]] && printf '%s\n' "${d%/pg_ctl}"
  return 0
}

is_root() {
  [[ "$(id -u)" == 0 ]]
}

# Run a PostgreSQL program as the server's OS user, from a directory that
# user can read (so it does not warn about the current directory).
as_pg() {
  if is_root; then
    (cd "$RUN_DIR" && runuser -u "$PG_OS_USER" -- "$@")
  else
    (cd "$RUN_DIR" && "$@")
  fi
}

# As root: the runtime folder belongs to the "postgres" OS user, and every
# directory above it must be traversable by that user.
prepare_dirs() {
  mkdir -p "$RUN_DIR" "$SOCKET_DIR"
  if ! is_root; then
    chmod 700 "$SOCKET_DIR"
    return 0
  fi
  id -u "$PG_OS_USER" >/dev/null 2>&1 ||
    die "OS user '$PG_OS_USER' does not exist (PostgreSQL cannot run as root); create it: useradd -r -m $PG_OS_USER"
  local dir="$RUN_DIR"
  while dir="$(dirname "$dir")" && [[ "$dir" != / ]]; do
    if ! runuser -u "$PG_OS_USER" -- test -x "$dir"; then
      chmod o+x "$dir"
      log "made $dir traversable (o+x) for the '$PG_OS_USER' user"
    fi
  done
  chown "$PG_OS_USER:" "$RUN_DIR" "$SOCKET_DIR"
  chmod 700 "$RUN_DIR" "$SOCKET_DIR"
  if [[ -e "$LOG_FILE" ]]; then
    chown "$PG_OS_USER:" "$LOG_FILE"
  fi
  if [[ -d "$DATA_DIR" && "$(stat -c %U "$DATA_DIR")" != "$PG_OS_USER" ]]; then
    chown -R "$PG_OS_USER:" "$DATA_DIR"
  fi
}

server_version() {
  "${PG_BIN}/postgres" --version | sed -n 's/^postgres (PostgreSQL) \([^ ]*\).*/\1/p'
}

running() {
  [[ -f "${DATA_DIR}/PG_VERSION" ]] || return 1
  as_pg "${PG_BIN}/pg_ctl" status -D "$DATA_DIR" >/dev/null 2>&1
}

ready() {
  as_pg "${PG_BIN}/pg_isready" -q -h "$SOCKET_DIR" -p "$PG_PORT" -U postgres -d postgres
}

# For wait_for: 0 = accepting connections, 1 = not yet, 2 = server died.
ready_or_dead() {
  ready && return 0
  running || return 2
  return 1
}

# psql as superuser over the socket, stopping at the first error.
su_psql() {
  as_pg "${PG_BIN}/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCKET_DIR" -p "$PG_PORT" -U postgres "$@"
}

# A string quoted for psql's \set (single quotes doubled, backslashes escaped),
# so passwords go through stdin and never show up in `ps`.
psql_quote() {
  local s="${1//\\/\\\\}"
  printf "'%s'" "${s//\'/\'\'}"
}

# Every gateway's connections and the core share fit under the limit (the whole MPP: 37
# gateways), so the connection limit is never why a gateway fails to start.
max_connections() {
  if [[ -n "${PG_MAX_CONNECTIONS:-}" ]]; then
    printf '%s\n' "$PG_MAX_CONNECTIONS"
    return
  fi
  local agencies wanted
  agencies=$(wc -w <<<"$PG_GATEWAY_AGENCIES")
  wanted=$((PG_RESERVED_CONNECTIONS + PG_CORE_CONNECTIONS + agencies * PG_GATEWAY_CONNECTIONS))
  printf '%s\n' $((wanted > 200 ? wanted : 200))
}

# Writes the settings file included from postgresql.conf; rewritten on every
# start so PG_PORT changes take effect.
write_config() {
  local conf="${DATA_DIR}/${CONF_NAME}"
  as_pg tee "$conf" >/dev/null <<EOF
# Generated by deploy/scripts/postgres.sh on every start; edits are overwritten.
listen_addresses = '${PG_HOST}'
port = ${PG_PORT}
unix_socket_directories = '${SOCKET_DIR}'
unix_socket_permissions = 0700

max_connections = $(max_connections)
superuser_reserved_connections = ${PG_RESERVED_CONNECTIONS}
password_encryption = scram-sha-256

# Durability is a product promise: tests run with the production settings.
fsync = on
synchronous_commit = on
full_page_writes = on

# Memory and parallelism for a 2-core development machine.
shared_buffers = 256MB
work_mem = 8MB
maintenance_work_mem = 64MB
effective_cache_size = 1GB
max_worker_processes = 4
max_parallel_workers = 2
max_parallel_workers_per_gather = 1
max_parallel_maintenance_workers = 1
max_wal_size = 1GB

# Logging: pg_ctl sends stderr to .run/postgres/postgres.log.
logging_collector = off
log_destination = 'stderr'
log_line_prefix = '%m [%p] %q%u@%d '
log_min_messages = warning
log_min_error_statement = error
log_connections = off
log_disconnections = off
log_lock_waits = on
log_timezone = 'UTC'
timezone = 'UTC'
EOF
  local main_conf="${DATA_DIR}/postgresql.conf"
  if ! grep -qxF "include '${CONF_NAME}'" "$main_conf"; then
    printf "\n# Local development settings (deploy/scripts/postgres.sh).\ninclude '%s'\n" "$CONF_NAME" |
      as_pg tee -a "$main_conf" >/dev/null
  fi
}

init_cluster() {
  [[ -f "${DATA_DIR}/PG_VERSION" ]] && return 0
  # initdb needs the superuser password up front because host connections
  # use scram-sha-256; hand it over in a file only the server user can read.
  local pwfile="${RUN_DIR}/.pwfile"
  (umask 077 && printf '%s\n' "$IKD_PG_SUPERUSER_PASSWORD" >"$pwfile")
  if is_root; then
    chown "$PG_OS_USER:" "$pwfile"
  fi
  local -a args=(-D "$DATA_DIR" -U postgres --pwfile="$pwfile"
    --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8)
  local out rc=0
  out="$(as_pg "${PG_BIN}/initdb" "${args[@]}" --locale=C.UTF-8 2>&1)" || rc=$?
  if ((rc != 0)); then
    # C.UTF-8 is missing on some systems (older glibc, macOS): plain C.
    rm -rf "$DATA_DIR"
    rc=0
    out="$(as_pg "${PG_BIN}/initdb" "${args[@]}" --locale=C 2>&1)" || rc=$?
  fi
  rm -f "$pwfile"
  if ((rc != 0)); then
    printf '%s\n' "$out" >&2
    rm -rf "$DATA_DIR"
    die "initdb failed"
  fi
  log "initialised ${DATA_DIR#"${IKD_ROOT}/"} (PostgreSQL $(server_version))"
}

# "identity" -> identity; "gateway-dukcapil" -> gateway_dukcapil;
# "ikd_audit" -> audit. Dies on anything that is not a safe identifier.
normalize_name() {
  local name="${1,,}"
  name="${name//-/_}"
  name="${name#ikd_}"
  [[ "$name" =~ ^[a-z][a-z0-9_]*$ ]] ||
    die "invalid database name '$1' (letters, digits, '-' and '_' only, starting with a letter)"
  # Longest derived identifier, ikd_<name>_owner, must fit in 63 bytes.
  ((${#name} <= 53)) || die "database name '$1' is too long (max 53 characters)"
  printf '%s\n' "$name"
}

# All NAMEs to provision: services plus gateway_<agency>.
wanted_names() {
  local word
  for word in $PG_SERVICES; do
    normalize_name "$word"
  done
  for word in $PG_GATEWAY_AGENCIES; do
    normalize_name "gateway_${word}"
  done
}

# SQL (for psql, fed on stdin) that creates or updates roles and databases.
# \gexec runs each generated statement; CREATE DATABASE cannot run inside a
# DO block or transaction, hence this style.
provision_sql() {
  local name
  printf '\\set owner_pw %s\n' "$(psql_quote "$IKD_PG_OWNER_PASSWORD")"
  printf '\\set app_pw %s\n' "$(psql_quote "$IKD_PG_APP_PASSWORD")"
  printf '\\set signer_pw %s\n' "$(psql_quote "$IKD_PG_SIGNER_PASSWORD")"
  printf '\\set test_pw %s\n' "$(psql_quote "$IKD_PG_TEST_PASSWORD")"
  printf '\\set su_pw %s\n' "$(psql_quote "$IKD_PG_SUPERUSER_PASSWORD")"
  cat <<'EOF'
SET client_min_messages = warning;
ALTER ROLE postgres WITH PASSWORD :'su_pw';
SELECT 'CREATE ROLE ikd_test' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ikd_test') \gexec
ALTER ROLE ikd_test WITH LOGIN NOSUPERUSER CREATEDB CREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD :'test_pw';
EOF
  for name in "$@"; do
    printf '\\set db %s\n\\set owner %s\n\\set app %s\n' \
      "ikd_${name}" "ikd_${name}_owner" "ikd_${name}_app"
    cat <<'EOF'
SELECT format('CREATE ROLE %I', :'owner') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'owner') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD %L', :'owner', :'owner_pw') \gexec
SELECT format('CREATE ROLE %I', :'app') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'app') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD %L', :'app', :'app_pw') \gexec
SELECT format('CREATE DATABASE %I OWNER %I TEMPLATE template0 ENCODING %L', :'db', :'owner', 'UTF8')
  WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = :'db') \gexec
SELECT format('ALTER DATABASE %I OWNER TO %I', :'db', :'owner') \gexec
SELECT format('REVOKE CONNECT ON DATABASE %I FROM PUBLIC', :'db') \gexec
SELECT format('GRANT CONNECT ON DATABASE %I TO %I', :'db', :'app') \gexec
EOF
    if has_signer "$name"; then
      printf '\\set signer %s\n' "ikd_${name}_signer"
      cat <<'EOF'
SELECT format('CREATE ROLE %I', :'signer') WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'signer') \gexec
SELECT format('ALTER ROLE %I WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS PASSWORD %L', :'signer', :'signer_pw') \gexec
SELECT format('GRANT CONNECT ON DATABASE %I TO %I', :'db', :'signer') \gexec
EOF
    fi
  done
}

# Audit's databases also have the tree-head signer's role (its migrations require it).
has_signer() {
  [[ $1 == audit || $1 == *_audit ]]
}

provision() {
  local -a names=("$@")
  local out
  if ! out="$(provision_sql "${names[@]}" | su_psql -d postgres 2>&1)"; then
    printf '%s\n' "$out" >&2
    die "creating roles/databases failed"
  fi
}

# --------------------------------------------------------------- commands --

cmd_start() {
  find_pg_bin
  prepare_dirs
  local -a names
  mapfile -t names < <(wanted_names)
  if running; then
    wait_for "$PG_START_TIMEOUT" 0.5 ready_or_dead ||
      die "server runs but is not accepting connections on port ${PG_PORT} (see ${LOG_FILE})"
    local have
    have=$(su_psql -d postgres -tAc 'SHOW max_connections')
    if ((have < $(max_connections))); then
      # Too few for these gateways: restart with the larger limit (services reconnect).
      log "max_connections ${have} < $(max_connections) for these gateways: restarting"
      write_config
      as_pg "${PG_BIN}/pg_ctl" restart -s -m fast -w -t "$PG_START_TIMEOUT" -D "$DATA_DIR" -l "$LOG_FILE" >/dev/null 9>&- ||
        die "restart failed (see ${LOG_FILE})"
      wait_for "$PG_START_TIMEOUT" 0.5 ready_or_dead || die "server not ready after restart (see ${LOG_FILE})"
    fi
    provision "${names[@]}"
    log "already running: postgresql $(server_version) on ${PG_HOST}:${PG_PORT}; databases: ${names[*]/#/ikd_}"
    return 0
  fi
  if port_open "$PG_HOST" "$PG_PORT"; then
    die "${PG_HOST}:${PG_PORT} is already taken by another process; set PG_PORT"
  fi
  init_cluster
  write_config
  local started rc=0
  started="$(now_ms)"
  # 9>&-: the postmaster must not inherit (and hold) the start/stop lock.
  if ! as_pg "${PG_BIN}/pg_ctl" start -w -t "$PG_START_TIMEOUT" -s -D "$DATA_DIR" -l "$LOG_FILE" >/dev/null 9>&-; then
    tail -n 20 "$LOG_FILE" >&2 || true
    if running; then
      as_pg "${PG_BIN}/pg_ctl" stop -s -m immediate -D "$DATA_DIR" >/dev/null 2>&1 || true
      die "server not ready within ${PG_START_TIMEOUT}s; stopped it (log tail above)"
    fi
    die "server failed to start (log tail above)"
  fi
  # pg_ctl -w already waited for readiness; confirm over the socket we use.
  wait_for 10 0.5 ready_or_dead || rc=$?
  if ((rc != 0)); then
    tail -n 20 "$LOG_FILE" >&2 || true
    die "server started but does not accept connections on ${SOCKET_DIR#"${IKD_ROOT}/"} port ${PG_PORT}"
  fi
  provision "${names[@]}"
  local secs=$((($(now_ms) - started + 500) / 1000))
  log "started postgresql $(server_version) on ${PG_HOST}:${PG_PORT} (ready in ${secs}s); databases: ${names[*]/#/ikd_}"
}

cmd_stop() {
  find_pg_bin
  if ! running; then
    log "not running"
    return 0
  fi
  as_pg "${PG_BIN}/pg_ctl" stop -s -m fast -w -t 60 -D "$DATA_DIR" ||
    die "pg_ctl stop failed (see ${LOG_FILE})"
  log "stopped"
}

cmd_status() {
  find_pg_bin
  if running && ready; then
    printf 'postgresql %s listening on %s:%s\n' "$(server_version)" "$PG_HOST" "$PG_PORT"
    return 0
  fi
  if running; then
    printf 'postgresql: running but not accepting connections on %s:%s\n' "$PG_HOST" "$PG_PORT"
  else
    printf 'postgresql: not running\n'
  fi
  return 1
}

cmd_ensure_db() {
  local name
  case "${1:-}" in
  --agency)
    [[ -n "${2:-}" ]] || die "usage: postgres.sh ensure-db --agency CODE"
    name="$(normalize_name "gateway_$2")"
    ;;
  "" | -*) die "usage: postgres.sh ensure-db NAME | ensure-db --agency CODE" ;;
  *) name="$(normalize_name "$1")" ;;
  esac
  find_pg_bin
  if ! { running && ready; }; then
    die "server is not running; start it first (deploy/scripts/postgres.sh start)"
  fi
  provision "$name"
  local roles="ikd_${name}_owner, ikd_${name}_app"
  if has_signer "$name"; then roles+=", ikd_${name}_signer"; fi
  log "database ikd_${name} ready (roles $roles)"
}

cmd_psql() {
  find_pg_bin
  running || die "server is not running; start it first (deploy/scripts/postgres.sh start)"
  if is_root; then
    cd "$RUN_DIR"
    exec runuser -u "$PG_OS_USER" -- "${PG_BIN}/psql" -h "$SOCKET_DIR" -p "$PG_PORT" -U postgres "$@"
  fi
  exec "${PG_BIN}/psql" -h "$SOCKET_DIR" -p "$PG_PORT" -U postgres "$@"
}

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

main() {
  local cmd="${1:-}"
  case "$cmd" in
  start | stop | restart | ensure-db) take_lock postgres ;;
  esac
  shift || true
  case "$cmd" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  restart) cmd_stop && cmd_start ;;
  status) cmd_status ;;
  version)
    find_pg_bin
    server_version
    ;;
  ensure-db) cmd_ensure_db "$@" ;;
  psql) cmd_psql "$@" ;;
  max-connections) max_connections ;;
  -h | --help | help) usage ;;
  *)
    usage >&2
    exit 2
    ;;
  esac
}

main "$@"
