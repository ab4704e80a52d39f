"""Client secrets are stored as argon2id hashes and checked in constant time."""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError


class Argon2Hasher:
    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self._hasher = hasher or PasswordHasher()
        # Checked against when the client is unknown, so that costs the same time.
        self._dummy = self._hasher.hash("no-such-client")

    def hash(self, secret: str) -> str:
        return self._hasher.hash(secret)

    def verify(self, secret_hash: str | None, secret: str) -> bool:
        try:
            return self._hasher.verify(secret_hash or self._dummy, secret) and bool(secret_hash)
        except (VerificationError, InvalidHashError):
            return False
