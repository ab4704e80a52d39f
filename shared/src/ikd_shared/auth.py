"""Service-to-service authentication: short-lived EdDSA-signed access tokens (JWT).

The identity service issues tokens to registered clients (OAuth2 client credentials); every
service verifies them locally against the issuer's public JWKS, so no call crosses services
per request. The JWKS is either given (tests, offline) or fetched from identity's
`/.well-known/jwks.json` and kept fresh (ikd_shared.jwks.RemoteJwks).
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from jwt.algorithms import OKPAlgorithm

TOKEN_ALGORITHMS = ["EdDSA"]
DEFAULT_TTL = dt.timedelta(minutes=5)
CLOCK_SKEW = dt.timedelta(seconds=30)


class Scope(StrEnum):
    VERIFY = "identity:verify"  # an MPP counter submits IKD credentials
    FEED = "identity:feed"  # Dukcapil's update feed
    CONSENT = "identity:consent"  # an MPP officer's desk records a citizen's consents
    REGISTER = "identity:register"  # an agency's gateway registers citizens for a legal duty
    PREFILL = "gateway:prefill"  # an agency backend reads its prefill API
    WEBHOOKS = "gateway:webhooks"  # an agency backend manages its webhook endpoints
    REGISTRATIONS = "gateway:registrations"  # an agency backend registers citizens
    AUDIT_READ = "audit:read"  # an auditor searches and exports the access log


class AuthError(Exception):
    """A token that cannot be trusted; `code` is machine-readable."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Principal:
    client_id: str
    scopes: frozenset[str]
    agency: str | None
    token_id: str

    def has(self, scope: Scope) -> bool:
        return scope.value in self.scopes


class TokenIssuer:
    """Signs with one key; publishes it with `published` (the next key before it signs, the
    previous one until the tokens it signed have expired: a rotation with overlap)."""

    def __init__(
        self,
        private_key: Ed25519PrivateKey,
        *,
        kid: str,
        issuer: str,
        ttl: dt.timedelta = DEFAULT_TTL,
        published: list[dict[str, Any]] | None = None,
    ) -> None:
        self._key = private_key
        self.kid = kid
        self.issuer = issuer
        self.ttl = ttl
        self.published = list(published or [])

    def issue(
        self,
        client_id: str,
        scopes: set[str] | frozenset[str],
        audience: list[str],
        *,
        agency: str | None = None,
        now: dt.datetime | None = None,
    ) -> str:
        now = now or dt.datetime.now(dt.UTC)
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "sub": client_id,
            "aud": audience,
            "iat": now,
            "nbf": now,
            "exp": now + self.ttl,
            "jti": str(uuid.uuid4()),
            "scope": " ".join(sorted(scopes)),
        }
        if agency is not None:
            claims["agency"] = agency
        return jwt.encode(claims, self._key, algorithm="EdDSA", headers={"kid": self.kid})

    def signing_jwk(self) -> dict[str, Any]:
        """The public JWK of the key that signs."""
        jwk: dict[str, Any] = json.loads(OKPAlgorithm.to_jwk(self._key.public_key()))
        jwk.update({"kid": self.kid, "use": "sig", "alg": "EdDSA"})
        return jwk

    def jwks(self) -> dict[str, Any]:
        """The signing key first, then the published ones (a kid the signing key has is not
        published twice)."""
        others = [jwk for jwk in self.published if jwk.get("kid") != self.kid]
        return {"keys": [self.signing_jwk(), *others]}


class TokenKeys:
    """The keys a verifier accepts, by kid. Static here; ikd_shared.jwks.RemoteJwks replaces
    them from identity's JWKS URL and answers `refresh` with a fetch."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self._keys: dict[str, jwt.PyJWK] = {}
        self.generation = 0
        """Counts the changes of the key set (a cache of accepted tokens starts over then)."""
        self.replace(jwks)

    def get(self, kid: str) -> jwt.PyJWK | None:
        return self._keys.get(kid)

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def replace(self, jwks: dict[str, Any]) -> bool:
        """Accept exactly these keys (ValueError if the set is not a JWKS); True if changed."""
        try:
            parsed = jwt.PyJWKSet.from_dict(jwks).keys if jwks.get("keys") else []
        except jwt.PyJWKSetError as error:
            raise ValueError(f"not a usable JWKS: {error}") from None
        # Only keys of the tokens' algorithm: an HMAC key in the set must not crowd them out.
        keys = {k.key_id: k for k in parsed if k.key_id and k.algorithm_name in TOKEN_ALGORITHMS}
        if parsed and not keys:
            raise ValueError(f"no {'/'.join(TOKEN_ALGORITHMS)} key with a kid in the JWKS")
        changed = set(keys) != set(self._keys)
        self._keys = keys  # one assignment: a concurrent verify sees the old or the new set
        self.generation += changed
        return changed

    async def refresh(self) -> bool:
        """Look for keys not seen yet (a token with an unknown kid); True if the set changed."""
        return False


class TokenVerifier:
    def __init__(self, jwks: dict[str, Any] | TokenKeys, *, issuer: str, audience: str) -> None:
        self.keys = jwks if isinstance(jwks, TokenKeys) else TokenKeys(jwks)
        self.issuer = issuer
        self.audience = audience

    async def refresh_keys(self) -> bool:
        return await self.keys.refresh()

    def verify(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise AuthError("malformed_token", "the bearer token is not a JWT") from None
        key = self.keys.get(str(header.get("kid")))
        if key is None:
            raise AuthError("unknown_key", "the token was signed by an unknown key")
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=TOKEN_ALGORITHMS,
                issuer=self.issuer,
                audience=self.audience,
                leeway=CLOCK_SKEW,
                options={"require": ["exp", "iat", "iss", "aud", "sub", "jti"]},
            )
        except jwt.ExpiredSignatureError:
            raise AuthError("token_expired", "the token has expired") from None
        except jwt.InvalidTokenError as error:
            raise AuthError("invalid_token", f"the token is invalid: {error}") from None
        return Principal(
            client_id=str(claims["sub"]),
            scopes=frozenset(str(claims.get("scope", "")).split()),
            agency=claims.get("agency"),
            token_id=str(claims["jti"]),
        )


def load_jwks(value: str) -> dict[str, Any]:
    """A JWKS given inline as JSON, or as `@path` to a JSON file."""
    text = Path(value[1:]).read_text() if value.startswith("@") else value
    jwks = json.loads(text)
    if not isinstance(jwks, dict) or not isinstance(jwks.get("keys"), list):
        raise ValueError("not a JWKS: expected an object with a 'keys' list")
    return jwks


def load_ed25519_private_key(value: str) -> Ed25519PrivateKey:
    """An Ed25519 private key as PEM, or as `@path` to a PEM file."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    pem = Path(value[1:]).read_bytes() if value.startswith("@") else value.encode()
    key = load_pem_private_key(pem, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("not an Ed25519 private key")
    return key
