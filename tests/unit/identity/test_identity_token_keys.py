"""Token keys and client secrets across a rotation, without servers: identity publishes the
keys it was told to beside the one it signs with (public parts only), verifies tokens of all
of them, a previous client secret works only until its grace period ends, and the verifying
services take a JWKS URL (https outside development) or a static JWKS, not both."""

from __future__ import annotations

import datetime as dt
import json

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from ikd_audit.config import AuditSettings
from ikd_gateway.config import GatewaySettings
from ikd_identity.adapters.keys import published_keys, thumbprint
from ikd_identity.adapters.secrets import Argon2Hasher
from ikd_identity.bootstrap import token_issuer
from ikd_identity.config import IdentitySettings
from ikd_identity.domain.clients import Client
from ikd_identity.domain.errors import OAuthError
from ikd_identity.service_layer.tokens import issue_token
from ikd_shared import checkpoint
from ikd_shared.auth import AuthError, TokenIssuer, TokenVerifier
from ikd_shared.jwks import RemoteJwks, token_keys
from ikd_shared.throttle import FailureThrottle, Limit, MemoryThrottleStore
from tests.support.identity_fakes import FakeClients

STRONG = "f3b9c27e5d6a41c08e7b2d9f4a1c6e30b5d8f2a7c9e1"
HASHER = Argon2Hasher()


def pem(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def jwk_of(key: Ed25519PrivateKey, *, private: bool = False) -> dict[str, object]:
    from jwt.algorithms import OKPAlgorithm

    source = key if private else key.public_key()
    return dict(json.loads(OKPAlgorithm.to_jwk(source)))


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: object) -> pytest.MonkeyPatch:
    values = {
        "IKD_ENVIRONMENT": "production",
        "IKD_PSEUDONYM_KEY": "q8Yl3vX0Zr5mK2nB7tW9pD4sF6hJ1cA0eG3iL8oU5yR2",
        "IKD_IDENTITY_DATABASE_URL": f"postgresql://app:{STRONG}@db:5432/ikd_identity",
        "IKD_IDENTITY_TRUST_JWKS": json.dumps({"keys": [jwk_of(Ed25519PrivateKey.generate())]}),
        "IKD_IDENTITY_TOKEN_SIGNING_KEY": pem(Ed25519PrivateKey.generate()),
    }
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def test_identity_publishes_the_other_keys_and_accepts_their_tokens(env) -> None:
    previous = Ed25519PrivateKey.generate()
    published = jwk_of(previous)
    env.setenv("IKD_IDENTITY_TOKEN_PUBLISHED_KEYS", json.dumps({"keys": [published]}))
    issuer = token_issuer(IdentitySettings())  # type: ignore[call-arg]
    kids = [key["kid"] for key in issuer.jwks()["keys"]]
    assert kids == [issuer.kid, thumbprint(published)]  # the signing key first
    assert jwt.get_unverified_header(issuer.issue("c", {"x"}, ["a"]))["kid"] == issuer.kid
    old = TokenIssuer(previous, kid=thumbprint(published), issuer="ikd-identity")
    verifier = TokenVerifier(issuer.jwks(), issuer="ikd-identity", audience="a")
    assert verifier.verify(old.issue("c", {"x"}, ["a"])).client_id == "c"
    assert all("d" not in key for key in issuer.jwks()["keys"])


def test_a_private_or_foreign_key_is_never_published(env, capsys) -> None:
    private = jwk_of(Ed25519PrivateKey.generate(), private=True)
    assert "d" in private
    with pytest.raises(ValueError, match="private key"):
        published_keys({"keys": [private]})
    env.setenv("IKD_IDENTITY_TOKEN_PUBLISHED_KEYS", json.dumps({"keys": [private]}))
    with pytest.raises(ValidationError, match="private key"):
        IdentitySettings()  # type: ignore[call-arg]
    rsa_like = {"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "r"}
    with pytest.raises(ValueError, match="only Ed25519"):
        published_keys({"keys": [rsa_like]})
    # Anything beyond kty/crv/x that a JWK carries is dropped, not published.
    extra = {**jwk_of(Ed25519PrivateKey.generate()), "kid": "k2", "x5u": "https://evil.test"}
    assert set(published_keys({"keys": [extra]})[0]) == {"kty", "crv", "x", "kid", "use", "alg"}


async def test_a_previous_secret_works_only_during_its_grace_period() -> None:
    now = dt.datetime.now(dt.UTC)
    roomy = Limit(1000, dt.timedelta(minutes=5))
    throttle = FailureThrottle(MemoryThrottleStore(), per_principal=roomy, per_address=roomy)
    issuer = TokenIssuer(Ed25519PrivateKey.generate(), kid="t", issuer="ikd-identity")
    scopes = frozenset({"identity:verify"})
    in_grace = Client(
        "in-grace", HASHER.hash("new"), scopes, None,
        previous_secret_hash=HASHER.hash("old"),
        previous_secret_expires=now + dt.timedelta(hours=1),
    )  # fmt: skip
    expired = Client(
        "expired", HASHER.hash("new"), scopes, None,
        previous_secret_hash=HASHER.hash("old"),
        previous_secret_expires=now - dt.timedelta(seconds=1),
    )  # fmt: skip
    clients = FakeClients(in_grace, expired)

    async def token(client_id: str, secret: str) -> str:
        issued = await issue_token(
            client_id, secret, None, clients=clients, hasher=HASHER, issuer=issuer,
            throttle=throttle, address="10.0.0.1",
        )  # fmt: skip
        return issued.access_token

    assert await token("in-grace", "new")
    assert await token("in-grace", "old")
    assert await token("expired", "new")
    with pytest.raises(OAuthError):
        await token("expired", "old")
    with pytest.raises(OAuthError):
        await token("in-grace", "neither")


def gateway(**values: object) -> GatewaySettings:
    return GatewaySettings(
        agency="bank-bjb",
        database_url=f"postgresql://app:{STRONG}@db:5432/gw",  # type: ignore[arg-type]
        **values,  # type: ignore[arg-type]
    )


def test_verifying_services_take_one_key_source_and_https_outside_development(env) -> None:
    monkeypatch = env
    for name, value in {
        "IKD_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "IKD_KAFKA_USERNAME": "gateway",
        "IKD_KAFKA_PASSWORD": STRONG,
        "IKD_AUDIT_LOG_VKEY": checkpoint.Signer(
            "audit.test.example/log", Ed25519PrivateKey.generate()
        ).verifier.vkey,
        "IKD_AUDIT_TRUST_JWKS": json.dumps({"keys": [jwk_of(Ed25519PrivateKey.generate())]}),
        "IKD_AUDIT_SESSION_SECRET": STRONG,
    }.items():
        monkeypatch.setenv(name, value)
    for name in ("IKD_GATEWAY_TOKEN_JWKS", "IKD_AUDIT_TOKEN_JWKS", "IKD_GATEWAY_TOKEN_JWKS_URL"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ValidationError, match="set one of IKD_GATEWAY_TOKEN_JWKS_URL"):
        gateway()
    with pytest.raises(ValidationError, match="set one of"):
        gateway(token_jwks='{"keys": []}', token_jwks_url="https://identity/.well-known/jwks.json")
    with pytest.raises(ValidationError, match="must be https outside development"):
        gateway(token_jwks_url="http://identity/.well-known/jwks.json")
    remote = gateway(token_jwks_url="https://identity.mpp.test/.well-known/jwks.json")
    keys = token_keys(remote, None)
    assert isinstance(keys, RemoteJwks)
    assert keys.url == "https://identity.mpp.test/.well-known/jwks.json"
    monkeypatch.setenv("IKD_ENVIRONMENT", "development")
    development = gateway(token_jwks_url="http://127.0.0.1:18000/.well-known/jwks.json")
    assert isinstance(token_keys(development, None), RemoteJwks)
    monkeypatch.setenv("IKD_ENVIRONMENT", "production")
    with pytest.raises(ValidationError, match="IKD_AUDIT_TOKEN_JWKS_URL must be https"):
        AuditSettings(  # type: ignore[call-arg]
            database_url=f"postgresql://app:{STRONG}@db:5432/audit",
            token_jwks_url="http://identity/.well-known/jwks.json",
        )


def test_static_keys_never_refresh() -> None:
    key = TokenIssuer(Ed25519PrivateKey.generate(), kid="s", issuer="ikd-identity")
    static = gateway(token_jwks=json.dumps(key.jwks()))
    keys = token_keys(static, key.jwks())
    assert not isinstance(keys, RemoteJwks)
    verifier = TokenVerifier(keys, issuer="ikd-identity", audience="ikd-gateway")
    other = TokenIssuer(Ed25519PrivateKey.generate(), kid="o", issuer="ikd-identity")
    with pytest.raises(AuthError, match="unknown key"):
        verifier.verify(other.issue("c", {"x"}, ["ikd-gateway"]))
