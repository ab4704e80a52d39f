"""A development IKD issuer: keys, their JWKS, and credentials signed as Dukcapil would.

The services only verify credentials (`ikd_shared.credentials`); production trusts nothing but
the anchors in IKD_IDENTITY_TRUST_JWKS, so this issuer never leaves development and tests.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any, Literal

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from jwt.algorithms import ECAlgorithm, OKPAlgorithm

from ikd_shared.credentials import DEFAULT_AUDIENCES, Purpose
from ikd_shared.events.profile_v1 import CitizenProfile

IssuerKey = ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey
Algorithm = Literal["EdDSA", "ES256"]

# The services' defaults for the credentials they accept (ikd_identity.config, ikd_audit.config).
DEFAULT_ISSUER = "https://dukcapil.kemendagri.go.id/ikd"
KEY_FILE = "dukcapil-issuer.pem"
JWKS_FILE = "dukcapil-jwks.json"


def generate_issuer_key(algorithm: Algorithm = "EdDSA") -> IssuerKey:
    if algorithm == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    return ec.generate_private_key(ec.SECP256R1())


def public_jwk(key: IssuerKey, kid: str) -> dict[str, Any]:
    """The public half of an issuer key as a JWK with `kid`, `alg` and `use`."""
    if isinstance(key, ed25519.Ed25519PrivateKey):
        jwk = json.loads(OKPAlgorithm.to_jwk(key.public_key()))
        jwk["alg"] = "EdDSA"
    else:
        jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
        jwk["alg"] = "ES256"
    jwk.update({"kid": kid, "use": "sig"})
    return dict(jwk)


def mint_credential(
    key: IssuerKey,
    *,
    kid: str,
    issuer: str,
    purpose: Purpose,
    profile: CitizenProfile,
    audience: str | list[str] | None = None,
    lifetime: dt.timedelta = dt.timedelta(minutes=10),
    issued_at: dt.datetime | None = None,
    jti: str | None = None,
    extra_claims: dict[str, Any] | None = None,
) -> str:
    """Sign a credential for one purpose as an issuer would (development issuer and tests).

    `audience` replaces the purpose's default audience (a service configured with another).
    """
    issued_at = issued_at or dt.datetime.now(dt.UTC)
    algorithm = "EdDSA" if isinstance(key, ed25519.Ed25519PrivateKey) else "ES256"
    claims: dict[str, Any] = {
        "iss": issuer,
        "aud": audience or DEFAULT_AUDIENCES[purpose],
        "iat": issued_at,
        "nbf": issued_at,
        "exp": issued_at + lifetime,
        "jti": jti or str(uuid.uuid4()),
        "nik": profile.nik,
        "profile": profile.model_dump(mode="json"),
        **(extra_claims or {}),
    }
    return jwt.encode(claims, key, algorithm=algorithm, headers={"kid": kid})


def write_private_key(path: Path, key: IssuerKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def read_private_key(path: Path) -> IssuerKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path} holds neither an Ed25519 nor an EC P-256 key")
    return key
