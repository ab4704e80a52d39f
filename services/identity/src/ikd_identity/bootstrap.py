"""The composition root: real adapters wired to the handlers, once per process.

`bootstrap(settings)` is an async context manager: it yields a started, immutable `Runtime`
(the pool open, the relay running if asked for) and closes everything when the block exits.
The API's lifespan, the relay process and the CLI commands only enter it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from ikd_identity.adapters.keys import published_keys, thumbprint
from ikd_identity.adapters.postgres import OutboxRow, PgClients, PgUnitOfWork, notify_outbox
from ikd_identity.adapters.relay import OutboxRelay, ProducerFactory, RelayHooks, outbox_relay
from ikd_identity.adapters.secrets import Argon2Hasher
from ikd_identity.config import IdentitySettings
from ikd_identity.service_layer.handlers import (
    Deps,
    PreparedVerification,
    ProfileResult,
    verify_batch,
)
from ikd_shared import telemetry
from ikd_shared.auth import TokenIssuer, TokenVerifier, load_ed25519_private_key
from ikd_shared.credentials import CredentialVerifier, Purpose
from ikd_shared.db import create_pool
from ikd_shared.group_commit import GroupCommit
from ikd_shared.kafka import KafkaConnection
from ikd_shared.policy import load_policy
from ikd_shared.supervise import in_background
from ikd_shared.throttle import FailureThrottle, Limit, PgThrottleStore
from ikd_shared.token_cache import CachedTokenVerifier

AUDIENCE = "ikd-identity"
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OutboxWakeup:
    """After a commit that added outbox rows: tell the relay, once per transaction.

    The relay in this process is woken directly when it is the active one; otherwise (relay
    elsewhere, or this one on standby) a NOTIFY reaches the active relay. Deliberately not
    a trigger: a NOTIFY in the writing transaction takes PostgreSQL's global notify lock
    through its commit, so concurrent verifications would commit one at a time.
    """

    pool: Any  # asyncpg.Pool
    relay: OutboxRelay | None = None

    async def __call__(self) -> None:
        if self.relay is not None and self.relay.active.is_set():
            self.relay.wake()
            return
        try:
            await notify_outbox(self.pool)
        except Exception as error:  # the write is committed; the relay's poll will find it
            log.warning("outbox notify failed", extra={"error": repr(error)})


@dataclass(frozen=True, slots=True)
class Runtime:
    """Everything a started identity process uses; valid inside `bootstrap`'s block only."""

    settings: IdentitySettings
    pool: Any  # asyncpg.Pool
    deps: Deps
    clients: PgClients
    hasher: Argon2Hasher
    token_throttle: FailureThrottle
    """Failed client authentications at /oauth/token, counted in the database."""
    token_issuer: TokenIssuer
    token_verifier: CachedTokenVerifier
    relay: OutboxRelay | None
    """The outbox relay running in this process (None: it runs elsewhere)."""


def token_issuer(settings: IdentitySettings) -> TokenIssuer:
    key = load_ed25519_private_key(settings.token_signing_key.get_secret_value())
    issuer = TokenIssuer(
        key,
        kid="pending",
        issuer=settings.token_issuer,
        ttl=dt.timedelta(seconds=settings.token_ttl_s),
        published=published_keys(settings.token_published_keys),
    )
    issuer.kid = settings.token_key_id or thumbprint(issuer.signing_jwk())
    return issuer


def verification_groups(
    settings: IdentitySettings, deps: Deps
) -> GroupCommit[PreparedVerification, ProfileResult]:
    """Concurrent verifications share a transaction (handlers.verify_batch)."""
    return GroupCommit(
        functools.partial(verify_batch, deps=deps),
        key=lambda item: item.pseudonym,
        max_batch=settings.verify_group_max,
        max_in_flight=settings.verify_groups_in_flight,
    )


def token_throttle(settings: IdentitySettings, pool: Any) -> FailureThrottle:
    window = dt.timedelta(seconds=settings.token_throttle_window_s)
    return FailureThrottle(
        PgThrottleStore(pool),
        per_principal=Limit(settings.token_throttle_max_failures_per_client, window),
        per_address=Limit(settings.token_throttle_max_failures_per_address, window),
    )


def credential_verifier(
    settings: IdentitySettings, purpose: Purpose = Purpose.VERIFICATION
) -> CredentialVerifier:
    return CredentialVerifier(
        settings.trust_jwks,
        issuer=settings.credential_issuer,
        audience=settings.audience(purpose),
    )


async def _keep_session(_: Any) -> None:
    """Pool release without asyncpg's reset round trip (RESET ALL, UNLISTEN *, unlock all).

    asyncpg still rolls back a transaction left open. Nothing on this pool changes session
    state: no SET, LISTEN or advisory lock (the relay's lock and LISTEN are on its own
    connection), so the reset query would cost a round trip per request for nothing.
    """


@contextlib.asynccontextmanager
async def bootstrap(
    settings: IdentitySettings,
    *,
    relay: bool = False,
    relay_hooks: RelayHooks[OutboxRow] | None = None,
    producer_factory: ProducerFactory | None = None,
) -> AsyncIterator[Runtime]:
    """The started runtime; `relay`: run the outbox relay in this process while it lasts.

    `relay_hooks` and `producer_factory` replace the relay's crash seams and Kafka producer.
    """
    telemetry.setup("ikd-identity")
    pool = await create_pool(
        settings.app_dsn, min_size=1, max_size=settings.db_pool_max, reset=_keep_session
    )
    try:
        issuer = token_issuer(settings)
        outbox = (
            build_relay(settings, hooks=relay_hooks, producer_factory=producer_factory)
            if relay
            else None
        )
        wakeup = OutboxWakeup(pool, outbox)
        deps = Deps(
            uow=lambda: PgUnitOfWork(pool, on_outbox=wakeup),
            verifier=credential_verifier(settings),
            consent_verifier=credential_verifier(settings, Purpose.CONSENT),
            pseudonym_key=settings.pseudonym_key.get_secret_value().encode(),
            credential_max_age=dt.timedelta(seconds=settings.credential_max_age_s),
            policy=load_policy(settings.policy_file),
        )
        runtime = Runtime(
            settings=settings,
            pool=pool,
            deps=dataclasses.replace(deps, verifications=verification_groups(settings, deps)),
            clients=PgClients(pool),
            hasher=Argon2Hasher(),
            token_throttle=token_throttle(settings, pool),
            token_issuer=issuer,
            token_verifier=CachedTokenVerifier(
                TokenVerifier(issuer.jwks(), issuer=settings.token_issuer, audience=AUDIENCE)
            ),
            relay=outbox,
        )
        async with contextlib.AsyncExitStack() as running:
            if outbox is not None:
                await running.enter_async_context(
                    in_background(outbox.supervise, name=f"outbox-{outbox.name}")
                )
            yield runtime
    finally:
        await pool.close()


def build_relay(
    settings: IdentitySettings,
    *,
    hooks: RelayHooks[OutboxRow] | None = None,
    name: str = "relay",
    producer_factory: ProducerFactory | None = None,
) -> OutboxRelay:
    return outbox_relay(
        settings.app_dsn,
        producer_factory or KafkaConnection.from_settings(settings).producer,
        topic_prefix=settings.kafka_topic_prefix,
        batch_size=settings.relay_batch_size,
        poll_interval=settings.relay_poll_interval_s,
        hooks=hooks,
        name=name,
    )
