"""Onboarding agencies on the secured broker: `ikdctl agencies onboard` gives an agency backend
its topic, principal, ACLs and OAuth client; the example consumer, as that principal, receives
exactly its policy's fields; another agency's principal is refused by the broker; offboarding
takes the access away and keeps the topic.

The agencies are two of the sample MPP's under fresh codes (a copy of the policy), so their
principals belong to this run only.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import yaml
from aiokafka.conn import create_conn
from aiokafka.errors import SaslAuthenticationFailed
from pydantic import SecretStr

from ikd_gateway.domain.model import SourcePosition
from ikd_gateway.entrypoints.api import create_app
from ikd_gateway.service_layer.prefill import prefill
from ikd_gateway.service_layer.stream import ProfileRecord, apply_profiles
from ikd_identity.adapters.postgres import PgClients
from ikd_identity.adapters.secrets import Argon2Hasher
from ikd_ops import kafka_security
from ikd_shared import codec
from ikd_shared.events.topics import agency_topic
from ikd_shared.kafka import KafkaConnection
from ikd_shared.policy import DEFAULT_POLICY
from tests.support.environment import REPO
from tests.support.gateway import running_gateway
from tests.support.gateway_factories import Tokens, profile, relationship, verified
from tests.support.kafka import kafka_connection

BIN = Path(sys.executable).parent
IDENTITY_MIGRATIONS = REPO / "services" / "identity" / "migrations"
DEADLINE_S = 60.0


@dataclass(frozen=True)
class Agencies:
    a: str
    b: str
    policy: Path
    env: dict[str, str]
    """ikdctl's environment: the admin principal, the prefix, identity's owner DSN."""


@pytest.fixture
async def agencies(
    tmp_path: Path, database_factory: Any, topic_prefix: str
) -> AsyncIterator[Agencies]:
    suffix = uuid.uuid4().hex[:6]
    a, b = f"ta-{suffix}", f"tb-{suffix}"
    document = yaml.safe_load(DEFAULT_POLICY.read_text())
    renamed = {"dinsos-cirebon": a, "polres-cirebon": b}
    for agency in document["agencies"]:
        agency["code"] = renamed.get(agency["code"], agency["code"])
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump(document))
    identity_db = await database_factory("identity", IDENTITY_MIGRATIONS)
    env = {
        **os.environ,
        "IKD_KAFKA_TOPIC_PREFIX": topic_prefix,
        "IKD_GATEWAY_POLICY_FILE": str(policy),
        "IKD_IDENTITY_MIGRATION_DATABASE_URL": identity_db.owner_dsn,
        "IKD_IDENTITY_CLI": str(BIN / "ikd-identity"),
    }
    try:
        yield Agencies(a, b, policy, env)
    finally:
        admin = kafka_connection()
        principals = [
            f(code)
            for code in (a, b)
            for f in (kafka_security.agency_principal, kafka_security.gateway_principal)
        ]
        for principal in principals:
            await kafka_security.revoke_principal(admin, principal)
        await kafka_security.delete_users(admin, principals)


def ikdctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603
        [str(BIN / "ikdctl"), "agencies", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=False,
        cwd=REPO,
    )


def read_env(path: Path) -> dict[str, str]:
    lines = path.read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def agency_consume(credentials: dict[str, str], **changes: str) -> subprocess.CompletedProcess[str]:
    """The example consumer as a subprocess with these IKD_AGENCY_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("IKD_")}
    env |= credentials | changes
    return subprocess.run(  # noqa: S603
        [str(BIN / "ikd-gateway"), "agency-consume", "--idle-exit", "3", "--dump"],
        env=env,
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=False,
    )


def as_agency(credentials: dict[str, str]) -> KafkaConnection:
    return KafkaConnection(
        credentials["IKD_AGENCY_BOOTSTRAP_SERVERS"],
        security_protocol=credentials["IKD_AGENCY_SECURITY_PROTOCOL"],
        username=credentials["IKD_AGENCY_USERNAME"],
        password=SecretStr(credentials["IKD_AGENCY_PASSWORD"]),
        ca_file=credentials["IKD_AGENCY_CA_FILE"],
    )


async def readyz(gw: Any) -> httpx.Response:
    app = create_app(gw.settings, runtime=gw)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gateway"
    ) as client:
        return await client.get("/readyz")


def _json(value: Any) -> Any:
    return codec.loads(codec.dumps(value))


async def test_onboarded_agency_consumes_its_fields_and_others_are_refused(
    agencies: Agencies,
    gateway_db: Any,
    db: asyncpg.Connection,
    topic_prefix: str,
    tokens: Tokens,
    tmp_path: Path,
) -> None:
    a, b = agencies.a, agencies.b
    topic = agency_topic(a).full_name(topic_prefix)
    configure = {"policy_file": agencies.policy}
    async with running_gateway(
        a, gateway_db, topic_prefix, tokens, tmp_path, configure=configure
    ) as gw:
        # Not onboarded yet: the gateway may not create its topic and says so.
        answer = await readyz(gw)
        assert answer.status_code == 503
        assert f"agency topic {topic} does not exist" in answer.json()["checks"]["agency-topic"]

        files = {code: tmp_path / f"{code}.env" for code in (a, b)}
        first = ikdctl(agencies.env, "onboard", a, "--out", str(files[a]))
        assert first.returncode == 0, first.stderr
        earlier = read_env(files[a])
        again = ikdctl(agencies.env, "onboard", a, "--out", str(files[a]))
        assert again.returncode == 0, again.stderr
        assert f"topic {topic} exists" in again.stderr
        done = ikdctl(agencies.env, "onboard", b, "--out", str(files[b]))
        assert done.returncode == 0, done.stderr
        creds = {code: read_env(path) for code, path in files.items()}
        for path in files.values():
            assert path.stat().st_mode & 0o777 == 0o600
        assert creds[a]["IKD_AGENCY_PASSWORD"] != earlier["IKD_AGENCY_PASSWORD"], "new ones"
        assert (creds[a]["IKD_AGENCY_TOPIC"], creds[a]["IKD_AGENCY_GROUP"]) == (
            topic,
            f"ikd-agency-{a}",
        )
        assert (await readyz(gw)).status_code == 200

        # The OAuth client, as identity registered it.
        async with asyncpg.create_pool(agencies.env["IKD_IDENTITY_MIGRATION_DATABASE_URL"]) as pool:
            client = await PgClients(pool).get(f"backend-{a}")
        assert client is not None
        assert not client.disabled
        assert (client.agency, client.scopes) == (
            a,
            {"gateway:prefill", "gateway:webhooks", "gateway:registrations"},
        )
        assert Argon2Hasher().verify(client.secret_hash, creds[a]["IKD_AGENCY_OAUTH_CLIENT_SECRET"])
        # The gateway's own client, its secret apart from the backend's credentials.
        secret_file = files[a].with_suffix(".gateway-secret")
        assert secret_file.stat().st_mode & 0o777 == 0o600
        assert "IKD_GATEWAY_IDENTITY_CLIENT_SECRET" not in files[a].read_text()
        async with asyncpg.create_pool(agencies.env["IKD_IDENTITY_MIGRATION_DATABASE_URL"]) as pool:
            gateway_client = await PgClients(pool).get(f"gateway-{a}")
        assert gateway_client is not None
        assert (gateway_client.agency, gateway_client.scopes) == (a, {"identity:register"})
        assert Argon2Hasher().verify(gateway_client.secret_hash, secret_file.read_text().strip())

        # A citizen verified for the agency's services reaches the agency's topic.
        now = dt.datetime.now(dt.UTC)
        asked = [
            relationship("dinsos-cirebon", s.code, starts_at=now).model_copy(update={"agency": a})
            for s in gw.ctx.agency.services
        ]
        citizen = verified(profile(81), 1, now, relationships=asked)
        await apply_profiles(
            gw.uow(),
            gw.ctx,
            [ProfileRecord("p-81", citizen.pseudonym, citizen, SourcePosition(0, 0))],
        )
        assert gw.agency_relay is not None
        stop = asyncio.Event()
        relaying = asyncio.create_task(gw.agency_relay.run(stop))
        try:
            for _ in range(100):
                if await db.fetchval("SELECT count(*) FROM agency_outbox") == 0:
                    break
                await asyncio.sleep(0.1)
            assert await db.fetchval("SELECT count(*) FROM agency_outbox") == 0, "published"
        finally:
            stop.set()
            await relaying
        expected = {}
        for service in gw.ctx.agency.services:
            answer_ = await prefill(
                gw.uow(), gw.ctx, service_code=service.code, nik=None, pseudonym=citizen.pseudonym
            )
            expected[service.code] = _json(answer_.fields)
        assert {s: set(f) for s, f in expected.items()} == {
            s.code: set(s.fields) for s in gw.ctx.agency.services
        }

    # The example consumer as agency-a: exactly the policy's fields of that citizen.
    mirrored = agency_consume(creds[a])
    assert mirrored.returncode == 0, mirrored.stderr
    dump = json.loads(mirrored.stdout[mirrored.stdout.index("\n{") :])
    assert dump == {citizen.pseudonym: expected}

    # The same consumer with agency b's credentials: the broker's authorisation error (exit 3
    # names it), not an idle exit or a timeout.
    other = {k: creds[b][k] for k in ("IKD_AGENCY_USERNAME", "IKD_AGENCY_PASSWORD")}
    refused = agency_consume(creds[a], IKD_AGENCY_GROUP=creds[b]["IKD_AGENCY_GROUP"], **other)
    assert refused.returncode == 3, refused.stderr
    assert "TopicAuthorizationFailedError" in refused.stderr

    # Offboarded: no credentials, no ACLs, the client disabled; the topic stays.
    for _ in range(2):  # idempotent
        gone = ikdctl(agencies.env, "offboard", a)
        assert gone.returncode == 0, gone.stderr
        assert f"topic {topic} kept" in gone.stdout
    assert "none left; 0 ACLs deleted" in gone.stdout
    async with asyncpg.create_pool(agencies.env["IKD_IDENTITY_MIGRATION_DATABASE_URL"]) as pool:
        client = await PgClients(pool).get(f"backend-{a}")
        gateway_client = await PgClients(pool).get(f"gateway-{a}")
    assert client is not None
    assert client.disabled
    assert gateway_client is not None
    assert gateway_client.disabled
    host, port = creds[a]["IKD_AGENCY_BOOTSTRAP_SERVERS"].split(",")[0].rsplit(":", 1)
    kwargs = {
        k: v for k, v in as_agency(creds[a]).client_kwargs().items() if k != "bootstrap_servers"
    }
    with pytest.raises(SaslAuthenticationFailed):
        await asyncio.wait_for(create_conn(host, int(port), **kwargs), 20)
    admin = kafka_connection().admin()
    await admin.start()
    try:
        assert topic in await admin.list_topics()
    finally:
        await admin.close()

    deleted = ikdctl(agencies.env, "offboard", b, "--delete-topic")
    assert deleted.returncode == 0, deleted.stderr
    assert f"topic {agency_topic(b).full_name(topic_prefix)} deleted" in deleted.stdout


def test_only_a_policy_agency_can_be_onboarded(tmp_path: Path) -> None:
    env = {**os.environ, "IKD_KAFKA_TOPIC_PREFIX": "never."}
    refused = ikdctl(env, "onboard", "not-an-agency", "--out", str(tmp_path / "x.env"))
    assert refused.returncode == 2
    assert "'not-an-agency' is not in the policy" in refused.stderr
    assert not (tmp_path / "x.env").exists()
