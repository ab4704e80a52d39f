"""The composition root: settings -> a started, immutable gateway runtime. Real adapters by
default; overrides replace them (unit tests run the API on fakes this way)."""

from __future__ import annotations

import contextlib
import datetime as dt
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from ikd_gateway.adapters import webhooks as webhook_adapters
from ikd_gateway.adapters.identity import IdentityClient
from ikd_gateway.adapters.postgres import PgReadOnlyWork, PgUnitOfWork
from ikd_gateway.adapters.relay import AccessRelay, AgencyRow, agency_relay
from ikd_gateway.adapters.throttle import PgDenialCounters
from ikd_gateway.config import GatewaySettings
from ikd_gateway.domain.throttle import ThrottleRules
from ikd_gateway.service_layer.context import GatewayContext, UnitOfWorkFactory, utcnow
from ikd_gateway.service_layer.registrations import Registrar
from ikd_gateway.service_layer.throttle import ClientThrottle, DenialCounters
from ikd_gateway.service_layer.unit_of_work import UnitOfWork
from ikd_gateway.service_layer.webhooks import Dispatcher, RetryPolicy, Sender
from ikd_shared import codec, telemetry
from ikd_shared.auth import TokenVerifier, load_jwks
from ikd_shared.consumer import DeadLetterWriter
from ikd_shared.db import create_pool
from ikd_shared.events import topics
from ikd_shared.events.envelope import CloudEvent
from ikd_shared.jwks import token_keys
from ikd_shared.kafka import KafkaConnection
from ikd_shared.outbox import OrderedRelay
from ikd_shared.policy import MppPolicy, PolicyError, load_policy

SERVICE = "ikd-agency-gateway"
WEBHOOK_DEAD_LETTER_TYPE = "id.go.mpp.gateway.webhook.dead_lettered.v1"


@dataclass(frozen=True)
class Config:
    """What a gateway process knows before it opens anything: settings, policy, token keys."""

    settings: GatewaySettings
    policy: MppPolicy
    ctx: GatewayContext
    verifier: TokenVerifier

    @property
    def source(self) -> str:
        return f"/ikd/gateway/{self.ctx.agency.code}"

    def topic(self, spec: topics.TopicSpec) -> str:
        return spec.full_name(self.settings.kafka_topic_prefix)


def load_agency_policy(settings: GatewaySettings) -> tuple[MppPolicy, GatewayContext]:
    """The MPP policy and this deployment's context; PolicyError names what is wrong."""
    policy = load_policy(settings.policy_file)
    agency = policy.agency(settings.agency)
    ctx = GatewayContext(
        agency=agency,
        pseudonym_key=settings.pseudonym_key.get_secret_value().encode(),
        consumer=settings.consumer_group,
        clock=utcnow,
        version_floor=dt.timedelta(seconds=settings.version_floor_seconds),
    )
    return policy, ctx


def check_or_exit(settings: GatewaySettings) -> Config:
    """Everything static a process needs, or exit with one line naming the problem."""
    try:
        policy, ctx = load_agency_policy(settings)
    except PolicyError as error:
        print(f"ikd_gateway: invalid policy: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    try:
        static = load_jwks(settings.token_jwks) if settings.token_jwks is not None else None
        verifier = TokenVerifier(
            token_keys(settings, static),
            issuer=settings.token_issuer,
            audience=settings.token_audience,
        )
    except (OSError, ValueError) as error:
        print(f"ikd_gateway: setting IKD_GATEWAY_TOKEN_JWKS is invalid: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    return Config(settings=settings, policy=policy, ctx=ctx, verifier=verifier)


@dataclass(frozen=True)
class Gateway:
    """The started resources of one gateway process; valid inside `bootstrap`'s block only."""

    config: Config
    uow: UnitOfWorkFactory
    producer: AIOKafkaProducer
    relay: AccessRelay
    dispatcher: Dispatcher
    throttle: ClientThrottle
    agency_relay: OrderedRelay[AgencyRow] | None = None
    """Publishes the agency topic (the worker runs it); None on injected units of work."""
    registrar: Registrar | None = None
    """identity's registration API; None where registrations are not configured."""
    reads: UnitOfWorkFactory | None = None
    """Units of work for reads only, without a transaction (prefill); None: `uow`."""

    @property
    def settings(self) -> GatewaySettings:
        return self.config.settings

    @property
    def ctx(self) -> GatewayContext:
        return self.config.ctx

    @property
    def verifier(self) -> TokenVerifier:
        return self.config.verifier

    def topic(self, spec: topics.TopicSpec) -> str:
        return self.config.topic(spec)

    def dead_letters(self, spec: topics.TopicSpec) -> DeadLetterWriter:
        return DeadLetterWriter(
            self.producer, self.topic(spec), service=f"{SERVICE}:{self.ctx.agency.code}"
        )

    async def database_reachable(self) -> None:
        """A unit of work opens (and commits) or this raises."""
        async with self.uow():
            pass

    async def check_target(self, url: str) -> str:
        return await _check_target(self.config, url)


@contextlib.asynccontextmanager
async def bootstrap(
    settings: GatewaySettings,
    *,
    config: Config | None = None,
    pool_size: int | None = None,
    keep_sessions: bool = False,
    uow: UnitOfWorkFactory | None = None,
    producer: AIOKafkaProducer | None = None,
    relay: AccessRelay | None = None,
    sender: Sender | None = None,
    registrar: Registrar | None = None,
    denial_counters: DenialCounters | None = None,
) -> AsyncIterator[Gateway]:
    """Open the pool, producer and HTTP sender, yield the started runtime, close all on exit.

    `keep_sessions`: release pool connections without asyncpg's reset query (a round trip per
    use) for code that leaves no session state behind (no SET, LISTEN or session-level
    advisory lock): the API. `uow`, `producer`, `relay`, `sender`, `denial_counters`,
    `registrar` replace the real adapters; no pool is opened when neither the unit of work nor
    the relay needs one (then `denial_counters` must be given).
    """
    config = config or check_or_exit(settings)
    telemetry.setup(f"ikd-gateway-{settings.agency}")
    agency_publisher = None
    reads = None
    async with contextlib.AsyncExitStack() as stack:
        if producer is None:
            producer = KafkaConnection.from_settings(settings).producer()
            await producer.start()
            stack.push_async_callback(producer.stop)
        if uow is None:
            agency_publisher = agency_relay(
                str(settings.database_url),
                producer,
                KafkaConnection.from_settings(settings),
                topic=topics.agency_topic(config.ctx.agency.code),
                prefix=settings.kafka_topic_prefix,
                source=config.source,
                poll_interval=settings.relay_interval_seconds,
            )
        if uow is None or relay is None:
            extra: dict[str, Any] = {"reset": _keep_session} if keep_sessions else {}
            pool = await create_pool(
                str(settings.database_url), max_size=pool_size or settings.db_pool_max, **extra
            )
            stack.push_async_callback(pool.close)
            if uow is None:
                reads = _pg_reads(pool)
            uow = uow or _pg_unit_of_work(pool)
            denial_counters = denial_counters or PgDenialCounters(pool)
            relay = relay or AccessRelay(
                pool,
                producer,
                topic=config.topic(topics.ACCESS),
                source=config.source,
                interval=settings.relay_interval_seconds,
            )
        if registrar is None and settings.identity_url is not None:
            assert settings.identity_client_secret is not None  # the settings insist
            identity = IdentityClient(
                str(settings.identity_url),
                settings.identity_client,
                settings.identity_client_secret.get_secret_value(),
                timeout=settings.identity_timeout_seconds,
            )
            stack.push_async_callback(identity.close)
            registrar = identity
        if sender is None:
            http = webhook_adapters.HttpSender(
                settings.webhook_timeout_seconds, allow_private=settings.private_targets_allowed
            )
            stack.push_async_callback(http.close)
            sender = http
        webhook_dead_letters = DeadLetterWriter(
            producer,
            config.topic(topics.WEBHOOK_DEAD_LETTER),
            service=f"{SERVICE}:{config.ctx.agency.code}",
        )

        async def dead_letter(record: dict[str, Any]) -> None:
            event = CloudEvent(
                type=WEBHOOK_DEAD_LETTER_TYPE,
                source=config.source,
                data=codec.dumps(record),
                key=str(record["pseudonym"]),
            )
            await webhook_dead_letters.event(event, str(record["reason"]))

        dispatcher = Dispatcher(
            uow_factory=uow,
            ctx=config.ctx,
            sender=sender,
            signer=webhook_adapters.sign,
            # No lookup here: the sender resolves, vets and connects in one step.
            check=lambda url: _check_target(config, url, resolve=False),
            dead_letter=dead_letter,
            retry=RetryPolicy(
                max_attempts=settings.webhook_max_attempts,
                base_seconds=settings.webhook_backoff_base_seconds,
                max_seconds=settings.webhook_backoff_max_seconds,
            ),
            disable_after=dt.timedelta(seconds=settings.webhook_disable_after_seconds),
        )
        if denial_counters is None:
            raise TypeError("bootstrap on injected adapters needs denial_counters too")
        throttle = ClientThrottle(
            denial_counters,
            ThrottleRules(
                limit=settings.denial_limit,
                window=dt.timedelta(seconds=settings.denial_window_seconds),
                block=dt.timedelta(seconds=settings.denial_block_seconds),
            ),
            config.ctx.clock,
            recheck=dt.timedelta(seconds=settings.denial_recheck_seconds),
        )
        yield Gateway(
            config=config,
            uow=uow,
            producer=producer,
            relay=relay,
            dispatcher=dispatcher,
            throttle=throttle,
            agency_relay=agency_publisher,
            registrar=registrar,
            reads=reads,
        )


def _pg_unit_of_work(pool: asyncpg.Pool) -> Callable[[], UnitOfWork]:
    def make() -> UnitOfWork:
        return PgUnitOfWork(pool)

    return make


def _pg_reads(pool: asyncpg.Pool) -> Callable[[], UnitOfWork]:
    return lambda: PgReadOnlyWork(pool)


async def _keep_session(_: Any) -> None:
    """Pool release without the reset query; asyncpg still rolls back an open transaction."""


async def _check_target(config: Config, url: str, *, resolve: bool = True) -> str:
    return await webhook_adapters.check_target(
        url,
        allow_private=config.settings.private_targets_allowed,
        allowed=config.ctx.agency.webhook_host_allowed,
        resolve=resolve,
    )
