"""OAuth2 token issuing and the identity settings, without servers."""

from __future__ import annotations

import datetime as dt
import json

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ikd_dev.issuer import generate_issuer_key, public_jwk
from ikd_identity.adapters.keys import thumbprint
from ikd_identity.adapters.secrets import Argon2Hasher
from ikd_identity.bootstrap import token_issuer
from ikd_identity.config import IdentitySettings
from ikd_identity.domain.clients import Client, audiences_for
from ikd_identity.domain.errors import OAuthError
from ikd_identity.service_layer.tokens import issue_token
from ikd_shared.auth import TokenIssuer, TokenVerifier
from ikd_shared.credentials import DEFAULT_AUDIENCES, Purpose
from ikd_shared.settings import load_settings
from ikd_shared.throttle import FailureThrottle, Limit, MemoryThrottleStore
from tests.support.identity_fakes import FakeClients

HASHER = Argon2Hasher()
STRONG_PASSWORD = "f3b9c27e5d6a41c08e7b2d9f4a1c6e30b5d8f2a7c9e1"


def no_limit() -> FailureThrottle:
    roomy = Limit(1000, dt.timedelta(minutes=5))
    return FailureThrottle(MemoryThrottleStore(), per_principal=roomy, per_address=roomy)


@pytest.fixture(scope="module")
def issuer() -> TokenIssuer:
    return TokenIssuer(Ed25519PrivateKey.generate(), kid="t1", issuer="ikd-identity")


@pytest.fixture(scope="module")
def clients() -> FakeClients:
    return FakeClients(
        Client("counter-1", HASHER.hash("right"), frozenset({"identity:verify"}), "bpjs"),
        Client("auditor", HASHER.hash("right"), frozenset({"audit:read"}), None, disabled=True),
    )


async def test_token_carries_scopes_agency_and_audiences(issuer, clients) -> None:
    issued = await issue_token(
        "counter-1",
        "right",
        None,
        clients=clients,
        hasher=HASHER,
        issuer=issuer,
        throttle=no_limit(),
        address="10.0.0.1",
    )
    principal = TokenVerifier(issuer.jwks(), issuer="ikd-identity", audience="ikd-identity").verify(
        issued.access_token
    )
    assert principal.agency == "bpjs"
    assert principal.scopes == frozenset({"identity:verify"})
    assert issued.expires_in == 300


@pytest.mark.parametrize(
    ("client_id", "secret", "scopes", "code"),
    [
        ("counter-1", "wrong", None, "invalid_client"),
        ("nobody", "right", None, "invalid_client"),
        ("auditor", "right", None, "invalid_client"),  # disabled
        ("counter-1", "right", {"audit:read"}, "invalid_scope"),
    ],
)
async def test_token_refusals(issuer, clients, client_id, secret, scopes, code) -> None:
    with pytest.raises(OAuthError) as error:
        await issue_token(
            client_id,
            secret,
            scopes,
            clients=clients,
            hasher=HASHER,
            issuer=issuer,
            throttle=no_limit(),
            address="10.0.0.1",
        )
    assert error.value.code == code


def test_audiences_follow_scopes() -> None:
    assert audiences_for({"identity:verify", "gateway:prefill", "audit:read"}) == [
        "ikd-audit",
        "ikd-gateway",
        "ikd-identity",
    ]
    assert audiences_for({"gateway:webhooks"}) == ["ikd-gateway"]


def test_hasher_never_accepts_without_a_hash() -> None:
    assert not HASHER.verify(None, "no-such-client")
    assert HASHER.verify(HASHER.hash("s"), "s")
    assert not HASHER.verify("not-a-hash", "s")


def _pem() -> str:
    return (
        Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )


@pytest.fixture
def env(monkeypatch, tmp_path):
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [public_jwk(generate_issuer_key(), "k")]}))
    key = tmp_path / "token.pem"
    key.write_text(_pem())
    values = {
        "IKD_ENVIRONMENT": "production",
        "IKD_PSEUDONYM_KEY": "q8Yl3vX0Zr5mK2nB7tW9pD4sF6hJ1cA0eG3iL8oU5yR2",
        "IKD_IDENTITY_DATABASE_URL": f"postgresql://app:{STRONG_PASSWORD}@db:5432/ikd_identity",
        "IKD_IDENTITY_TRUST_JWKS": f"@{jwks}",
        "IKD_IDENTITY_TOKEN_SIGNING_KEY": f"@{key}",
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def test_settings_load_files_and_defaults(env) -> None:
    settings = load_settings(IdentitySettings)
    assert settings.port == 18000
    assert settings.token_issuer == "ikd-identity"
    assert settings.trust_jwks["keys"][0]["kid"] == "k"
    issuer = token_issuer(settings)
    assert issuer.kid == thumbprint(issuer.jwks()["keys"][0])
    token = issuer.issue("c", {"identity:verify"}, ["ikd-identity"])
    assert jwt.get_unverified_header(token)["kid"] == issuer.kid


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("IKD_IDENTITY_DATABASE_URL", None, "setting IKD_IDENTITY_DATABASE_URL is missing"),
        ("IKD_IDENTITY_DATABASE_URL", "mysql://x", "setting IKD_IDENTITY_DATABASE_URL is invalid"),
        ("IKD_IDENTITY_TRUST_JWKS", "{not json", "setting IKD_IDENTITY_TRUST_JWKS is invalid"),
        (
            "IKD_IDENTITY_TRUST_JWKS",
            "@/nonexistent.json",
            "setting IKD_IDENTITY_TRUST_JWKS is invalid",
        ),
        (
            "IKD_IDENTITY_TOKEN_SIGNING_KEY",
            "change-me",
            "setting IKD_IDENTITY_TOKEN_SIGNING_KEY is invalid",
        ),
        ("IKD_IDENTITY_PORT", "eighty", "setting IKD_IDENTITY_PORT is invalid"),
        (
            "IKD_IDENTITY_DATABASE_URL",
            "postgresql://app:changeme@db:5432/ikd_identity",
            "IKD_IDENTITY_DATABASE_URL holds a placeholder or short database password",
        ),
        (
            "IKD_IDENTITY_MIGRATION_DATABASE_URL",
            "postgresql://owner:dev-owner-password@db/ikd_identity",
            "IKD_IDENTITY_MIGRATION_DATABASE_URL holds a placeholder or short database password",
        ),
        (
            "IKD_PSEUDONYM_KEY",
            "dev-pseudonym-key-for-local-development-only",
            "IKD_PSEUDONYM_KEY holds a placeholder",
        ),
    ],
)
def test_bad_settings_exit_with_one_line_naming_the_variable(
    env, capsys, variable, value, message
) -> None:
    if value is None:
        env.delenv(variable)
    else:
        env.setenv(variable, value)
    with pytest.raises(SystemExit):
        load_settings(IdentitySettings)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert message in lines[0]


def test_each_purpose_has_its_own_audience(env, capsys) -> None:
    settings = load_settings(IdentitySettings)
    assert settings.verification_audience == DEFAULT_AUDIENCES[Purpose.VERIFICATION]
    assert settings.consent_audience == DEFAULT_AUDIENCES[Purpose.CONSENT]
    env.setenv("IKD_IDENTITY_CONSENT_AUDIENCE", settings.verification_audience)
    with pytest.raises(SystemExit):
        load_settings(IdentitySettings)
    assert "must differ" in capsys.readouterr().err


def test_placeholders_are_fine_in_development(env) -> None:
    env.setenv("IKD_ENVIRONMENT", "development")
    env.setenv("IKD_PSEUDONYM_KEY", "dev-pseudonym-key")
    assert load_settings(IdentitySettings).is_development


def test_token_lifetime_is_short(env) -> None:
    env.setenv("IKD_IDENTITY_TOKEN_TTL_S", "86400")
    with pytest.raises(SystemExit):
        load_settings(IdentitySettings)
    env.setenv("IKD_IDENTITY_TOKEN_TTL_S", "120")
    assert token_issuer(load_settings(IdentitySettings)).ttl == dt.timedelta(seconds=120)
