"""The one composition root: real adapters wired to the use cases."""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass
from typing import Any

from ikd_audit.adapters.repository import LogRepository
from ikd_audit.config import AuditSettings
from ikd_audit.domain.throttle import Limit, LoginThrottle
from ikd_audit.service_layer.services import AuditLog
from ikd_shared.auth import TokenVerifier, load_ed25519_private_key
from ikd_shared.credentials import CredentialVerifier
from ikd_shared.db import create_pool


@dataclass
class Services:
    settings: AuditSettings
    pool: Any
    repo: LogRepository
    log: AuditLog
    tokens: TokenVerifier
    login_throttle: LoginThrottle

    async def close(self) -> None:
        await self.pool.close()


def derive_key(settings: AuditSettings, purpose: str) -> bytes:
    secret = settings.session_secret.get_secret_value().encode()
    return hashlib.sha256(f"ikd-audit {purpose}\x00".encode() + secret).digest()


async def bootstrap(settings: AuditSettings, *, pool: Any | None = None) -> Services:
    pool = pool or await create_pool(settings.database_url, min_size=1, max_size=10)
    repo = LogRepository(pool)
    credentials = CredentialVerifier(
        settings.trust_jwks,
        issuer=settings.credential_issuer,
        audience=settings.credential_audience,
    )
    log = AuditLog(
        repo,
        load_ed25519_private_key(settings.tree_head_signing_key.get_secret_value()),
        pseudonym_key=settings.pseudonym_key.get_secret_value().encode(),
        cursor_key=derive_key(settings, "cursor"),
        credentials=credentials,
        credential_max_age=dt.timedelta(seconds=settings.credential_max_age_seconds),
    )
    tokens = TokenVerifier(
        settings.token_jwks, issuer=settings.token_issuer, audience=settings.token_audience
    )
    return Services(settings, pool, repo, log, tokens, login_throttle(settings))


def login_throttle(settings: AuditSettings) -> LoginThrottle:
    window = dt.timedelta(seconds=settings.login_failure_window_seconds)
    return LoginThrottle(
        per_id=Limit(settings.login_max_failures, window),
        per_address=Limit(settings.login_max_failures_per_address, window),
        lockout=dt.timedelta(seconds=settings.login_lockout_seconds),
        max_lockout=dt.timedelta(seconds=settings.login_lockout_max_seconds),
    )
