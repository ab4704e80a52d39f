"""The composition root: settings -> policy, context, adapters. Real adapters by default."""

from __future__ import annotations

import datetime as dt
import sys
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from ikd_gateway.adapters import webhooks as webhook_adapters
from ikd_gateway.adapters.postgres import PgUnitOfWork
from ikd_gateway.adapters.relay import AccessRelay
from ikd_gateway.config import GatewaySettings
from ikd_gateway.domain.policy import MppPolicy, PolicyError, load_policy
from ikd_gateway.service_layer.context import GatewayContext, UnitOfWorkFactory, utcnow
from ikd_gateway.service_layer.unit_of_work import UnitOfWork
from ikd_gateway.service_layer.webhooks import Dispatcher, RetryPolicy
from ikd_shared import codec
from ikd_shared.auth import TokenVerifier, load_jwks
from ikd_shared.consumer import DeadLetterWriter
from ikd_shared.db import create_pool
from ikd_shared.events import topics
from ikd_shared.events.envelope import CloudEvent
from ikd_shared.kafka import KafkaConnection

SERVICE = "ikd-agency-gateway"
WEBHOOK_DEAD_LETTER_TYPE = "id.go.mpp.gateway.webhook.dead_lettered.v1"


def load_agency_policy(settings: GatewaySettings) -> tuple[MppPolicy, GatewayContext]:
    """The MPP policy and this deployment's context; PolicyError names what is wrong."""
    policy = load_policy(settings.policy_file)
    agency = policy.agency(settings.agency)
    ctx = GatewayContext(
        agency=agency,
        pseudonym_key=settings.pseudonym_key.get_secret_value().encode(),
        consumer=settings.consumer_group,
        clock=utcnow,
    )
    return policy, ctx


def check_or_exit(settings: GatewaySettings) -> tuple[MppPolicy, GatewayContext, TokenVerifier]:
    """Everything static a process needs, or exit with one line naming the problem."""
    try:
        policy, ctx = load_agency_policy(settings)
    except PolicyError as error:
        print(f"ikd_gateway: invalid policy: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        verifier = TokenVerifier(
            load_jwks(settings.token_jwks),
            issuer=settings.token_issuer,
            audience=settings.token_audience,
        )
    except (OSError, ValueError) as error:
        print(f"ikd_gateway: setting IKD_GATEWAY_TOKEN_JWKS is invalid: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    return policy, ctx, verifier


@dataclass
class Gateway:
    """Live resources of one gateway process, opened with `start()` and closed with `stop()`."""

    settings: GatewaySettings
    ctx: GatewayContext
    verifier: TokenVerifier | None = None
    pool: asyncpg.Pool | None = None
    producer: AIOKafkaProducer | None = None
    relay: AccessRelay | None = None
    sender: webhook_adapters.HttpSender | None = None
    uow_override: UnitOfWorkFactory | None = None
    """A unit-of-work factory to use instead of PostgreSQL (unit tests)."""

    @property
    def source(self) -> str:
        return f"/ikd/gateway/{self.ctx.agency.code}"

    def topic(self, spec: topics.TopicSpec) -> str:
        return spec.full_name(self.settings.kafka_topic_prefix)

    async def start(self, *, pool_size: int = 10, keep_sessions: bool = False) -> None:
        """Open the pool, producer and relay. `keep_sessions`: release pool connections without
        asyncpg's reset query (a round trip per use) for code that leaves no session state
        behind (no SET, LISTEN or session-level advisory lock): the API."""
        extra: dict[str, Any] = {"reset": _keep_session} if keep_sessions else {}
        self.pool = await create_pool(str(self.settings.database_url), max_size=pool_size, **extra)
        self.producer = KafkaConnection.from_settings(self.settings).producer()
        await self.producer.start()
        self.relay = AccessRelay(
            self.pool,
            self.producer,
            topic=self.topic(topics.ACCESS),
            source=self.source,
            interval=self.settings.relay_interval_seconds,
        )

    async def stop(self) -> None:
        if self.sender is not None:
            await self.sender.close()
        if self.producer is not None:
            await self.producer.stop()
        if self.pool is not None:
            await self.pool.close()

    def uow_factory(self) -> UnitOfWorkFactory:
        if self.uow_override is not None:
            return self.uow_override
        pool = self.pool
        assert pool is not None, "start() first"

        def make() -> UnitOfWork:
            return PgUnitOfWork(pool)

        return make

    async def check_target(self, url: str) -> str:
        return await webhook_adapters.check_target(
            url, allow_private=self.settings.private_targets_allowed
        )

    async def send_webhook_dead_letter(self, record: dict[str, Any]) -> None:
        assert self.producer is not None
        writer = DeadLetterWriter(
            self.producer,
            self.topic(topics.WEBHOOK_DEAD_LETTER),
            service=f"{SERVICE}:{self.ctx.agency.code}",
        )
        event = CloudEvent(
            type=WEBHOOK_DEAD_LETTER_TYPE,
            source=self.source,
            data=codec.dumps(record),
            key=str(record["pseudonym"]),
        )
        await writer.event(event, str(record["reason"]))

    def dispatcher(self) -> Dispatcher:
        self.sender = webhook_adapters.HttpSender(self.settings.webhook_timeout_seconds)
        return Dispatcher(
            uow_factory=self.uow_factory(),
            ctx=self.ctx,
            sender=self.sender,
            signer=webhook_adapters.sign,
            check=self.check_target,
            dead_letter=self.send_webhook_dead_letter,
            retry=RetryPolicy(
                max_attempts=self.settings.webhook_max_attempts,
                base_seconds=self.settings.webhook_backoff_base_seconds,
                max_seconds=self.settings.webhook_backoff_max_seconds,
            ),
            disable_after=dt.timedelta(seconds=self.settings.webhook_disable_after_seconds),
        )


async def _keep_session(_: Any) -> None:
    """Pool release without the reset query; asyncpg still rolls back an open transaction."""


def bootstrap(settings: GatewaySettings) -> Gateway:
    _, ctx, verifier = check_or_exit(settings)
    return Gateway(settings=settings, ctx=ctx, verifier=verifier)
