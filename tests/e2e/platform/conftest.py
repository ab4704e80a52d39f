"""The whole platform as separate processes: identity, audit, its signer and three gateways.

Each run gets its own databases, topic prefix and keys, so it never touches the demo's data.
Every service connects to the bus as its own principal, under the ACLs of the run's prefix;
only the test's own observer clients act as the admin.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from ikd_ops import kafka_security
from ikd_ops.platform import Endpoints
from ikd_shared.events import topics
from ikd_shared.kafka import ensure_topics
from tests.support.databases import Database, DatabaseFactory
from tests.support.environment import REPO
from tests.support.kafka import SECRETS, kafka_connection, password

AGENCIES = ("polres-cirebon", "bank-bjb", "dinsos-cirebon", "disnaker-cirebon")
CLIENT_SECRET = "e2e-client-secret"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Stack:
    endpoints: Endpoints
    keys: Path
    identity_db: Database
    audit_db: Database
    gateway_dbs: dict[str, Database]
    topic_prefix: str
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    logs: Path = Path()

    def start(self, name: str, command: list[str], env: dict[str, str]) -> None:
        log = (self.logs / f"{name}.log").open("ab")
        self.processes[name] = subprocess.Popen(  # noqa: S603 - our own entry points
            command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def wait_ready(self, name: str, url: str, seconds: float = 90.0) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.processes[name].poll() is not None:
                break
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        tail = (self.logs / f"{name}.log").read_text()[-3000:]
        raise AssertionError(f"{name} did not become ready:\n{tail}")

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture
async def databases(
    database_factory: DatabaseFactory,
) -> tuple[Database, Database, dict[str, Database]]:
    """Fresh, migrated databases: identity, audit and one per gateway."""
    identity_db = await database_factory("identity", REPO / "services/identity/migrations")
    audit_db = await database_factory("audit", REPO / "services/audit/src/ikd_audit/migrations")
    gateway_dbs = {
        agency: await database_factory("gateway", REPO / "services/agency_gateway/migrations")
        for agency in AGENCIES
    }
    return identity_db, audit_db, gateway_dbs


def principal_env(principal: str) -> dict[str, str]:
    """A service's own Kafka credentials (the development password files of `make setup`)."""
    return {
        "IKD_KAFKA_USERNAME": principal,
        "IKD_KAFKA_PASSWORD": f"@{SECRETS / f'{principal}.password'}",
    }


@pytest.fixture
async def principals(topic_prefix: str) -> AsyncIterator[str]:
    """The principals' users and the ACLs of this run's topics, as the operator applies them;
    yields the audit consumer group (one of the run's own, so runs never share it)."""
    admin = kafka_connection()
    audit_group = f"{topic_prefix}audit"
    names = [
        "identity",
        "audit",
        *(kafka_security.gateway_principal(agency) for agency in AGENCIES),
    ]
    # Same passwords as `ikdctl kafka users apply`: running services keep authenticating. The
    # agency backends' principals are onboarding's (a new password each time): left alone.
    await kafka_security.upsert_users(admin, {name: password(name) for name in names})
    # The agency topics exist before the gateways start: onboarding creates them, not a gateway.
    await ensure_topics(
        admin, prefix=topic_prefix, specs=[topics.agency_topic(agency) for agency in AGENCIES]
    )
    grants = kafka_security.grants(AGENCIES, prefix=topic_prefix, audit_group=audit_group)
    await kafka_security.apply_acls(admin, grants)
    try:
        yield audit_group
    finally:
        # Only this run's grants: the gateway groups and cluster grants are the demo's too.
        await kafka_security.delete_acls(
            admin, [grant for grant in grants if grant.name.startswith(topic_prefix)]
        )


@pytest.fixture
def stack(
    databases: tuple[Database, Database, dict[str, Database]],
    topic_prefix: str,
    principals: str,
    tmp_path: Path,
) -> Iterator[Stack]:
    identity_db, audit_db, gateway_dbs = databases
    keys = tmp_path / "keys"
    subprocess.run(  # noqa: S603
        [sys.executable, str(REPO / "deploy/scripts/dev_secrets.py"), str(keys)], check=True
    )
    ports = {name: free_port() for name in ("identity", "audit", "signer", *AGENCIES)}
    endpoints = Endpoints(
        identity=f"http://127.0.0.1:{ports['identity']}",
        audit=f"http://127.0.0.1:{ports['audit']}",
        gateways={agency: f"http://127.0.0.1:{ports[agency]}" for agency in AGENCIES},
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    stack = Stack(endpoints, keys, identity_db, audit_db, gateway_dbs, topic_prefix, logs=logs)
    base = {**os.environ, "IKD_KAFKA_TOPIC_PREFIX": topic_prefix}
    identity_env = {
        **base,
        "IKD_IDENTITY_DATABASE_URL": identity_db.app_dsn,
        "IKD_IDENTITY_MIGRATION_DATABASE_URL": identity_db.owner_dsn,
        "IKD_IDENTITY_TRUST_JWKS": f"@{keys}/dukcapil-jwks.json",
        "IKD_IDENTITY_TOKEN_SIGNING_KEY": f"@{keys}/token-signing.pem",
        "IKD_IDENTITY_TOKEN_KEY_ID": "dev-token-1",
        "IKD_IDENTITY_PORT": str(ports["identity"]),
        **principal_env("identity"),
    }
    clients = [
        ("counter-polres", "identity:verify", "polres-cirebon"),
        ("mpp-reception", "identity:verify", "mpp-kabupaten-cirebon"),
        ("mpp-officer", "identity:consent", "dpmptsp-cirebon"),
        ("auditor-demo", "audit:read", None),
        *((f"backend-{a}", "gateway:prefill gateway:webhooks", a) for a in AGENCIES),
    ]
    serves = {"mpp-officer": AGENCIES}  # the officer's desk records consents for these
    for client_id, scopes, agency in clients:
        command = [
            str(BIN / "ikd-identity"),
            "clients",
            "add",
            "--id",
            client_id,
            "--scopes",
            scopes,
            "--secret-file",
            "-",
        ]
        if agency:
            command += ["--agency", agency]
        if client_id in serves:
            command += ["--serves", ",".join(serves[client_id])]
        subprocess.run(  # noqa: S603
            command, env=identity_env, check=True, capture_output=True, input=CLIENT_SECRET.encode()
        )
    # The signer alone reads the tree-head key; the service gets the log's vkey, as in make up.
    signer_env = {
        **base,
        "IKD_SIGNER_DATABASE_URL": str(audit_db.signer_dsn),
        "IKD_SIGNER_SIGNING_KEY": f"@{keys}/tree-head.pem",
        "IKD_SIGNER_INTERVAL_SECONDS": "1",
        "IKD_SIGNER_PORT": str(ports["signer"]),
    }
    vkey = subprocess.run(  # noqa: S603
        [str(BIN / "ikd-audit"), "vkey"], env=signer_env, check=True, capture_output=True
    ).stdout
    (keys / "log.vkey").write_bytes(vkey)
    # Audit and the gateways know identity's token keys only from its JWKS URL, as deployed.
    # They start beside identity, so their first fetch may find it not yet listening: they
    # retry (every second here) and are ready only once they hold the keys.
    jwks_url = f"{endpoints.identity}/.well-known/jwks.json"
    try:
        stack.start("identity", [str(BIN / "ikd-identity"), "serve"], identity_env)
        stack.start("signer", [str(BIN / "ikd-audit"), "signer"], signer_env)
        stack.start(
            "audit",
            [str(BIN / "ikd-audit"), "serve"],
            {
                **base,
                "IKD_AUDIT_DATABASE_URL": audit_db.app_dsn,
                "IKD_AUDIT_MIGRATION_DATABASE_URL": audit_db.owner_dsn,
                "IKD_AUDIT_LOG_VKEY": f"@{keys}/log.vkey",
                "IKD_AUDIT_TOKEN_JWKS_URL": jwks_url,
                "IKD_AUDIT_TOKEN_JWKS_MIN_INTERVAL_SECONDS": "1",
                "IKD_AUDIT_TRUST_JWKS": f"@{keys}/dukcapil-jwks.json",
                "IKD_AUDIT_SESSION_SECRET": "e2e-console-session-secret-0123456789",
                "IKD_AUDIT_PORT": str(ports["audit"]),
                "IKD_AUDIT_CONSUMER_GROUP": principals,
                **principal_env("audit"),
            },
        )
        for agency in AGENCIES:
            stack.start(
                f"gateway-{agency}",
                [str(BIN / "ikd-gateway"), "serve"],
                {
                    **base,
                    "IKD_GATEWAY_AGENCY": agency,
                    "IKD_GATEWAY_DATABASE_URL": gateway_dbs[agency].app_dsn,
                    "IKD_GATEWAY_MIGRATION_DATABASE_URL": gateway_dbs[agency].owner_dsn,
                    "IKD_GATEWAY_TOKEN_JWKS_URL": jwks_url,
                    "IKD_GATEWAY_TOKEN_JWKS_MIN_INTERVAL_SECONDS": "1",
                    "IKD_GATEWAY_DATA_DIR": str(tmp_path / "gateway" / agency),
                    "IKD_GATEWAY_PORT": str(ports[agency]),
                    **principal_env(kafka_security.gateway_principal(agency)),
                },
            )
        stack.wait_ready("identity", endpoints.identity)
        stack.wait_ready("signer", f"http://127.0.0.1:{ports['signer']}")
        stack.wait_ready("audit", endpoints.audit)
        for agency in AGENCIES:
            stack.wait_ready(f"gateway-{agency}", endpoints.gateways[agency])
        yield stack
    finally:
        stack.stop()
