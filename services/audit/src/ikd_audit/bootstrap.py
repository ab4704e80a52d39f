"""The composition roots: real adapters wired to the use cases, closed on exit.

`bootstrap` builds the service (API, console, consumer) without the tree-head key;
`bootstrap_signer` builds `ikd-audit signer`, the one process that holds it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from ikd_audit.adapters.patterns import PgPatternQueries
from ikd_audit.adapters.repository import PgUnitOfWorkFactory, request_tree_head
from ikd_audit.config import AuditSettings, SignerSettings
from ikd_audit.service_layer.checkpoints import CheckpointSigner, SignerClient, TreeHeadSigner
from ikd_audit.service_layer.patterns import AccessPatterns, EntryPatternQueries, PatternQueries
from ikd_audit.service_layer.services import AuditLog, Auditors, Clock, utc_now
from ikd_audit.service_layer.unit_of_work import UnitOfWorkFactory
from ikd_shared import telemetry
from ikd_shared.auth import TokenVerifier
from ikd_shared.credentials import CredentialVerifier
from ikd_shared.db import create_pool
from ikd_shared.jwks import keep_fresh, token_keys
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
    patterns: AccessPatterns
    """Charts, anomaly alerts and agency reports."""

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
    signer: TreeHeadSigner | None = None,
    clock: Clock = utc_now,
) -> AsyncIterator[AuditRuntime]:
    """The runtime; `database_url` connects as another role; `uow`, `throttle_store` and
    `signer` replace the database and the signer process (all three are needed then)."""
    telemetry.setup("ikd-audit")
    async with contextlib.AsyncExitStack() as stack:
        queries: PatternQueries | None = None
        if uow is None:
            pool = await create_pool(database_url or settings.database_url, min_size=1, max_size=10)
            stack.push_async_callback(pool.close)
            uow = PgUnitOfWorkFactory(pool)
            queries = PgPatternQueries(pool)
            throttle_store = throttle_store or PgThrottleStore(pool)
            if signer is None:
                signer = SignerClient(
                    uow,
                    settings.log_verifier,
                    functools.partial(request_tree_head, pool),
                    wait=settings.signer_wait_seconds,
                )
        if throttle_store is None or signer is None:
            raise ValueError("an injected unit of work needs an injected throttle store and signer")
        credentials = CredentialVerifier(
            settings.trust_jwks,
            issuer=settings.credential_issuer,
            audience=settings.trail_audience,
        )
        log = AuditLog(
            uow,
            signer,
            pseudonym_key=settings.pseudonym_key.get_secret_value().encode(),
            cursor_key=derive_key(settings, "cursor"),
            credentials=credentials,
            credential_max_age=dt.timedelta(seconds=settings.credential_max_age_seconds),
            clock=clock,
            witnesses=settings.witness_verifiers(),
        )
        tokens = TokenVerifier(
            token_keys(settings, settings.token_jwks),
            issuer=settings.token_issuer,
            audience=settings.token_audience,
        )
        await stack.enter_async_context(keep_fresh(tokens))
        yield AuditRuntime(
            settings=settings,
            uow=uow,
            log=log,
            auditors=Auditors(uow),
            tokens=tokens,
            login_throttle=login_throttle(settings, throttle_store),
            throttle_store=throttle_store,
            patterns=AccessPatterns(
                queries or EntryPatternQueries(uow),
                log,
                thresholds=settings.thresholds,
                hours=settings.hours,
                clock=clock,
            ),
        )


def login_throttle(settings: AuditSettings, store: ThrottleStore) -> FailureThrottle:
    window = dt.timedelta(seconds=settings.login_failure_window_seconds)
    return FailureThrottle(
        store,
        per_principal=Limit(settings.login_max_failures, window),
        per_address=Limit(settings.login_max_failures_per_address, window),
    )


@dataclass(frozen=True, slots=True)
class SignerRuntime:
    """`ikd-audit signer`: the log read and tree heads added as the signer role, and the key."""

    settings: SignerSettings
    uow: UnitOfWorkFactory
    signer: CheckpointSigner

    async def ping(self) -> None:
        async with self.uow(snapshot=True):
            pass


@contextlib.asynccontextmanager
async def bootstrap_signer(
    settings: SignerSettings, *, uow: UnitOfWorkFactory | None = None, clock: Clock = utc_now
) -> AsyncIterator[SignerRuntime]:
    telemetry.setup("ikd-audit-signer")
    async with contextlib.AsyncExitStack() as stack:
        if uow is None:
            pool = await create_pool(settings.database_url, min_size=1, max_size=2)
            stack.push_async_callback(pool.close)
            uow = PgUnitOfWorkFactory(pool)
        note_signer = settings.note_signer
        signer = CheckpointSigner(uow, note_signer.private_key, note_signer.name, clock)
        yield SignerRuntime(settings=settings, uow=uow, signer=signer)
