"""Identity fixtures: a migrated database, a development issuer, the app, tokens, Kafka reads."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import asyncpg
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI

from ikd_dev.issuer import generate_issuer_key, public_jwk
from ikd_identity.bootstrap import Runtime
from ikd_identity.config import IdentitySettings
from ikd_identity.entrypoints.api import create_app
from ikd_shared.credentials import Purpose
from tests.support.identity import AUDIENCES, ISSUER, DevIssuer

MIGRATIONS = Path(__file__).resolve().parents[3] / "services" / "identity" / "migrations"


@pytest.fixture(scope="session")
def issuer() -> DevIssuer:
    return DevIssuer(generate_issuer_key("EdDSA"))


@pytest.fixture(scope="session")
def es256_issuer() -> DevIssuer:
    return DevIssuer(generate_issuer_key("ES256"), kid="test-dukcapil-es256")


@pytest.fixture(scope="session")
def token_key_pem() -> str:
    key = Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.fixture
async def identity_db(database_factory: Any) -> Any:
    return await database_factory("identity", MIGRATIONS)


SettingsFactory = Callable[..., IdentitySettings]


@pytest.fixture
def kafka_prefix(request: pytest.FixtureRequest) -> str:
    """The test's own topics if it asks for `topic_prefix` (it reads them), else the session's.

    Without the relay (`run_relay=False`) the app never writes to its topics.
    """
    if "topic_prefix" in request.fixturenames:
        return str(request.getfixturevalue("topic_prefix"))
    return str(request.getfixturevalue("session_topic_prefix"))


@pytest.fixture
def make_settings(
    identity_db: Any,
    kafka_prefix: str,
    issuer: DevIssuer,
    es256_issuer: DevIssuer,
    token_key_pem: str,
) -> SettingsFactory:
    anchors = {
        "keys": [public_jwk(issuer.key, issuer.kid), public_jwk(es256_issuer.key, es256_issuer.kid)]
    }

    def build(**overrides: Any) -> IdentitySettings:
        env = {
            "IKD_IDENTITY_DATABASE_URL": identity_db.app_dsn,
            "IKD_IDENTITY_MIGRATION_DATABASE_URL": identity_db.owner_dsn,
            "IKD_IDENTITY_TRUST_JWKS": json.dumps(anchors),
            "IKD_IDENTITY_CREDENTIAL_ISSUER": ISSUER,
            "IKD_IDENTITY_VERIFICATION_AUDIENCE": AUDIENCES[Purpose.VERIFICATION],
            "IKD_IDENTITY_CONSENT_AUDIENCE": AUDIENCES[Purpose.CONSENT],
            "IKD_IDENTITY_TOKEN_SIGNING_KEY": token_key_pem,
            "IKD_IDENTITY_RELAY_POLL_INTERVAL_S": "0.2",
            "IKD_IDENTITY_MAX_BODY_BYTES": str(64 * 1024),
            "IKD_KAFKA_TOPIC_PREFIX": kafka_prefix,
        }
        env.update({f"IKD_IDENTITY_{k.upper()}": str(v) for k, v in overrides.items()})
        with mock.patch.dict(os.environ, env):
            return IdentitySettings()  # type: ignore[call-arg]

    return build


@dataclass
class Api:
    app: FastAPI
    client: httpx.AsyncClient
    settings: IdentitySettings

    @property
    def container(self) -> Runtime:
        container: Runtime = self.app.state.container
        return container

    def token(self, *scopes: str, agency: str | None = "dukcapil-test", **kwargs: Any) -> str:
        return self.container.token_issuer.issue(
            "test-client", set(scopes), ["ikd-identity"], agency=agency, **kwargs
        )

    def auth(self, *scopes: str, agency: str | None = "disdukcapil-cirebon") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(*scopes, agency=agency)}"}

    def auth_as(self, client_id: str, *scopes: str, agency: str | None = None) -> dict[str, str]:
        """A token of a named client (one registered in the clients table, say)."""
        token = self.container.token_issuer.issue(
            client_id, set(scopes), ["ikd-identity"], agency=agency
        )
        return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def api(make_settings: SettingsFactory) -> AsyncIterator[Api]:
    settings = make_settings()
    app = create_app(settings, run_relay=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://identity") as client:
            yield Api(app=app, client=client, settings=settings)


@pytest.fixture
async def db(identity_db: Any) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(identity_db.owner_dsn)
    try:
        yield connection
    finally:
        await connection.close()
