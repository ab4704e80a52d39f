"""Helpers of the identity integration tests (imported by the test modules)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import asyncpg

from ikd_dev.issuer import IssuerKey, mint_credential
from ikd_dev.synthetic import citizen
from ikd_identity.adapters.postgres import PgClients
from ikd_identity.domain.clients import Client
from ikd_shared.credentials import Purpose
from ikd_shared.events.profile_v1 import CitizenProfile
from tests.support.kafka import kafka_connection

ISSUER = "https://dukcapil.test/ikd"
# The test services' audiences, one per purpose (not the defaults: the settings must be read).
AUDIENCES = {purpose: f"ikd-mpp-test/{purpose}" for purpose in Purpose}
AUDIENCE = AUDIENCES[Purpose.VERIFICATION]
KID = "test-dukcapil-1"
# The tests' counter is Disdukcapil's (api.auth's default agency), which offers two services:
# a verification there names the one the citizen came for.
COUNTER_SERVICES = ["family-card-update"]


@dataclass
class DevIssuer:
    key: IssuerKey
    kid: str = KID

    def mint(
        self, profile: CitizenProfile, purpose: Purpose = Purpose.VERIFICATION, **kwargs: Any
    ) -> str:
        """A credential for `purpose` (a counter's verification unless told otherwise)."""
        kwargs.setdefault("issuer", ISSUER)
        kwargs.setdefault("audience", AUDIENCES[purpose])
        return mint_credential(
            self.key, kid=kwargs.pop("kid", self.kid), purpose=purpose, profile=profile, **kwargs
        )

    def consent(self, profile: CitizenProfile, **kwargs: Any) -> str:
        return self.mint(profile, Purpose.CONSENT, **kwargs)


async def register_client(
    dsn: str,
    client_id: str,
    scopes: set[str],
    *,
    agency: str | None = None,
    serves: set[str] | frozenset[str] = frozenset(),
    disabled: bool = False,
) -> None:
    """A client in the clients table, as `ikd-identity clients add` registers it."""
    connection = await asyncpg.connect(dsn)
    try:
        await PgClients(connection).put(
            Client(
                client_id=client_id,
                secret_hash="unused",
                scopes=frozenset(scopes),
                agency=agency,
                disabled=disabled,
                serves=frozenset(serves),
            )
        )
    finally:
        await connection.close()


async def counts(db: asyncpg.Connection) -> dict[str, int]:
    result = {}
    for table in ("profiles", "outbox", "seen_credentials", "consents", "relationships"):
        result[table] = await db.fetchval(f"SELECT count(*) FROM {table}")
    return result


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


async def read_topic(
    bootstrap: str,
    topic: str,
    *,
    expect: int,
    timeout: float = 20.0,  # noqa: ASYNC109
) -> list[Record]:
    """Read from the beginning until `expect` records arrived (or fail at the deadline)."""
    consumer = kafka_connection(bootstrap).consumer(topic, group=None, auto_offset_reset="earliest")
    await consumer.start()
    records: list[Record] = []
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while len(records) < expect:
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"only {len(records)} of {expect} records on {topic}")
            batch = await consumer.getmany(timeout_ms=200)
            for messages in batch.values():
                records.extend(
                    Record(
                        m.topic, m.partition, m.offset, m.key, m.value, {k: v for k, v in m.headers}
                    )
                    for m in messages
                )
    finally:
        await consumer.stop()
    return records


def person(index: int, seed: int = 11) -> CitizenProfile:
    return citizen(seed, index)
