"""A registration through the gateway, on the real identity, database and broker.

dinsos-cirebon's backend registers a citizen Dukcapil only bulk-fed: the gateway asks identity
as its own OAuth client (a token from identity's /oauth/token), identity records the
relationship and its relay publishes the citizen's record, and the agency's worker stores the
registered service's fields; until then the citizen was not held and prefill was the not-found
denial. Ending the registration purges the row again.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from unittest import mock

import asyncpg
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ikd_dev.issuer import generate_issuer_key, public_jwk
from ikd_gateway.adapters.identity import IdentityClient
from ikd_gateway.entrypoints.api import create_app as gateway_app
from ikd_identity.adapters.postgres import PgClients
from ikd_identity.adapters.secrets import Argon2Hasher
from ikd_identity.config import IdentitySettings
from ikd_identity.domain.clients import Client
from ikd_identity.entrypoints.api import create_app as identity_app
from ikd_shared.events.profile_v1 import CitizenProfile
from tests.support.environment import REPO
from tests.support.gateway import (
    gateway_env,
    only_a_floor,
    prefill_by_nik,
    running_gateway,
    view_row,
)
from tests.support.gateway_factories import POLICY, Tokens, profile, pseudonym_of
from tests.support.polling import eventually

AGENCY = "dinsos-cirebon"
SERVICE = "social-assistance"
IDENTITY_MIGRATIONS = REPO / "services" / "identity" / "migrations"
GATEWAY_CLIENT = f"gateway-{AGENCY}"


@pytest.fixture
async def identity(
    database_factory: Any, topic_prefix: str
) -> AsyncIterator[tuple[Any, httpx.AsyncClient, str]]:
    """identity in process, with its outbox relay, and the gateway's client registered."""
    database = await database_factory("identity", IDENTITY_MIGRATIONS)
    token_key = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    anchors = {"keys": [public_jwk(generate_issuer_key("EdDSA"), "unused")]}
    env = {
        "IKD_IDENTITY_DATABASE_URL": database.app_dsn,
        "IKD_IDENTITY_MIGRATION_DATABASE_URL": database.owner_dsn,
        "IKD_IDENTITY_TRUST_JWKS": json.dumps(anchors),
        "IKD_IDENTITY_TOKEN_SIGNING_KEY": token_key.decode(),
        "IKD_IDENTITY_RELAY_POLL_INTERVAL_S": "0.1",
        "IKD_KAFKA_TOPIC_PREFIX": topic_prefix,
    }
    with mock.patch.dict(os.environ, env):
        settings = IdentitySettings()  # type: ignore[call-arg]
    secret = secrets.token_urlsafe(32)
    connection = await asyncpg.connect(database.owner_dsn)
    try:
        await PgClients(connection).put(
            Client(
                client_id=GATEWAY_CLIENT,
                secret_hash=Argon2Hasher().hash(secret),
                scopes=frozenset({"identity:register"}),
                agency=AGENCY,
            )
        )
    finally:
        await connection.close()
    app = identity_app(settings, run_relay=True)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://identity") as client:
            yield app, client, secret


async def feed(app: Any, client: httpx.AsyncClient, citizens: list[CitizenProfile]) -> None:
    """Dukcapil's bulk feed: identity knows the citizens, no agency is related to them."""
    token = app.state.container.token_issuer.issue(
        "dukcapil-feed", {"identity:feed"}, ["ikd-identity"]
    )
    response = await client.post(
        "/v1/feed/profiles",
        json={"profiles": [c.model_dump(mode="json") for c in citizens]},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200, response.text


async def test_a_registration_through_the_gateway_makes_the_agency_hold_the_citizen(
    identity: tuple[Any, httpx.AsyncClient, str],
    gateway_db: Any,
    db: asyncpg.Connection,
    topic_prefix: str,
    tokens: Tokens,
    tmp_path: Path,
    worker_factory: Any,
) -> None:
    app, identity_client, secret = identity
    registered, other = profile(91), profile(92)
    await feed(app, identity_client, [registered, other])
    worker = worker_factory(gateway_env(AGENCY, gateway_db, topic_prefix, tokens, tmp_path))
    worker.start()

    async def both_read() -> bool:
        applied = await db.fetchval("SELECT count(*) FROM processed_events")
        return bool(applied >= 2)

    try:
        await eventually(both_read, timeout=60)
    except AssertionError:
        raise AssertionError(worker.log()) from None
    assert await db.fetchval("SELECT count(*) FROM citizen_view") == 0, "bulk-fed: not held"

    registrar = IdentityClient(
        "http://identity",
        GATEWAY_CLIENT,
        secret,
        transport=httpx.ASGITransport(app=app),
    )
    token = tokens.for_agency(AGENCY, {"gateway:prefill", "gateway:registrations"})
    backend = {"authorization": f"Bearer {token}"}
    try:
        async with (
            running_gateway(
                AGENCY, gateway_db, topic_prefix, tokens, tmp_path, registrar=registrar
            ) as gateway,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=gateway_app(gateway.settings, runtime=gateway)),
                base_url="http://gw",
            ) as client,
        ):
            before = await prefill_by_nik(client, SERVICE, registered.nik, backend)
            assert (before.status_code, before.json()["code"]) == (404, "citizen_not_found")

            response = await client.post(
                "/v1/registrations",
                json={
                    "nik": registered.nik,
                    "service": SERVICE,
                    "legal_reference": "Permensos 3/2021 Pasal 12",
                },
                headers=backend,
            )
            assert response.status_code == 201, response.text
            relationship = response.json()["relationship"]
            assert (relationship["kind"], relationship["agency"], relationship["service"]) == (
                "registration",
                AGENCY,
                SERVICE,
            )
            pseudonym = pseudonym_of(registered)
            try:
                row = await eventually(lambda: view_row(db, pseudonym), timeout=30)
            except AssertionError:
                raise AssertionError(worker.log()) from None
            service = POLICY.agency(AGENCY).service(SERVICE)
            assert service is not None
            assert set(row["data"]) == set(service.fields)
            served = await prefill_by_nik(client, SERVICE, registered.nik, backend)
            assert served.status_code == 200, served.text
            unrelated = await prefill_by_nik(client, SERVICE, other.nik, backend)
            assert unrelated.json() == before.json(), "still the not-found denial"

            ended = await client.post(
                f"/v1/registrations/{relationship['relationship_id']}/end", headers=backend
            )
            assert ended.status_code == 200, ended.text

            async def purged() -> bool:
                return await only_a_floor(db, pseudonym)

            await eventually(purged, timeout=30)
            again = await client.post(
                f"/v1/registrations/{relationship['relationship_id']}/end", headers=backend
            )
            assert (again.status_code, again.json()["code"]) == (409, "registration_not_active")
            assert registrar.tokens_fetched == 1, "one token of the gateway's own served all"
    finally:
        await registrar.close()
