"""The one composition root: real adapters wired to the use cases, closed on exit."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from ikd_audit.adapters.repository import PgUnitOfWorkFactory
from ikd_audit.config import AuditSettings
from ikd_audit.service_layer.services import AuditLog, Auditors, Clock, utc_now
from ikd_audit.service_layer.unit_of_work import UnitOfWorkFactory
from ikd_shared.auth import TokenVerifier, load_ed25519_private_key
from ikd_shared.credentials import CredentialVerifier
from ikd_shared.db import create_pool
from ikd_shared.throttle import FailureThrottle, Limit, PgThrottleStore, ThrottleStore


@dataclass(frozen=True, slots=True)
class AuditRuntime:
    """Everything a process of the audit service uses, started and ready."""

    settings: AuditSettings
    uow: UnitOfWorkFactory
    log: AuditLog
    auditors: Auditors
    tokens: TokenVerifier
    login_throttle: FailureThrottle
    """Failed console sign-ins, counted in the database for every replica."""
    throttle_store: ThrottleStore

    async def ping(self) -> None:
        """Readiness: a transaction can be opened (the database answers)."""
        async with self.uow():
            pass


def derive_key(settings: AuditSettings, purpose: str) -> bytes:
    secret = settings.session_secret.get_secret_value().encode()
    return hashlib.sha256(f"ikd-audit {purpose}\x00".encode() + secret).digest()


@contextlib.asynccontextmanager
async def bootstrap(
    settings: AuditSettings,
    *,
    database_url: str | None = None,
    uow: UnitOfWorkFactory | None = None,
    throttle_store: ThrottleStore | None = None,
    clock: Clock = utc_now,
) -> AsyncIterator[AuditRuntime]:
    """The runtime; `database_url` connects as another role; `uow` and `throttle_store`
    replace the database (both are needed then)."""
    async with contextlib.AsyncExitStack() as stack:
        if uow is None:
            pool = await create_pool(database_url or settings.database_url, min_size=1, max_size=10)
            stack.push_async_callback(pool.close)
            uow = PgUnitOfWorkFactory(pool)
            throttle_store = throttle_store or PgThrottleStore(pool)
        if throttle_store is None:
            raise ValueError("an injected unit of work needs an injected throttle store")
        credentials = CredentialVerifier(
            settings.trust_jwks,
            issuer=settings.credential_issuer,
            audience=settings.trail_audience,
        )
        log = AuditLog(
            uow,
            load_ed25519_private_key(settings.tree_head_signing_key.get_secret_value()),
            pseudonym_key=settings.pseudonym_key.get_secret_value().encode(),
            cursor_key=derive_key(settings, "cursor"),
            credentials=credentials,
            credential_max_age=dt.timedelta(seconds=settings.credential_max_age_seconds),
            clock=clock,
            origin=settings.log_origin,
            witnesses=settings.witness_verifiers(),
        )
        tokens = TokenVerifier(
            settings.token_jwks, issuer=settings.token_issuer, audience=settings.token_audience
        )
        yield AuditRuntime(
            settings=settings,
            uow=uow,
            log=log,
            auditors=Auditors(uow),
            tokens=tokens,
            login_throttle=login_throttle(settings, throttle_store),
            throttle_store=throttle_store,
        )


def login_throttle(settings: AuditSettings, store: ThrottleStore) -> FailureThrottle:
    window = dt.timedelta(seconds=settings.login_failure_window_seconds)
    return FailureThrottle(
        store,
        per_principal=Limit(settings.login_max_failures, window),
        per_address=Limit(settings.login_max_failures_per_address, window),
    )
