"""A credential serves one purpose, once, across the platform (issue 11, probe 3).

Identity and audit run in process with their default settings on real databases, trusting the
same issuer. Once a credential used at a counter (its replay answered 409) still opened the
citizen's whole trail at the audit service: both accepted one audience and each kept its own
replay store. Now each purpose has its own audience, accepted by one service only, which
records the credential's id: whatever the order, each credential is accepted exactly once.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import asyncpg
import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ikd_audit.bootstrap import bootstrap as audit_bootstrap
from ikd_audit.cli import MIGRATIONS as AUDIT_MIGRATIONS
from ikd_audit.entrypoints.app import create_app as create_audit_app
from ikd_dev.issuer import DEFAULT_ISSUER, generate_issuer_key, mint_credential, public_jwk
from ikd_dev.synthetic import citizen
from ikd_identity.config import IdentitySettings
from ikd_identity.entrypoints.api import create_app as create_identity_app
from ikd_shared.auth import TokenIssuer
from ikd_shared.credentials import DEFAULT_AUDIENCES, Purpose
from tests.support.audit import (
    Keys,
    audit_env,
    make_settings,
    make_signer_settings,
    running_signer,
    signer_env,
)
from tests.support.identity import COUNTER_SERVICES, register_client

REPO = Path(__file__).resolve().parents[3]
IDENTITY_MIGRATIONS = REPO / "services" / "identity" / "migrations"
KID = "dukcapil-test-1"  # the kid tests.support.audit.Keys signs with


@dataclass
class Platform:
    keys: Keys
    identity: httpx.AsyncClient
    audit: httpx.AsyncClient
    identity_db: Any
    audit_db: Any
    counter: dict[str, str]
    officer: dict[str, str]

    def mint(self, purpose: Purpose, index: int = 0) -> str:
        return mint_credential(
            self.keys.dukcapil,
            kid=KID,
            issuer=DEFAULT_ISSUER,
            purpose=purpose,
            profile=citizen(3, index),
        )


def _pem(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.fixture
async def platform(database_factory: Any, session_topic_prefix: str) -> AsyncIterator[Platform]:
    keys = Keys(
        tree_head=Ed25519PrivateKey.generate(),
        tokens=TokenIssuer(Ed25519PrivateKey.generate(), kid="tok-1", issuer="ikd-identity"),
        dukcapil=generate_issuer_key("EdDSA"),
    )
    identity_db = await database_factory("identity", IDENTITY_MIGRATIONS)
    audit_db = await database_factory("audit", Path(AUDIT_MIGRATIONS))
    # No audience or issuer settings: the defaults every deployment starts from.
    env = {
        "IKD_IDENTITY_DATABASE_URL": identity_db.app_dsn,
        "IKD_IDENTITY_TRUST_JWKS": json.dumps({"keys": [public_jwk(keys.dukcapil, KID)]}),
        "IKD_IDENTITY_TOKEN_SIGNING_KEY": _pem(Ed25519PrivateKey.generate()),
        "IKD_KAFKA_TOPIC_PREFIX": session_topic_prefix,
    }
    with mock.patch.dict(os.environ, env):
        identity_settings = IdentitySettings()  # type: ignore[call-arg]
    audit_settings = make_settings(audit_env(keys, audit_db.app_dsn, session_topic_prefix))
    signer_settings = make_signer_settings(signer_env(keys, audit_db.signer_dsn))
    await register_client(
        identity_db.owner_dsn, "mpp-officer", {"identity:consent"}, serves={"bank-bjb"}
    )
    identity_app = create_identity_app(identity_settings, run_relay=False)
    audit_app = create_audit_app(audit_settings)
    async with (
        identity_app.router.lifespan_context(identity_app),
        running_signer(signer_settings),  # the trail's proofs need a tree head
        audit_bootstrap(audit_settings) as runtime,
    ):
        audit_app.state.runtime = runtime  # the consumer is not needed here
        audit_app.state.consumer = None
        issuer = identity_app.state.container.token_issuer

        def auth(client_id: str, scope: str) -> dict[str, str]:
            token = issuer.issue(client_id, {scope}, ["ikd-identity"], agency="polres-cirebon")
            return {"Authorization": f"Bearer {token}"}

        async with (
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=identity_app), base_url="http://identity"
            ) as identity,
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=audit_app), base_url="http://audit"
            ) as audit,
        ):
            yield Platform(
                keys,
                identity,
                audit,
                identity_db,
                audit_db,
                counter=auth("counter-polres", "identity:verify"),
                officer=auth("mpp-officer", "identity:consent"),
            )


def _terms() -> dict[str, Any]:
    return {
        "agency": "bank-bjb",
        "service": "bjb-savings-account",
        "fields": ["full_name", "date_of_birth"],
        "purpose_code": "account-opening",
        "purpose_text": "Pembukaan rekening tabungan",
        "expires_at": (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).isoformat(),
    }


async def _answer(response: httpx.Response) -> tuple[int, str]:
    body = response.json()
    return response.status_code, str(body.get("code", "ok"))


async def _at_counter(p: Platform, credential: str) -> tuple[int, str]:
    return await _answer(
        await p.identity.post(
            "/v1/verifications",
            json={"credential": credential, "services": COUNTER_SERVICES},
            headers=p.counter,
        )
    )


async def _at_desk(p: Platform, credential: str) -> tuple[int, str]:
    return await _answer(
        await p.identity.post(
            "/v1/consents", json={**_terms(), "credential": credential}, headers=p.officer
        )
    )


async def _trail(p: Platform, credential: str) -> tuple[int, str]:
    return await _answer(await p.audit.post("/v1/citizen/trail", json={"credential": credential}))


async def _seen(dsn: str, table: str) -> int:
    connection = await asyncpg.connect(dsn)
    try:
        count: int = await connection.fetchval(f"SELECT count(*) FROM {table}")
        return count
    finally:
        await connection.close()


async def test_a_counter_credential_never_opens_the_trail(platform: Platform) -> None:
    p = platform
    counter = p.mint(Purpose.VERIFICATION)
    assert await _at_counter(p, counter) == (200, "ok")
    assert await _at_counter(p, counter) == (409, "credential_replayed")
    # The probe: the credential left at the counter reads nothing at the audit service ...
    assert await _trail(p, counter) == (401, "wrong_audience")
    # ... and grants no consent either.
    assert await _at_desk(p, counter) == (403, "wrong_audience")
    # Nor does an unused one: the purpose, not the order, decides.
    unused = p.mint(Purpose.VERIFICATION, 1)
    assert await _trail(p, unused) == (401, "wrong_audience")
    assert await _at_desk(p, unused) == (403, "wrong_audience")
    assert await _at_counter(p, unused) == (200, "ok")


async def test_each_credential_is_accepted_once_by_the_one_use_it_was_issued_for(
    platform: Platform,
) -> None:
    p = platform
    uses = {
        Purpose.VERIFICATION: (_at_counter, (200, "ok"), (409, "credential_replayed")),
        Purpose.CONSENT: (_at_desk, (201, "ok"), (409, "credential_replayed")),
        Purpose.TRAIL: (_trail, (200, "ok"), (401, "credential_replayed")),
    }
    refused_elsewhere = {_at_counter: 403, _at_desk: 403, _trail: 401}
    for index, (purpose, (use, accepted, replayed)) in enumerate(uses.items()):
        credential = p.mint(purpose, 10 + index)
        others = [other for other, *_ in uses.values() if other is not use]
        for other in others:  # before its own use ...
            assert await other(p, credential) == (refused_elsewhere[other], "wrong_audience")
        assert await use(p, credential) == accepted, purpose
        assert await use(p, credential) == replayed, purpose
        for other in others:  # ... and after it
            assert await other(p, credential) == (refused_elsewhere[other], "wrong_audience")
    # Each service recorded the credentials it accepted, and nothing for the ones it refused.
    assert await _seen(p.identity_db.owner_dsn, "seen_credentials") == 2
    assert await _seen(p.audit_db.owner_dsn, "seen_credential") == 1


async def test_a_credential_naming_several_purposes_is_refused_everywhere(
    platform: Platform,
) -> None:
    p = platform
    every = [DEFAULT_AUDIENCES[purpose] for purpose in Purpose]
    credential = mint_credential(
        p.keys.dukcapil,
        kid=KID,
        issuer=DEFAULT_ISSUER,
        purpose=Purpose.VERIFICATION,
        audience=every,
        profile=citizen(3, 20),
    )
    assert await _at_counter(p, credential) == (403, "wrong_audience")
    assert await _at_desk(p, credential) == (403, "wrong_audience")
    assert await _trail(p, credential) == (401, "wrong_audience")
    assert await _seen(p.identity_db.owner_dsn, "seen_credentials") == 0
    assert await _seen(p.audit_db.owner_dsn, "seen_credential") == 0
