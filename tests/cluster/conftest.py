"""The platform on a local three-broker Kafka cluster, with brokers and processes lost under load.

`make test-cluster` starts the cluster (IKD_KAFKA_BROKERS=3, deploy/scripts/kafka.sh) and
PostgreSQL and sets IKD_CLUSTER_TESTS=1; without it these tests are skipped. The services run
as separate processes, each as its own Kafka principal: identity's API, two identity outbox
relays (one active, one standby), audit, and the stream workers of two agencies, one of them
as two replicas in its consumer group. Every run has its own databases and topic prefix.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ikd_ops import kafka_security
from ikd_ops.platform import Endpoints
from ikd_shared.events import topics
from ikd_shared.kafka import delete_prefixed_topics, ensure_topics
from tests.e2e.platform.conftest import Stack, free_port, principal_env
from tests.support.databases import Database, DatabaseTemplates
from tests.support.environment import REPO
from tests.support.kafka import kafka_connection, password

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
BASH = shutil.which("bash") or "/bin/bash"
KAFKA_SH = REPO / "deploy" / "scripts" / "kafka.sh"
BROKERS = int(os.environ.get("IKD_KAFKA_BROKERS", "1"))
REPLICATION_FACTOR = int(os.environ.get("IKD_KAFKA_REPLICATION_FACTOR", "1"))
# Related agencies: polres-cirebon's worker runs as two replicas of one consumer group.
AGENCIES = ("polres-cirebon", "dinsos-cirebon")
REPLICATED_AGENCY = "polres-cirebon"
FEED_CLIENT = "dukcapil-feed"
CLIENT_SECRET = "cluster-client-secret"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    ours = [item for item in items if HERE in Path(str(item.fspath)).parents]
    for item in ours:
        item.add_marker(pytest.mark.cluster)
    if os.environ.get("IKD_CLUSTER_TESTS") == "1" and BROKERS >= 3:
        return
    skip = pytest.mark.skip(reason="needs the three-broker cluster: make test-cluster")
    for item in ours:
        item.add_marker(skip)


class Cluster:
    """The local brokers, driven through deploy/scripts/kafka.sh (node N has node.id N)."""

    def run(self, *args: str) -> None:
        result = subprocess.run(  # noqa: S603 - the project's own script
            [BASH, str(KAFKA_SH), *args],
            capture_output=True,
            text=True,
            check=False,
            # a node back after a crash waits until the quorum expired its old session
            env={**os.environ, "KAFKA_START_TIMEOUT": "240"},
        )
        if result.returncode != 0:
            raise AssertionError(f"kafka.sh {' '.join(args)}: {result.stderr[-2000:]}")

    def kill(self, *nodes: int) -> None:
        """SIGKILL: a crash, no controlled shutdown."""
        for node in nodes:
            self.run("kill", str(node))

    def start(self, *nodes: int) -> None:
        self.run("start", *map(str, nodes))

    async def leaders(self, topic: str) -> dict[int, int]:
        """Partition -> the node leading it (-1: none)."""

        def read() -> dict[int, int]:
            metadata = kafka_connection().confluent_admin().list_topics(topic=topic, timeout=15)
            return {p: part.leader for p, part in metadata.topics[topic].partitions.items()}

        return await asyncio.to_thread(read)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    cluster = Cluster()
    yield cluster
    cluster.start()  # every node back for whatever runs next


@dataclass
class ClusterStack:
    """The processes of a run; `stack` starts and stops them (tests/e2e's Stack)."""

    stack: Stack
    identity_db: Database
    audit_db: Database
    gateway_dbs: dict[str, Database]
    topic_prefix: str
    commands: dict[str, tuple[list[str], dict[str, str]]] = field(default_factory=dict)

    def start(self, name: str, command: list[str], env: dict[str, str]) -> None:
        self.commands[name] = (command, env)
        self.stack.start(name, command, env)

    def restart(self, name: str) -> None:
        self.start(name, *self.commands[name])

    def kill(self, name: str) -> None:
        """SIGKILL the process (and its children): a crash, nothing flushed or closed."""
        process = self.stack.processes[name]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def log(self, name: str) -> str:
        return (self.stack.logs / f"{name}.log").read_text(errors="replace")

    def active_relay(self) -> str:
        """The identity relay holding the outbox lock (the other stands by)."""
        active = [
            name
            for name in ("relay-a", "relay-b")
            if self.stack.processes[name].poll() is None and '"relay active"' in self.log(name)
        ]
        assert len(active) == 1, f"active relays: {active}"
        return active[0]


def wait_for_group(group: str, members: int, seconds: float = 120.0) -> None:
    """Until the consumer group is stable with `members` members (blocking)."""

    def describe() -> tuple[str, int]:
        admin = kafka_connection().confluent_admin()
        description = admin.describe_consumer_groups([group])[group].result(timeout=15)
        return str(description.state), len(description.members)

    deadline = time.monotonic() + seconds
    state: tuple[str, int] = ("?", 0)
    while time.monotonic() < deadline:
        try:
            state = describe()
        except Exception:  # the coordinator may be moving: ask again
            state = ("unavailable", 0)
        if state[0].endswith("STABLE") and state[1] == members:
            return
        time.sleep(1)
    raise AssertionError(f"group {group} is {state}, not stable with {members} members")


@pytest.fixture(scope="module")
async def run_prefix(cluster: Cluster) -> AsyncIterator[str]:
    """The run's topics, replicated like the platform's (IKD_KAFKA_REPLICATION_FACTOR)."""
    cluster.start()
    prefix = f"c{os.urandom(5).hex()}."
    admin = kafka_connection()
    await ensure_topics(
        admin,
        prefix=prefix,
        replication_factor=REPLICATION_FACTOR,
        specs=[*topics.ALL_TOPICS, *(topics.agency_topic(agency) for agency in AGENCIES)],
    )
    yield prefix
    await delete_prefixed_topics(admin, prefix)


@pytest.fixture(scope="module")
async def run_databases(
    database_templates: DatabaseTemplates,
) -> AsyncIterator[tuple[Database, Database, dict[str, Database]]]:
    created: list[Database] = []

    async def copy(service: str, migrations: str) -> Database:
        database = await database_templates.copy(service, REPO / migrations)
        created.append(database)
        return database

    identity_db = await copy("identity", "services/identity/migrations")
    audit_db = await copy("audit", "services/audit/src/ikd_audit/migrations")
    gateway_dbs = {
        agency: await copy("gateway", "services/agency_gateway/migrations") for agency in AGENCIES
    }
    yield identity_db, audit_db, gateway_dbs
    for database in created:
        await database_templates.drop(database.name)


@pytest.fixture(scope="module")
async def run_principals(run_prefix: str) -> AsyncIterator[str]:
    """Users and the run's ACLs, as the operator applies them; yields the audit group."""
    admin = kafka_connection()
    audit_group = f"{run_prefix}audit"
    names = ["identity", "audit", *(kafka_security.gateway_principal(a) for a in AGENCIES)]
    await kafka_security.upsert_users(admin, {name: password(name) for name in names})
    grants = kafka_security.grants(AGENCIES, prefix=run_prefix, audit_group=audit_group)
    await kafka_security.apply_acls(admin, grants)
    yield audit_group
    await kafka_security.delete_acls(
        admin, [grant for grant in grants if grant.name.startswith(run_prefix)]
    )


@pytest.fixture(scope="module")
def platform(
    run_databases: tuple[Database, Database, dict[str, Database]],
    run_prefix: str,
    run_principals: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ClusterStack]:
    identity_db, audit_db, gateway_dbs = run_databases
    root = tmp_path_factory.mktemp("cluster")
    keys, logs = root / "keys", root / "logs"
    logs.mkdir()
    subprocess.run(  # noqa: S603
        [sys.executable, str(REPO / "deploy/scripts/dev_secrets.py"), str(keys)],
        check=True,
        capture_output=True,
    )
    ports = {name: free_port() for name in ("identity", "audit")}
    endpoints = Endpoints(
        identity=f"http://127.0.0.1:{ports['identity']}",
        audit=f"http://127.0.0.1:{ports['audit']}",
        gateways={},
    )
    stack = Stack(endpoints, keys, identity_db, audit_db, gateway_dbs, run_prefix, logs=logs)
    run = ClusterStack(stack, identity_db, audit_db, gateway_dbs, run_prefix)
    base = {**os.environ, "IKD_KAFKA_TOPIC_PREFIX": run_prefix}
    identity_env = {
        **base,
        "IKD_IDENTITY_DATABASE_URL": identity_db.app_dsn,
        "IKD_IDENTITY_MIGRATION_DATABASE_URL": identity_db.owner_dsn,
        "IKD_IDENTITY_TRUST_JWKS": f"@{keys}/dukcapil-jwks.json",
        "IKD_IDENTITY_TOKEN_SIGNING_KEY": f"@{keys}/token-signing.pem",
        "IKD_IDENTITY_TOKEN_KEY_ID": "dev-token-1",
        "IKD_IDENTITY_PORT": str(ports["identity"]),
        # the relays run as processes of their own, so one can be killed alone
        "IKD_IDENTITY_RELAY_ENABLED": "false",
        **principal_env("identity"),
    }
    add_client = [str(BIN / "ikd-identity"), "clients", "add", "--id", FEED_CLIENT]
    subprocess.run(  # noqa: S603
        [*add_client, "--scopes", "identity:feed", "--secret-file", "-"],
        env=identity_env,
        check=True,
        capture_output=True,
        input=CLIENT_SECRET.encode(),
    )
    signer_env = {
        **base,
        "IKD_SIGNER_DATABASE_URL": str(audit_db.signer_dsn),
        "IKD_SIGNER_SIGNING_KEY": f"@{keys}/tree-head.pem",
    }
    vkey = subprocess.run(  # noqa: S603
        [str(BIN / "ikd-audit"), "vkey"], env=signer_env, check=True, capture_output=True
    ).stdout
    (keys / "log.vkey").write_bytes(vkey)
    try:
        run.start("identity", [str(BIN / "ikd-identity"), "serve"], identity_env)
        for relay in ("relay-a", "relay-b"):
            run.start(relay, [str(BIN / "ikd-identity"), "relay"], identity_env)
        run.start(
            "audit",
            [str(BIN / "ikd-audit"), "serve"],
            {
                **base,
                "IKD_AUDIT_DATABASE_URL": audit_db.app_dsn,
                "IKD_AUDIT_MIGRATION_DATABASE_URL": audit_db.owner_dsn,
                "IKD_AUDIT_LOG_VKEY": f"@{keys}/log.vkey",
                "IKD_AUDIT_TOKEN_JWKS": f"@{keys}/token-jwks.json",
                "IKD_AUDIT_TRUST_JWKS": f"@{keys}/dukcapil-jwks.json",
                "IKD_AUDIT_SESSION_SECRET": "cluster-console-session-secret-0123456789",
                "IKD_AUDIT_PORT": str(ports["audit"]),
                "IKD_AUDIT_CONSUMER_GROUP": run_principals,
                **principal_env("audit"),
            },
        )
        for agency in AGENCIES:
            replicas = 2 if agency == REPLICATED_AGENCY else 1
            for replica in range(1, replicas + 1):
                run.start(
                    f"worker-{agency}-{replica}",
                    [str(BIN / "ikd-gateway"), "worker"],
                    {
                        **base,
                        "IKD_GATEWAY_AGENCY": agency,
                        "IKD_GATEWAY_DATABASE_URL": gateway_dbs[agency].app_dsn,
                        "IKD_GATEWAY_TOKEN_JWKS": f"@{keys}/token-jwks.json",
                        "IKD_GATEWAY_DATA_DIR": str(root / "gateway" / f"{agency}-{replica}"),
                        # a crashed replica's partitions move within this
                        "IKD_GATEWAY_SESSION_TIMEOUT_SECONDS": "6",
                        **principal_env(kafka_security.gateway_principal(agency)),
                    },
                )
        stack.wait_ready("identity", endpoints.identity)
        stack.wait_ready("audit", endpoints.audit)
        for agency in AGENCIES:
            group = f"ikd-gateway-{agency}"
            members = 2 if agency == REPLICATED_AGENCY else 1
            wait_for_group(group, members)
        yield run
    finally:
        stack.stop()
