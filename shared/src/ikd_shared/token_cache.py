"""Remember verified access tokens until they expire, so a busy API checks each one once.

A backend calls an API many times with the same bearer token; verifying its EdDSA signature
on every request costs more CPU than the rest of a small request. A token is a signed,
immutable string: once TokenVerifier accepted it, the same string is accepted again until its
`exp` (the verifier checks no revocation list, and `iat`/`nbf` only become truer with time).
So the cache maps the exact token string to its Principal and answers from it while the token
has not expired (without the verifier's clock-skew leeway, so never longer than it would).
Rejected tokens are not cached: every refusal goes through the verifier. When the verifier's
key set changes (a key withdrawn from identity's JWKS), the cache starts over, so a token of a
withdrawn key is refused from then on.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import jwt

from ikd_shared.auth import Principal, TokenVerifier

DEFAULT_MAX_ENTRIES = 4096


class CachedTokenVerifier:
    """TokenVerifier.verify with a bounded memory of tokens it already accepted."""

    def __init__(
        self,
        verifier: TokenVerifier,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.verifier = verifier
        self.max_entries = max_entries
        self._clock = clock
        self._accepted: dict[str, tuple[Principal, float]] = {}
        self._generation = verifier.keys.generation

    async def refresh_keys(self) -> bool:
        return await self.verifier.refresh_keys()

    def verify(self, token: str) -> Principal:
        """The token's Principal; AuthError exactly when TokenVerifier.verify raises it."""
        if self.verifier.keys.generation != self._generation:
            self._accepted.clear()
            self._generation = self.verifier.keys.generation
        hit = self._accepted.get(token)
        if hit is not None:
            principal, expires = hit
            if self._clock() < expires:
                return principal
            del self._accepted[token]
        principal = self.verifier.verify(token)
        # The signature was just verified: reading the claims again needs no second check.
        expires = float(jwt.decode(token, options={"verify_signature": False})["exp"])
        if len(self._accepted) >= self.max_entries:
            self._evict()
        self._accepted[token] = (principal, expires)
        return principal

    def _evict(self) -> None:
        now = self._clock()
        for token in [t for t, (_, expires) in self._accepted.items() if expires <= now]:
            del self._accepted[token]
        while len(self._accepted) >= self.max_entries:
            del self._accepted[next(iter(self._accepted))]  # the oldest entry
