"""Key helpers: RFC 7638 thumbprints, the token keys identity publishes."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

_THUMBPRINT_MEMBERS = {"OKP": ("crv", "kty", "x"), "EC": ("crv", "kty", "x", "y")}


def thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, base64url without padding)."""
    members = {name: jwk[name] for name in _THUMBPRINT_MEMBERS[jwk["kty"]]}
    digest = hashlib.sha256(json.dumps(members, separators=(",", ":"), sort_keys=True).encode())
    return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()


def published_keys(jwks: dict[str, Any]) -> list[dict[str, Any]]:
    """The public keys to publish beside the signing key (ValueError on anything else).

    Rebuilt from kty/crv/x alone, so nothing else a JWK carries is ever published."""
    keys = []
    for jwk in jwks.get("keys", []):
        if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519" or "x" not in jwk:
            raise ValueError("only Ed25519 public JWKs can be published")
        if "d" in jwk:  # a private key would be published to everyone
            raise ValueError("a private key (d) must never be published")
        public = {name: jwk[name] for name in ("kty", "crv", "x")}
        public.update({"kid": jwk.get("kid") or thumbprint(public), "use": "sig", "alg": "EdDSA"})
        keys.append(public)
    return keys
