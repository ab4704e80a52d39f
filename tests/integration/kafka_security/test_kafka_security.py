"""The secured bus, tried as an attacker and as each component would.

Every denial must be the broker's own answer (an authentication or authorisation error),
never a timeout: each attempt runs under a deadline whose expiry fails the test.
"""

from __future__ import annotations

import asyncio
import dataclasses
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from typing import TypeVar

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.conn import create_conn
from aiokafka.errors import (
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
)
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
)
from pydantic import SecretStr

from ikd_ops import kafka_security
from ikd_shared.events import topics
from ikd_shared.kafka import KafkaConnection, delete_prefixed_topics, ensure_topics
from tests.support.kafka import kafka_connection, password

T = TypeVar("T")
DEADLINE_S = 20.0


async def within(step: Awaitable[T]) -> T:
    return await asyncio.wait_for(step, DEADLINE_S)


@dataclass(frozen=True)
class Bus:
    prefix: str
    agency_a: str
    agency_b: str
    admin: KafkaConnection
    passwords: dict[str, str]

    def topic(self, spec: topics.TopicSpec) -> str:
        return spec.full_name(self.prefix)

    def agency_topic(self, agency: str) -> str:
        return topics.agency_topic(agency).full_name(self.prefix)

    def audit_group(self) -> str:
        return f"{self.prefix}audit"

    def as_(self, principal: str, secret: str | None = None) -> KafkaConnection:
        return dataclasses.replace(
            self.admin,
            username=principal,
            password=SecretStr(secret or self.passwords[principal]),
            client_id=f"test-{principal}",
        )


@pytest.fixture(scope="module")
async def bus() -> AsyncIterator[Bus]:
    """Topics under a fresh prefix, two agencies with their principals, and the ACL set."""
    admin = kafka_connection()
    prefix = f"t{uuid.uuid4().hex[:10]}."
    agency_a, agency_b = f"ta{uuid.uuid4().hex[:6]}", f"tb{uuid.uuid4().hex[:6]}"
    # identity and audit keep their development passwords (services may be running as them).
    passwords = {name: password(name) for name in ("identity", "audit")}
    for agency in (agency_a, agency_b):
        passwords[kafka_security.gateway_principal(agency)] = secrets.token_hex(24)
        passwords[kafka_security.agency_principal(agency)] = secrets.token_hex(24)
    specs = [*topics.ALL_TOPICS, topics.agency_topic(agency_a), topics.agency_topic(agency_b)]
    await ensure_topics(admin, prefix=prefix, specs=specs)
    await kafka_security.upsert_users(admin, passwords)
    grants = kafka_security.grants(
        [agency_a, agency_b], prefix=prefix, audit_group=f"{prefix}audit"
    )
    await kafka_security.apply_acls(admin, grants)
    try:
        yield Bus(prefix, agency_a, agency_b, admin, passwords)
    finally:
        await kafka_security.delete_acls(admin, grants)
        await delete_prefixed_topics(admin, prefix)


async def produce(conn: KafkaConnection, topic: str) -> None:
    # acks=1 without idempotence: the probe asks about the topic alone, not the cluster grant.
    kwargs = conn.client_kwargs()
    producer = AIOKafkaProducer(**kwargs, acks=1, enable_idempotence=False)
    await within(producer.start())
    try:
        await within(producer.send_and_wait(topic, b"forged", key=b"k"))
    finally:
        await producer.stop()


async def consume(conn: KafkaConnection, topic: str, group: str) -> None:
    consumer = conn.consumer(topic, group=group, auto_offset_reset="earliest")
    try:
        await within(consumer.start())
        await within(consumer.getmany(timeout_ms=1000))
    finally:
        await consumer.stop()


async def test_a_client_without_credentials_is_disconnected(bus: Bus) -> None:
    plaintext = KafkaConnection(bus.admin.bootstrap_servers)
    tls_only = dataclasses.replace(bus.admin, security_protocol="SSL")
    for conn in (plaintext, tls_only):
        # The broker closes the connection at the first request (no metadata, no records). The
        # client's own request timeout is far beyond the test's deadline, so a failure inside
        # that deadline can only be the broker's refusal.
        client = conn.client(request_timeout_ms=120_000)
        try:
            with pytest.raises(KafkaConnectionError, match="Unable to bootstrap"):
                await within(client.bootstrap())
        finally:
            await client.close()


async def test_a_wrong_password_fails_authentication(bus: Bus) -> None:
    host, port = bus.admin.bootstrap_servers.split(",")[0].rsplit(":", 1)
    for principal in ("admin", "identity", kafka_security.agency_principal(bus.agency_a)):
        wrong = bus.as_(principal, secrets.token_hex(24))
        kwargs = {k: v for k, v in wrong.client_kwargs().items() if k != "bootstrap_servers"}
        with pytest.raises(SaslAuthenticationFailed):
            await within(create_conn(host, int(port), **kwargs))


async def test_an_agency_reads_its_own_topic_only(bus: Bus) -> None:
    a = kafka_security.agency_principal(bus.agency_a)
    group = kafka_security.agency_group(bus.agency_a)
    await consume(bus.as_(a), bus.agency_topic(bus.agency_a), group)
    forbidden = [
        bus.agency_topic(bus.agency_b),
        *(bus.topic(spec) for spec in topics.ALL_TOPICS),
    ]
    for topic in forbidden:
        with pytest.raises(TopicAuthorizationFailedError):
            await consume(bus.as_(a), topic, group)


async def test_an_agency_cannot_use_another_agencys_group(bus: Bus) -> None:
    a = kafka_security.agency_principal(bus.agency_a)
    with pytest.raises(GroupAuthorizationFailedError):
        await consume(
            bus.as_(a), bus.agency_topic(bus.agency_a), kafka_security.agency_group(bus.agency_b)
        )


async def test_a_gateway_reads_core_topics_only_in_its_own_group(bus: Bus) -> None:
    gateway = bus.as_(kafka_security.gateway_principal(bus.agency_a))
    own, other = (kafka_security.gateway_group(a) for a in (bus.agency_a, bus.agency_b))
    for spec in (topics.PROFILE, topics.CONSENT):
        await consume(gateway, bus.topic(spec), own)
        with pytest.raises(GroupAuthorizationFailedError):
            await consume(gateway, bus.topic(spec), other)
    with pytest.raises(TopicAuthorizationFailedError):
        await consume(gateway, bus.agency_topic(bus.agency_b), own)


@pytest.mark.parametrize("spec", [topics.PROFILE, topics.CONSENT], ids=lambda s: s.name)
async def test_only_identity_produces_profile_and_consent_events(
    bus: Bus, spec: topics.TopicSpec
) -> None:
    await produce(bus.as_("identity"), bus.topic(spec))
    others = [
        "audit",
        kafka_security.gateway_principal(bus.agency_a),
        kafka_security.agency_principal(bus.agency_a),
    ]
    for principal in others:
        with pytest.raises(TopicAuthorizationFailedError):
            await produce(bus.as_(principal), bus.topic(spec))


async def test_only_gateways_produce_access_events(bus: Bus) -> None:
    access = bus.topic(topics.ACCESS)
    for agency in (bus.agency_a, bus.agency_b):
        await produce(bus.as_(kafka_security.gateway_principal(agency)), access)
    for principal in ("identity", "audit", kafka_security.agency_principal(bus.agency_a)):
        with pytest.raises(TopicAuthorizationFailedError):
            await produce(bus.as_(principal), access)


async def test_audit_reads_access_events_and_nothing_of_the_profiles(bus: Bus) -> None:
    audit = bus.as_("audit")
    await consume(audit, bus.topic(topics.ACCESS), bus.audit_group())
    with pytest.raises(TopicAuthorizationFailedError):
        await consume(audit, bus.topic(topics.PROFILE), bus.audit_group())


async def test_applying_the_acls_again_changes_nothing(bus: Bus) -> None:
    principal = kafka_security.gateway_principal(bus.agency_a)
    grants = kafka_security.grants(
        [bus.agency_a, bus.agency_b], prefix=bus.prefix, audit_group=bus.audit_group()
    )
    own = {g.binding() for g in grants if g.principal == principal}

    def held() -> list[AclBinding]:
        pattern = AclBindingFilter(
            ResourceType.ANY,
            None,  # type: ignore[arg-type]  # any name
            ResourcePatternType.ANY,
            f"User:{principal}",
            None,  # type: ignore[arg-type]  # any host
            AclOperation.ANY,
            AclPermissionType.ANY,
        )
        admin = bus.admin.confluent_admin()  # held until the answer: closing it drops the call
        return list(admin.describe_acls(pattern).result())

    before = await asyncio.to_thread(held)
    await kafka_security.apply_acls(bus.admin, grants)
    after = await asyncio.to_thread(held)
    assert len(after) == len(before) == len(own)
    assert set(after) == own
