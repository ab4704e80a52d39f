"""The composition root: real adapters wired to the handlers, built once per process."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from ikd_identity.adapters.keys import thumbprint
from ikd_identity.adapters.postgres import PgClients, PgUnitOfWork
from ikd_identity.adapters.secrets import Argon2Hasher
from ikd_identity.config import IdentitySettings
from ikd_identity.entrypoints.relay import OutboxRelay, RelayHooks
from ikd_identity.service_layer.handlers import Deps
from ikd_shared.auth import TokenIssuer, TokenVerifier, load_ed25519_private_key
from ikd_shared.credentials import CredentialVerifier
from ikd_shared.db import create_pool
from ikd_shared.kafka import make_producer

AUDIENCE = "ikd-identity"


@dataclass(frozen=True, slots=True)
class Container:
    settings: IdentitySettings
    pool: Any  # asyncpg.Pool
    deps: Deps
    clients: PgClients
    hasher: Argon2Hasher
    token_issuer: TokenIssuer
    token_verifier: TokenVerifier

    async def close(self) -> None:
        await self.pool.close()


def token_issuer(settings: IdentitySettings) -> TokenIssuer:
    key = load_ed25519_private_key(settings.token_signing_key.get_secret_value())
    issuer = TokenIssuer(
        key,
        kid="pending",
        issuer=settings.token_issuer,
        ttl=dt.timedelta(seconds=settings.token_ttl_s),
    )
    issuer.kid = settings.token_key_id or thumbprint(issuer.jwks()["keys"][0])
    return issuer


def credential_verifier(settings: IdentitySettings) -> CredentialVerifier:
    return CredentialVerifier(
        settings.trust_jwks,
        issuer=settings.credential_issuer,
        audience=settings.credential_audience,
    )


async def bootstrap(settings: IdentitySettings) -> Container:
    pool = await create_pool(settings.app_dsn, min_size=1, max_size=settings.db_pool_max)
    issuer = token_issuer(settings)
    deps = Deps(
        uow=lambda: PgUnitOfWork(pool),
        verifier=credential_verifier(settings),
        pseudonym_key=settings.pseudonym_key.get_secret_value().encode(),
        credential_max_age=dt.timedelta(seconds=settings.credential_max_age_s),
    )
    return Container(
        settings=settings,
        pool=pool,
        deps=deps,
        clients=PgClients(pool),
        hasher=Argon2Hasher(),
        token_issuer=issuer,
        token_verifier=TokenVerifier(
            issuer.jwks(), issuer=settings.token_issuer, audience=AUDIENCE
        ),
    )


def build_relay(
    settings: IdentitySettings, *, hooks: RelayHooks | None = None, name: str = "relay"
) -> OutboxRelay:
    return OutboxRelay(
        settings.app_dsn,
        lambda: make_producer(settings.kafka_bootstrap_servers),
        topic_prefix=settings.kafka_topic_prefix,
        batch_size=settings.relay_batch_size,
        poll_interval=settings.relay_poll_interval_s,
        hooks=hooks,
        name=name,
    )
