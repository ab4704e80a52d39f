"""Audit fixtures: a migrated database, keys, settings, the runtime and an in-process client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ikd_audit.bootstrap import AuditRuntime, bootstrap
from ikd_audit.cli import MIGRATIONS
from ikd_audit.config import AuditSettings
from ikd_audit.entrypoints.app import create_app
from ikd_dev.issuer import generate_issuer_key
from ikd_dev.synthetic import citizen
from ikd_shared.auth import TokenIssuer
from ikd_shared.events.profile_v1 import CitizenProfile
from tests.support.audit import Keys, audit_env, make_settings


@pytest.fixture(scope="session")
def keys() -> Keys:
    return Keys(
        tree_head=Ed25519PrivateKey.generate(),
        tokens=TokenIssuer(Ed25519PrivateKey.generate(), kid="tok-1", issuer="ikd-identity"),
        dukcapil=generate_issuer_key("EdDSA"),
    )


@pytest.fixture
async def audit_db(database_factory: Any) -> Any:
    return await database_factory("audit", Path(MIGRATIONS))


@pytest.fixture
def settings(keys: Keys, audit_db: Any) -> AuditSettings:
    return make_settings(audit_env(keys, audit_db.app_dsn, "unused."))


@pytest.fixture
async def runtime(settings: AuditSettings) -> AsyncIterator[AuditRuntime]:
    async with bootstrap(settings) as runtime:
        yield runtime


@pytest.fixture
async def client(
    settings: AuditSettings, runtime: AuditRuntime
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    app.state.runtime = runtime  # the lifespan (consumer, signer) is not needed here
    app.state.consumer = None
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        yield http


@pytest.fixture(scope="session")
def citizens() -> list[CitizenProfile]:
    return [citizen(7, i) for i in range(3)]
