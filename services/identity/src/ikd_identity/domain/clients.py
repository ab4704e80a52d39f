"""Registered API clients (agency counters, Dukcapil's feed, officers, auditors)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from ikd_shared.auth import Scope

SERVICE_AUDIENCES = {"identity": "ikd-identity", "gateway": "ikd-gateway", "audit": "ikd-audit"}
KNOWN_SCOPES = frozenset(scope.value for scope in Scope)


@dataclass(frozen=True, slots=True)
class Client:
    client_id: str
    secret_hash: str
    scopes: frozenset[str]
    agency: str | None
    disabled: bool = False
    # Agencies an officer's desk may record consents for (never implied by `agency`).
    serves: frozenset[str] = frozenset()
    # After a rotation with a grace period: the old secret's hash, valid until then.
    previous_secret_hash: str | None = None
    previous_secret_expires: dt.datetime | None = None

    def secret_hashes(self, now: dt.datetime) -> list[str]:
        """The hashes a presented secret may match: the current one, and the previous one
        while its grace period lasts."""
        hashes = [self.secret_hash]
        expires = self.previous_secret_expires
        if self.previous_secret_hash is not None and expires is not None and now < expires:
            hashes.append(self.previous_secret_hash)
        return hashes


def audiences_for(scopes: frozenset[str] | set[str]) -> list[str]:
    """The services a token with these scopes is meant for (its `aud` list)."""
    return sorted({SERVICE_AUDIENCES[scope.split(":", 1)[0]] for scope in scopes})
