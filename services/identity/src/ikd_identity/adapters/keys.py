"""Key helpers: RFC 7638 thumbprints and PEM files."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from ikd_shared.credentials import IssuerKey

_THUMBPRINT_MEMBERS = {"OKP": ("crv", "kty", "x"), "EC": ("crv", "kty", "x", "y")}


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url without padding)."""
    members = {name: jwk[name] for name in _THUMBPRINT_MEMBERS[jwk["kty"]]}
    digest = hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode())
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


def private_pem(key: IssuerKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_private_key(path: Path, key: IssuerKey) -> None:
    path.write_bytes(private_pem(key))
    path.chmod(0o600)


def read_private_key(path: Path) -> IssuerKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519

    if not isinstance(key, ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey):
        raise ValueError(f"{path} holds neither an Ed25519 nor an EC P-256 key")
    return key
