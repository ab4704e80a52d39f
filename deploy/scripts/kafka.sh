#!/usr/bin/env bash
# Local Kafka (KRaft, combined broker+controller nodes) for development and
# tests, run straight from Maven Central jars: no Docker, no tarball. One node
# by default; IKD_KAFKA_BROKERS=3 runs a three-node cluster (replication
# factor 3, min.insync.replicas 2, unclean leader election off).
#
# Usage: deploy/scripts/kafka.sh fetch|start|stop|restart|status|version|reset
#        deploy/scripts/kafka.sh start|stop|kill|status N   (one node of a cluster)
#        deploy/scripts/kafka.sh properties N               (node N's settings, secrets hidden)
#
#   fetch    copy the jars listed in deploy/kafka/pom.xml into .run/kafka/lib
#            (skipped when already done for the same pom.xml)
#   start    fetch, write server.properties, format storage on first start,
#            start the broker in the background and wait until it answers
#            an ApiVersions request; reuses a broker that is already running
#   stop     SIGTERM, wait up to 30 s, then SIGKILL; idempotent
#   restart  stop + start
#   status   exit 0 and print "kafka <version> listening on ..." if running
#   version  print the Kafka version
#   reset    stop and delete all topics/data (keeps the jars)
#   kill N   SIGKILL node N (a crash, for the cluster tests)
#
# Environment:
#   IKD_KAFKA_BROKERS      nodes: 1 (default) or 3
#   KAFKA_PORT             client listener port         (default 19092; node N: +100*(N-1))
#   KAFKA_CONTROLLER_PORT  KRaft controller port        (default 19093; node N: +100*(N-1))
#   KAFKA_HEAP_OPTS        heap per node  (default -Xms256m -Xmx1g; cluster -Xms128m -Xmx512m)
#   KAFKA_OPTS             extra JVM options for the broker
#   KAFKA_START_TIMEOUT    seconds to wait for the broker (default 60; cluster 180)
#   JAVA_HOME / JAVA       Java 17+ to use              (default: java on PATH)
#
# Security: the client listener is SASL_SSL with SCRAM-SHA-512, the KRaft
# controller listener SSL with required client certificates (KRaft cannot
# serve SCRAM on a controller listener: SCRAM users live in the metadata log
# that the controller itself serves). The broker's StandardAuthorizer denies
# whatever no ACL allows; super users: admin, the broker's own SCRAM user and
# the controller's certificate (CN=controller). The CA, the broker's key and
# certificate and the passwords come from .run/dev/kafka (make setup); the
# admin and broker SCRAM users are created when the storage is formatted.
# Storage formatted without them (an older .run/kafka) is formatted anew.
#
# A cluster's nodes each get their own certificate (SAN localhost, 127.0.0.1,
# CN=controller), issued from the same development CA; the nodes talk to each
# other over the same listeners (inter-broker SCRAM, controller mutual TLS).
#
# Runtime files live in .run/kafka/: lib/ data/ logs/ server.properties
# client.properties (the admin's, for the Kafka CLI tools) kafka.pid cluster.id. Broker log: .run/kafka/logs/server.log; JVM
# stdout/stderr: .run/kafka/logs/kafka.out. A cluster's: .run/kafka-cluster/
# (cluster.id, client.properties) and .run/kafka-cluster/node-N/ (the same per node).
set -euo pipefail

LOG_TAG=kafka
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KAFKA_PORT="${KAFKA_PORT:-19092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-19093}"
KAFKA_BROKERS="${IKD_KAFKA_BROKERS:-1}"
[[ "$KAFKA_BROKERS" =~ ^[1-9]$ ]] || die "IKD_KAFKA_BROKERS must be 1..9, got '$KAFKA_BROKERS'"
if ((KAFKA_BROKERS == 1)); then
  KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx1g}"
else
  KAFKA_HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms128m -Xmx512m}"
fi
KAFKA_OPTS="${KAFKA_OPTS:-}"
# A cluster node restarted after a crash waits until the quorum expired its old session.
KAFKA_START_TIMEOUT="${KAFKA_START_TIMEOUT:-$( ((${IKD_KAFKA_BROKERS:-1} > 1)) && echo 180 || echo 60)}"
KAFKA_HOST=127.0.0.1

POM_DIR="${IKD_ROOT}/deploy/kafka"
POM="${POM_DIR}/pom.xml"
LOG4J_CONF="${POM_DIR}/log4j2.properties"

# The jars are shared; a cluster's data lives apart from the single node's.
LIB_DIR="${IKD_RUN}/kafka/lib"
LIB_STAMP="${IKD_RUN}/kafka/lib.stamp"
if ((KAFKA_BROKERS == 1)); then
  RUN_DIR="${IKD_RUN}/kafka"
else
  RUN_DIR="${IKD_RUN}/kafka-cluster"
fi
CLUSTER_ID_FILE="${RUN_DIR}/cluster.id"
CLIENT_PROPS="${RUN_DIR}/client.properties"
SECRETS_DIR="${IKD_RUN}/dev/kafka"
TOOL_LOG_DIR="${RUN_DIR}/logs"

# select_node N: the paths and ports of node N (the single node's are the historic ones).
select_node() {
  NODE="$1"
  [[ "$NODE" =~ ^[0-9]+$ ]] && ((NODE >= 1 && NODE <= KAFKA_BROKERS)) ||
    die "no node '$NODE' (IKD_KAFKA_BROKERS=$KAFKA_BROKERS)"
  if ((KAFKA_BROKERS == 1)); then
    NODE_DIR="$RUN_DIR"
    KEYSTORE="${SECRETS_DIR}/broker.pem"
  else
    NODE_DIR="${RUN_DIR}/node-${NODE}"
    KEYSTORE="${NODE_DIR}/node.pem"
  fi
  NODE_PORT=$((KAFKA_PORT + 100 * (NODE - 1)))
  NODE_CONTROLLER_PORT=$((KAFKA_CONTROLLER_PORT + 100 * (NODE - 1)))
  DATA_DIR="${NODE_DIR}/data"
  LOG_DIR="${NODE_DIR}/logs"
  PROPS="${NODE_DIR}/server.properties"
  PID_FILE="${NODE_DIR}/kafka.pid"
  # Written after a format that bootstrapped the SCRAM users; its content names their passwords.
  SECURED_STAMP="${DATA_DIR}/ikd-secured"
}
select_node 1

all_nodes() {
  seq 1 "$KAFKA_BROKERS"
}

# host:port of every node's client listener, comma-separated (IKD_KAFKA_BOOTSTRAP_SERVERS).
bootstrap_servers() {
  local n out=()
  for n in $(all_nodes); do
    out+=("${KAFKA_HOST}:$((KAFKA_PORT + 100 * (n - 1)))")
  done
  (IFS=, && printf '%s\n' "${out[*]}")
}

if [[ -n "${JAVA:-}" ]]; then
  :
elif [[ -n "${JAVA_HOME:-}" && -x "${JAVA_HOME}/bin/java" ]]; then
  JAVA="${JAVA_HOME}/bin/java"
else
  JAVA=java
fi

[[ "$KAFKA_PORT" =~ ^[0-9]+$ ]] || die "KAFKA_PORT must be a number, got '$KAFKA_PORT'"
[[ "$KAFKA_CONTROLLER_PORT" =~ ^[0-9]+$ ]] ||
  die "KAFKA_CONTROLLER_PORT must be a number, got '$KAFKA_CONTROLLER_PORT'"
[[ "$KAFKA_PORT" != "$KAFKA_CONTROLLER_PORT" ]] ||
  die "KAFKA_PORT and KAFKA_CONTROLLER_PORT must differ"

# ---------------------------------------------------------------- helpers --

require_java() {
  have "$JAVA" || die "java not found; install a JDK 17+ (apt-get install openjdk-17-jre-headless) or set JAVA_HOME"
  local major
  major="$("$JAVA" -XshowSettings:properties -version 2>&1 |
    sed -n 's/^ *java\.specification\.version = \([0-9.]*\).*/\1/p')"
  major="${major#1.}"
  major="${major%%.*}"
  if [[ -n "$major" ]] && ((major < 17)); then
    die "Kafka 4 needs Java 17+, but $JAVA is Java $major"
  fi
}

# Short-lived CLI tool JVMs (StorageTool, BrokerApiVersionsCommand): small
# heap, fast start-up, WARN-level logging to logs/tools.log. An array rather
# than a function so that it also works under `timeout`.
TOOL_JAVA=("$JAVA" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1
  -Djava.awt.headless=true
  -Dlog4j2.configurationFile="$LOG4J_CONF"
  -Dkafka.logs.dir="$TOOL_LOG_DIR" -Dkafka.log.file=tools.log -Dkafka.log.level=WARN
  -cp "${LIB_DIR}/*")

lib_present() {
  compgen -G "${LIB_DIR}/kafka_2.13-*.jar" >/dev/null &&
    compgen -G "${LIB_DIR}/kafka-tools-*.jar" >/dev/null
}

lib_current() {
  lib_present && [[ -f "$LIB_STAMP" && "$(<"$LIB_STAMP")" == "$(file_hash "$POM")" ]]
}

kafka_version() {
  local jar
  jar="$(compgen -G "${LIB_DIR}/kafka_2.13-*.jar" | head -n1 || true)"
  if [[ -n "$jar" ]]; then
    jar="${jar##*/kafka_2.13-}"
    printf '%s\n' "${jar%.jar}"
  else
    # Not fetched yet: what fetch would install.
    sed -n 's:.*<kafka\.version>\(.*\)</kafka\.version>.*:\1:p' "$POM" | head -n1
  fi
}

# Pid of our broker if it runs, else nothing (and return 1). A pid file
# whose process is gone, or now belongs to something else, is ignored.
broker_pid() {
  local pid
  if [[ -f "$PID_FILE" ]]; then
    pid="$(<"$PID_FILE")"
    if pid_alive "$pid" && [[ "$(pid_cmdline "$pid")" == *"kafka.Kafka ${PROPS}"* ]]; then
      printf '%s\n' "$pid"
      return 0
    fi
  fi
  # No (valid) pid file: look for a broker started on our server.properties.
  pid="$(pgrep -f -- "kafka\.Kafka $(regex_escape "$PROPS")( |$)" | head -n1 || true)"
  if [[ -n "$pid" ]]; then
    printf '%s\n' "$pid" >"$PID_FILE"
    printf '%s\n' "$pid"
    return 0
  fi
  return 1
}

tail_logs() {
  local f
  for f in "${LOG_DIR}/kafka.out" "${LOG_DIR}/server.log"; do
    if [[ -s "$f" ]]; then
      printf -- '--- last lines of %s ---\n' "${f#"${IKD_ROOT}/"}" >&2
      tail -n 30 "$f" >&2
    fi
  done
}

# --------------------------------------------------------------- commands --

cmd_fetch() {
  local pid
  if lib_current; then
    return 0
  fi
  have mvn || die "mvn not found; install Maven 3.6+ (apt-get install maven)"
  require_java
  if pid="$(broker_pid)"; then
    die "the broker (pid $pid) runs from ${LIB_DIR#"${IKD_ROOT}/"}; stop it before refetching"
  fi
  mkdir -p "${LIB_DIR%/*}"
  local tmp="${LIB_DIR}.new" mvn_log="${LIB_DIR%/*}/mvn.log"
  local -a mvn_args=(-B -q -Dstyle.color=never -f "$POM"
    dependency:copy-dependencies -DoutputDirectory="$tmp")
  rm -rf "$tmp"
  # Offline first: after the first download everything is in ~/.m2.
  if ! mvn -o "${mvn_args[@]}" >"$mvn_log" 2>&1; then
    rm -rf "$tmp"
    log "downloading Kafka $(kafka_version) jars with Maven (~55 MB, once)"
    if ! mvn "${mvn_args[@]}" >"$mvn_log" 2>&1; then
      cat "$mvn_log" >&2
      rm -rf "$tmp"
      die "mvn dependency:copy-dependencies failed (see above)"
    fi
  fi
  # Swap in atomically-ish, so a pom change never leaves stale jars behind.
  rm -rf "$LIB_DIR"
  mv "$tmp" "$LIB_DIR"
  rm -f "$mvn_log"
  file_hash "$POM" >"$LIB_STAMP"
  lib_present || die "jars missing from ${LIB_DIR} after mvn; check ${POM#"${IKD_ROOT}/"}"
  log "jars ready in ${LIB_DIR#"${IKD_ROOT}/"} ($(find "$LIB_DIR" -name '*.jar' | wc -l) jars)"
}

secret() {
  if [[ -n "${REDACT_SECRETS:-}" ]]; then
    printf '<%s password>' "$1"
    return 0
  fi
  local file="${SECRETS_DIR}/$1.password"
  [[ -s "$file" ]] || die "${file#"${IKD_ROOT}/"} is missing; run make setup"
  printf '%s' "$(<"$file")"
}

require_secrets() {
  local f
  for f in ca.pem broker.pem; do
    [[ -s "${SECRETS_DIR}/$f" ]] || die "${SECRETS_DIR#"${IKD_ROOT}/"}/$f is missing; run make setup"
  done
}

# A cluster node's own certificate from the development CA: CN=controller (the controller
# listener's mutual-TLS principal, a super user), SAN localhost and 127.0.0.1. Issued again
# when the CA changed.
ensure_node_keystore() {
  ((KAFKA_BROKERS > 1)) || return 0
  local stamp="${KEYSTORE}.ca" ca_hash
  ca_hash="$(file_hash "${SECRETS_DIR}/ca.pem")"
  if [[ -s "$KEYSTORE" && -f "$stamp" && "$(<"$stamp")" == "$ca_hash" ]]; then
    return 0
  fi
  have openssl || die "openssl is needed for the cluster's node certificates"
  [[ -s "${SECRETS_DIR}/ca.key" ]] || die "${SECRETS_DIR#"${IKD_ROOT}/"}/ca.key is missing; run make setup"
  # shellcheck source-path=SCRIPTDIR source=../compose/kafka-pki.sh
  source "${IKD_ROOT}/deploy/compose/kafka-pki.sh"
  mkdir -p "$NODE_DIR"
  (umask 077 && kafka_keystore "$SECRETS_DIR" controller "DNS:localhost,IP:127.0.0.1" \
    serverAuth,clientAuth >"${KEYSTORE}.tmp")
  mv "${KEYSTORE}.tmp" "$KEYSTORE"
  printf '%s\n' "$ca_hash" >"$stamp"
}

security_stamp() {
  printf 'scram-sha-512 %s\n' "$(printf '%s %s' "$(secret admin)" "$(secret broker)" | sha256sum | cut -d' ' -f1)"
}

write_client_properties() {
  local tmp="${CLIENT_PROPS}.tmp"
  mkdir -p "$RUN_DIR"
  (umask 077 && : >"$tmp")
  cat >"$tmp" <<EOT
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$(secret admin)";
ssl.truststore.type=PEM
ssl.truststore.location=${SECRETS_DIR}/ca.pem
EOT
  mv "$tmp" "$CLIENT_PROPS"
}

# The quorum: a single node bootstraps a dynamic quorum of itself (format --standalone); a
# cluster has a static voter set, as deploy/cluster/kafka-cluster.compose.yml.
quorum_properties() {
  if ((KAFKA_BROKERS == 1)); then
    printf 'controller.quorum.bootstrap.servers=%s:%s\n' "$KAFKA_HOST" "$NODE_CONTROLLER_PORT"
    return
  fi
  local n voters=()
  for n in $(all_nodes); do
    voters+=("${n}@${KAFKA_HOST}:$((KAFKA_CONTROLLER_PORT + 100 * (n - 1)))")
  done
  (IFS=, && printf 'controller.quorum.voters=%s\n' "${voters[*]}")
}

# Node NODE's settings on stdout.
server_properties() {
  local replicas=$((KAFKA_BROKERS < 3 ? KAFKA_BROKERS : 3)) min_isr=1
  ((replicas < 3)) || min_isr=2
  cat <<EOT
# Generated by deploy/scripts/kafka.sh on every start; edits are overwritten.
# KRaft node ${NODE} of ${KAFKA_BROKERS} (combined broker and controller) for development and tests.
process.roles=broker,controller
node.id=${NODE}
$(quorum_properties)
listeners=SASL_SSL://${KAFKA_HOST}:${NODE_PORT},CONTROLLER://${KAFKA_HOST}:${NODE_CONTROLLER_PORT}
advertised.listeners=SASL_SSL://${KAFKA_HOST}:${NODE_PORT},CONTROLLER://${KAFKA_HOST}:${NODE_CONTROLLER_PORT}
controller.listener.names=CONTROLLER
inter.broker.listener.name=SASL_SSL
# No PLAINTEXT listener: clients authenticate with SCRAM over TLS; the controller
# listener takes only peers holding a certificate of the development CA.
listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SSL
sasl.enabled.mechanisms=SCRAM-SHA-512
sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="broker" password="$(secret broker)";
ssl.keystore.type=PEM
ssl.keystore.location=${KEYSTORE}
ssl.truststore.type=PEM
ssl.truststore.location=${SECRETS_DIR}/ca.pem
listener.name.controller.ssl.client.auth=required
# CN=controller,O=... -> User:controller
ssl.principal.mapping.rules=RULE:^CN=([^,]+),.*\$/\$1/,DEFAULT
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
allow.everyone.if.no.acl.found=false
super.users=User:admin;User:broker;User:controller

log.dirs=${DATA_DIR}

# Topics are created explicitly by the services (with their own settings).
auto.create.topics.enable=false
delete.topic.enable=true
num.partitions=1
# One replica per node, at most 3; with acks=all an acknowledged write is on
# min.insync.replicas nodes, and an out-of-sync replica never becomes leader.
default.replication.factor=${replicas}
min.insync.replicas=${min_isr}
unclean.leader.election.enable=false

# Internal topics: replicated like the rest; fewer partitions than the defaults
# (50) so the first consumer group / transaction on a fresh broker is quick.
offsets.topic.replication.factor=${replicas}
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=${replicas}
transaction.state.log.min.isr=${min_isr}
transaction.state.log.num.partitions=10
share.coordinator.state.topic.replication.factor=${replicas}
share.coordinator.state.topic.min.isr=${min_isr}

# Tests start consumers one after the other; do not wait 3 s per rebalance.
group.initial.rebalance.delay.ms=0

# Sized for a 2-core development machine.
num.network.threads=2
num.io.threads=4
background.threads=4
num.recovery.threads.per.data.dir=1
num.replica.fetchers=1
log.cleaner.threads=1

log.retention.hours=168
log.segment.bytes=268435456
EOT
}

write_server_properties() {
  local tmp="${PROPS}.tmp"
  (umask 077 && : >"$tmp")
  server_properties >"$tmp"
  mv "$tmp" "$PROPS"
}

format_storage() {
  if [[ -f "${DATA_DIR}/meta.properties" ]]; then
    if [[ -f "$SECURED_STAMP" && "$(<"$SECURED_STAMP")" == "$(security_stamp)" ]]; then
      return 0
    fi
    # Its metadata lacks our SCRAM users (formatted before the bus was secured, or
    # with other passwords): no client could ever authenticate. Development data only.
    log "${DATA_DIR#"${IKD_ROOT}/"} was formatted without the current SCRAM users; formatting it anew (its topics are deleted)"
    rm -rf "$DATA_DIR"
    ((KAFKA_BROKERS > 1)) || rm -f "$CLUSTER_ID_FILE"
    mkdir -p "$DATA_DIR"
  fi
  local cluster_id
  if [[ -s "$CLUSTER_ID_FILE" ]]; then
    cluster_id="$(<"$CLUSTER_ID_FILE")"
  else
    mkdir -p "$TOOL_LOG_DIR"
    cluster_id="$("${TOOL_JAVA[@]}" kafka.tools.StorageTool random-uuid)" ||
      die "kafka-storage random-uuid failed (see ${TOOL_LOG_DIR}/tools.log)"
    printf '%s\n' "$cluster_id" >"$CLUSTER_ID_FILE"
  fi
  local out
  local -a quorum=()
  ((KAFKA_BROKERS > 1)) || quorum=(--standalone)
  if ! out="$("${TOOL_JAVA[@]}" kafka.tools.StorageTool format "${quorum[@]}" \
    --cluster-id "$cluster_id" --config "$PROPS" \
    --add-scram "SCRAM-SHA-512=[name=admin,password=$(secret admin)]" \
    --add-scram "SCRAM-SHA-512=[name=broker,password=$(secret broker)]" 2>&1)"; then
    printf '%s\n' "$out" >&2
    die "formatting ${DATA_DIR} failed"
  fi
  security_stamp >"$SECURED_STAMP"
  log "formatted ${DATA_DIR#"${IKD_ROOT}/"} (cluster id $cluster_id)"
}

# For wait_for: 0 = port answers, 1 = not yet, 2 = broker process died.
broker_port_up() {
  pid_alive "$1" || return 2
  port_open "$KAFKA_HOST" "$NODE_PORT"
}

broker_answers() {
  timeout 30 "${TOOL_JAVA[@]}" org.apache.kafka.tools.BrokerApiVersionsCommand \
    --bootstrap-server "${KAFKA_HOST}:${NODE_PORT}" --command-config "$CLIENT_PROPS" >/dev/null 2>&1
}

# Launch the selected node unless it runs; print its pid. STARTING_PID is set when launched.
launch_node() {
  local pid
  STARTING=0
  if pid="$(broker_pid)"; then
    if ! grep -q '^listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SSL$' "$PROPS"; then
      die "pid $pid runs a broker without TLS and SASL from ${NODE_DIR#"${IKD_ROOT}/"}; restart it: deploy/scripts/kafka.sh restart"
    fi
    NODE_PID="$pid"
    return 0
  fi
  require_java
  local port
  for port in "$NODE_PORT" "$NODE_CONTROLLER_PORT"; do
    if port_open "$KAFKA_HOST" "$port"; then
      die "${KAFKA_HOST}:${port} is already taken by another process; set KAFKA_PORT/KAFKA_CONTROLLER_PORT"
    fi
  done
  mkdir -p "$DATA_DIR" "$LOG_DIR"
  ensure_node_keystore
  write_server_properties
  format_storage
  rm -f "$PID_FILE"
  {
    printf '\n=== %s starting kafka %s ===\n' "$(date '+%F %T')" "$(kafka_version)"
  } >>"${LOG_DIR}/kafka.out"
  local -a heap extra
  read -r -a heap <<<"$KAFKA_HEAP_OPTS"
  read -r -a extra <<<"$KAFKA_OPTS"
  # setsid: own session, so the broker survives the calling shell/terminal
  # and a Ctrl-C there. nohup+setsid exec in place, so $! is java's pid.
  # 9>&-: the broker must not inherit (and hold) the start/stop lock.
  (
    cd "$NODE_DIR"
    exec setsid nohup "$JAVA" "${heap[@]}" -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
      -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
      -Djava.awt.headless=true \
      -Dlog4j2.configurationFile="$LOG4J_CONF" -Dkafka.logs.dir="$LOG_DIR" \
      "${extra[@]}" \
      -cp "${LIB_DIR}/*" kafka.Kafka "$PROPS" \
      >>"${LOG_DIR}/kafka.out" 2>&1 </dev/null 9>&-
  ) &
  NODE_PID=$!
  STARTING=1
  printf '%s\n' "$NODE_PID" >"$PID_FILE"
}

# Wait until the selected node (pid $1) serves clients; STARTED_MS: when its wait began.
await_node() {
  local pid="$1" started="$2" rc=0
  wait_for "$KAFKA_START_TIMEOUT" 0.5 broker_port_up "$pid" || rc=$?
  if ((rc == 0)); then
    # The port opens slightly before the broker is registered and unfenced;
    # one real ApiVersions round trip proves it serves clients.
    local left=$((KAFKA_START_TIMEOUT - ($(now_ms) - started) / 1000))
    ((left > 5)) || left=5
    wait_for "$left" 0.5 broker_answers || rc=$?
  fi
  if ((rc != 0)); then
    tail_logs
    if ((rc == 2)); then
      rm -f "$PID_FILE"
      die "node $NODE exited during start-up (log tail above)"
    fi
    stop_node >/dev/null 2>&1 || true
    die "node $NODE did not answer on ${KAFKA_HOST}:${NODE_PORT} within ${KAFKA_START_TIMEOUT}s; stopped it (log tail above)"
  fi
  local secs=$((($(now_ms) - started + 500) / 1000))
  log "kafka $(kafka_version) node $NODE serves ${KAFKA_HOST}:${NODE_PORT} (pid $pid, ready in ${secs}s)"
}

# start [N]: every node (launched together: a quorum needs a majority to answer at all), or N.
cmd_start() {
  local nodes=("$@") n started
  ((${#nodes[@]})) || mapfile -t nodes < <(all_nodes)
  require_secrets
  write_client_properties
  local -A pids=()
  for n in "${nodes[@]}"; do
    select_node "$n"
    if ((n == nodes[0])) && ! broker_pid >/dev/null; then
      cmd_fetch
    fi
    launch_node
    pids[$n]=$NODE_PID
  done
  started="$(now_ms)"
  for n in "${nodes[@]}"; do
    select_node "$n"
    await_node "${pids[$n]}" "$started"
  done
  if ((KAFKA_BROKERS > 1 && ${#nodes[@]} == KAFKA_BROKERS)); then
    log "cluster of $KAFKA_BROKERS nodes: IKD_KAFKA_BOOTSTRAP_SERVERS=$(bootstrap_servers)"
  fi
}

# stop_node [SIGNAL]: the selected node; TERM waits up to 30 s, then KILL.
stop_node() {
  local signal="${1:-TERM}" pid stopped=0
  if pid="$(broker_pid)"; then
    kill "-$signal" "$pid" 2>/dev/null || true
    if ! wait_for 30 0.2 negate pid_alive "$pid"; then
      log "pid $pid ignored SIG$signal for 30s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
      wait_for 5 0.1 negate pid_alive "$pid" || die "could not kill pid $pid"
    fi
    stopped=1
  fi
  # Anything else still running on our server.properties (e.g. a broker
  # whose pid file was deleted): same treatment.
  local pattern
  pattern="kafka\.Kafka $(regex_escape "$PROPS")( |$)"
  if pgrep -f -- "$pattern" >/dev/null; then
    pkill "-$signal" -f -- "$pattern" || true
    if ! wait_for 30 0.2 negate pgrep -f -- "$pattern"; then
      pkill -KILL -f -- "$pattern" || true
      wait_for 5 0.1 negate pgrep -f -- "$pattern" || die "could not kill leftover brokers: $(pgrep -af -- "$pattern")"
    fi
    stopped=1
  fi
  rm -f "$PID_FILE"
  local name=""
  ((KAFKA_BROKERS == 1)) || name="node $NODE "
  if ((stopped)); then
    log "${name}$([[ "$signal" == KILL ]] && echo killed || echo stopped)"
  else
    log "${name}not running"
  fi
}

cmd_stop() {
  local nodes=("$@") n pid
  ((${#nodes[@]})) || mapfile -t nodes < <(all_nodes | sort -r)
  if ((${#nodes[@]} > 1)); then
    # All at once: a node stopped last would wait in vain for a quorum to leave.
    for n in "${nodes[@]}"; do
      select_node "$n"
      if pid="$(broker_pid)"; then kill -TERM "$pid" 2>/dev/null || true; fi
    done
  fi
  for n in "${nodes[@]}"; do
    select_node "$n"
    stop_node TERM
  done
}

cmd_kill() {
  (($# == 1)) || die "kill needs a node number"
  select_node "$1"
  stop_node KILL
}

negate() {
  ! "$@" >/dev/null 2>&1
}

# status [N]: 0 when every node asked for (default: all) listens.
cmd_status() {
  local nodes=("$@") n pid rc=0
  ((${#nodes[@]})) || mapfile -t nodes < <(all_nodes)
  for n in "${nodes[@]}"; do
    select_node "$n"
    local name=kafka
    ((KAFKA_BROKERS == 1)) || name="kafka node $NODE"
    pid=""
    if pid="$(broker_pid)" && port_open "$KAFKA_HOST" "$NODE_PORT"; then
      printf '%s %s listening on %s:%s (pid %s)\n' "$name" "$(kafka_version)" "$KAFKA_HOST" "$NODE_PORT" "$pid"
      continue
    fi
    rc=1
    if [[ -n "${pid:-}" ]]; then
      printf '%s: pid %s is running but %s:%s does not answer\n' "$name" "$pid" "$KAFKA_HOST" "$NODE_PORT"
    else
      printf '%s: not running\n' "$name"
    fi
  done
  return "$rc"
}

cmd_reset() {
  cmd_stop
  local n
  for n in $(all_nodes); do
    select_node "$n"
    rm -rf "$DATA_DIR"
  done
  rm -f "$CLUSTER_ID_FILE"
  log "deleted the data of ${RUN_DIR#"${IKD_ROOT}/"}; next start formats a fresh cluster"
}

usage() {
  sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"
}

main() {
  local cmd="${1:-}"
  shift || true
  case "$cmd" in
  fetch | start | stop | restart | reset | kill) take_lock "$( ((KAFKA_BROKERS == 1)) && echo kafka || echo kafka-cluster)" ;;
  esac
  case "$cmd" in
  fetch) cmd_fetch ;;
  start) cmd_start "$@" ;;
  stop) cmd_stop "$@" ;;
  kill) cmd_kill "$@" ;;
  restart) cmd_stop "$@" && cmd_start "$@" ;;
  status) cmd_status "$@" ;;
  version) kafka_version ;;
  reset) cmd_reset ;;
  bootstrap) bootstrap_servers ;;
  properties)
    select_node "${1:-1}"
    REDACT_SECRETS=1 server_properties
    ;;
  -h | --help | help) usage ;;
  *)
    usage >&2
    exit 2
    ;;
  esac
}

main "$@"
