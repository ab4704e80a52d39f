"""Audit fixtures: a migrated database, keys, settings, the signer running beside the runtime
(as `ikd-audit signer` beside `ikd-audit serve`) and an in-process client."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ikd_audit.bootstrap import AuditRuntime, SignerRuntime, bootstrap
from ikd_audit.cli import MIGRATIONS
from ikd_audit.config import AuditSettings, SignerSettings
from ikd_audit.entrypoints.app import create_app
from ikd_audit.service_layer.checkpoints import DEFAULT_ORIGIN
from ikd_dev.issuer import generate_issuer_key
from ikd_dev.synthetic import citizen
from ikd_shared.auth import TokenIssuer
from ikd_shared.events.profile_v1 import CitizenProfile
from tests.support.audit import (
    Keys,
    audit_env,
    make_settings,
    make_signer_settings,
    running_signer,
    signer_env,
)


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
def origin() -> str:
    return DEFAULT_ORIGIN


@pytest.fixture
def settings(keys: Keys, audit_db: Any, origin: str) -> AuditSettings:
    return make_settings(audit_env(keys, audit_db.app_dsn, "unused.", origin=origin))


@pytest.fixture
def signer_settings(keys: Keys, audit_db: Any, origin: str) -> SignerSettings:
    return make_signer_settings(signer_env(keys, audit_db.signer_dsn, origin=origin))


@pytest.fixture
async def signer(signer_settings: SignerSettings) -> AsyncIterator[SignerRuntime]:
    async with running_signer(signer_settings) as running:
        yield running


@pytest.fixture
async def runtime(settings: AuditSettings, signer: SignerRuntime) -> AsyncIterator[AuditRuntime]:
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
