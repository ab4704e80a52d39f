"""OAuth2 client credentials: a registered client trades its secret for a short-lived token."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass
from typing import Protocol

from ikd_identity.domain.clients import Client, audiences_for
from ikd_identity.domain.errors import OAuthError, TokenThrottled
from ikd_shared.auth import TokenIssuer
from ikd_shared.throttle import Attempt, Throttled


class ClientStore(Protocol):
    async def get(self, client_id: str) -> Client | None: ...


class SecretHasher(Protocol):
    def hash(self, secret: str) -> str: ...

    def verify(self, secret_hash: str | None, secret: str) -> bool:
        """Constant-time check; with no hash, still spends the time of a real check."""
        ...


class AuthThrottle(Protocol):
    async def begin(self, principal: str, address: str) -> Attempt:
        """Count an attempt as failed; ikd_shared.throttle.Throttled if there is no room."""
        ...

    async def succeeded(self, attempt: Attempt) -> None: ...


@dataclass(frozen=True, slots=True)
class IssuedToken:
    access_token: str
    expires_in: int
    scopes: frozenset[str]


async def issue_token(
    client_id: str,
    secret: str,
    requested: set[str] | None,
    *,
    clients: ClientStore,
    hasher: SecretHasher,
    issuer: TokenIssuer,
    throttle: AuthThrottle,
    address: str,
) -> IssuedToken:
    """A token for a client that authenticates; `address` is the caller's (for the throttle)."""
    try:  # before the secret is hashed: a throttled attempt costs no argon2
        attempt = await throttle.begin(client_id, address)
    except Throttled as throttled:
        raise TokenThrottled(throttled.retry_after_seconds) from None
    client = await clients.get(client_id)
    valid = await asyncio.to_thread(hasher.verify, client.secret_hash if client else None, secret)
    if client is not None and not valid:  # the previous secret, while its grace period lasts
        for previous in client.secret_hashes(dt.datetime.now(dt.UTC))[1:]:
            valid = await asyncio.to_thread(hasher.verify, previous, secret)
    if client is None or not valid or client.disabled:
        raise OAuthError("invalid_client", "unknown client or wrong secret", status_code=401)
    await throttle.succeeded(attempt)
    scopes = frozenset(requested) if requested else client.scopes
    if not scopes <= client.scopes:
        raise OAuthError("invalid_scope", "the client may not request these scopes")
    if not scopes:
        raise OAuthError("invalid_scope", "the client has no scopes")
    token = issuer.issue(client.client_id, scopes, audiences_for(scopes), agency=client.agency)
    return IssuedToken(token, int(issuer.ttl.total_seconds()), scopes)
