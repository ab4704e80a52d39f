"""The stream worker: a faust-streaming app in the agency's own consumer group.

Two agents consume the profile and consent topics in batches (up to `stream_batch_size` records
or `stream_batch_seconds`), each batch applied in one transaction (`at_least_once`: a batch's
offsets are committed only after its transaction committed). Handlers are idempotent and
version-guarded, so the records a crash makes Kafka redeliver change nothing. A record that is
not a valid event goes to the gateway dead-letter topic with the reason and the rest of its batch
goes on; a database or broker outage is retried until it passes, never skipped.

Beside the agents the worker runs the access-event relay, the agency-topic relay, the webhook
dispatcher and the retention sweep, all on one runtime (`bootstrap`) opened when the faust app
first starts and closed after its agents stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import asyncpg
import faust
import prometheus_client
from aiokafka import AIOKafkaConsumer, TopicPartition

from ikd_gateway.bootstrap import Gateway, bootstrap, check_or_exit
from ikd_gateway.config import GatewaySettings
from ikd_gateway.domain.model import SourcePosition
from ikd_gateway.service_layer.context import GatewayContext
from ikd_gateway.service_layer.stream import (
    ConsentRecord,
    ProfileRecord,
    StreamResult,
    apply_consent_batch,
    apply_profile,
    apply_profiles,
    sweep_retention,
)
from ikd_gateway.service_layer.unit_of_work import UnitOfWork
from ikd_shared import logs, telemetry
from ikd_shared.consumer import DeadLetterWriter, Poison, SourceRecord, consume_batch
from ikd_shared.events import decode, topics
from ikd_shared.events.consent_v1 import EVENTS as CONSENT_EVENTS
from ikd_shared.events.envelope import EnvelopeError, from_kafka
from ikd_shared.events.profile_v1 import EVENTS as PROFILE_EVENTS
from ikd_shared.events.profile_v1 import (
    TOMBSTONE_TYPE,
    ProfileUpdated,
    ProfileVerified,
    RelationshipsChanged,
)
from ikd_shared.kafka import KafkaConnection
from ikd_shared.pseudonym import is_pseudonym
from ikd_shared.supervise import retry

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R", ProfileRecord, ConsentRecord)
Headers = Sequence[tuple[str, bytes | None]]
RawRecord = tuple[str, int, int, bytes | None, bytes | None, Headers]
"""A consumed record as (topic, partition, offset, key, value, headers)."""

TRANSIENT = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    OSError,
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
)


def read_profile_record(
    key: bytes | None,
    value: bytes | None,
    headers: Headers,
    source: SourcePosition | None,
) -> ProfileRecord:
    try:
        event = from_kafka(key, value, headers)
    except EnvelopeError as error:
        raise Poison(f"envelope: {error}") from None
    if event.key is None or not is_pseudonym(event.key):
        raise Poison("record key is not a citizen pseudonym")
    if event.is_tombstone:
        if event.type != TOMBSTONE_TYPE:
            raise Poison(f"a record without value has type {event.type!r}")
        return ProfileRecord(event.id, event.key, None, source)
    try:
        payload = decode(event, PROFILE_EVENTS)
    except EnvelopeError as error:
        raise Poison(f"{type(error).__name__}: {error}") from None
    if payload.pseudonym != event.key:
        raise Poison("the event's pseudonym differs from the record key")
    return ProfileRecord(event.id, event.key, payload, source)


def read_consent_record(key: bytes | None, value: bytes | None, headers: Headers) -> ConsentRecord:
    try:
        event = from_kafka(key, value, headers)
        if event.key is None or not is_pseudonym(event.key):
            raise Poison("record key is not a citizen pseudonym")
        if event.is_tombstone:
            raise Poison("a consent record without value")
        payload = decode(event, CONSENT_EVENTS)
    except EnvelopeError as error:
        raise Poison(f"{type(error).__name__}: {error}") from None
    if payload.pseudonym != event.key:
        raise Poison("the event's pseudonym differs from the record key")
    return ConsentRecord(event.id, event.key, payload)


class StreamProcessor:
    """What the agents do with each record, on a started runtime; independent of faust."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.dead_letters: DeadLetterWriter = gateway.dead_letters(topics.GATEWAY_DEAD_LETTER)
        self._refetch_consumer: AIOKafkaConsumer | None = None
        self._refetch_lock = asyncio.Lock()
        self.dead_lettered = 0

    async def retry_transient(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        return await retry(call, what=what, retry_on=TRANSIENT, logger=log)

    async def dead_letter(self, source: SourceRecord, reason: str) -> None:
        await self.dead_letters.record(source, reason)
        self.dead_lettered += 1
        log.warning(
            "dead-lettered %s[%d]@%d: %s", source.topic, source.partition, source.offset, reason
        )

    async def on_profiles(self, messages: Sequence[RawRecord]) -> None:
        """Apply a batch of profile records in one transaction (poison records go aside)."""

        def read(source: SourceRecord) -> ProfileRecord:
            position = SourcePosition(source.partition, source.offset)
            record = read_profile_record(source.key, source.value, source.headers, position)
            trace = telemetry.kafka_received(
                source.topic, source.partition, source.offset, source.headers
            )
            return replace(record, trace=trace)

        await self._process_batch("profile", messages, read, apply_profiles)

    async def on_consents(self, messages: Sequence[RawRecord]) -> None:
        """Apply a batch of consent records in one transaction, then re-project where a
        consent granted fields the row lacks."""
        applied = await self._process_batch(
            "consent",
            messages,
            lambda s: read_consent_record(s.key, s.value, s.headers),
            apply_consent_batch,
        )
        for record, result in applied:
            if result.refetch is not None:
                await self.refetch(record.pseudonym, result.refetch)

    async def _process_batch(
        self,
        kind: str,
        messages: Sequence[RawRecord],
        read: Callable[[SourceRecord], R],
        apply: Callable[[UnitOfWork, GatewayContext, Sequence[R]], Awaitable[list[StreamResult]]],
    ) -> list[tuple[R, StreamResult]]:
        """Every record of the batch applied or dead-lettered (see `consume_batch`): only then
        may the agent ask for the next batch, which acknowledges this one."""
        uow_factory = self.gateway.uow
        ctx = self.gateway.ctx
        applied = await consume_batch(
            [SourceRecord(*message) for message in messages],
            decode=read,
            apply=lambda records: apply(uow_factory(), ctx, records),
            dead_letter=self.dead_letter,
            transient=TRANSIENT,
            what=f"{kind} batch",
        )
        if log.isEnabledFor(logging.DEBUG):
            for record, result in applied:
                log.debug("%s record: %s", kind, result.reason, extra={"event_id": record.event_id})
        self._wake_relay()
        return applied

    async def refetch(self, pseudonym: str, source: SourcePosition) -> None:
        """Re-read the stored profile version from the topic and re-project it.

        A consent just granted fields the row does not hold (the view never keeps what it may
        not): Kafka still has the record, at the position stored in the row.
        """
        topic = self.gateway.topic(topics.PROFILE)
        partition = TopicPartition(topic, source.partition)
        async with self._refetch_lock:
            if self._refetch_consumer is None:
                kafka = KafkaConnection.from_settings(self.gateway.settings)
                self._refetch_consumer = kafka.consumer(group=None)
                await self._refetch_consumer.start()
            consumer = self._refetch_consumer
            consumer.assign([partition])
            consumer.seek(partition, source.offset)
            batch = await consumer.getmany(partition, timeout_ms=5000, max_records=1)
        messages = batch.get(partition, [])
        if not messages or messages[0].offset != source.offset:
            log.info(
                "profile record %s@%d is gone (compacted); a newer one will follow",
                topic,
                source.offset,
            )
            return
        message = messages[0]
        try:
            record = read_profile_record(message.key, message.value, message.headers, source)
        except Poison:
            return
        if record.pseudonym != pseudonym or not isinstance(
            record.event, ProfileVerified | ProfileUpdated | RelationshipsChanged
        ):
            return
        await self.retry_transient(
            "profile re-projection",
            lambda: apply_profile(self.gateway.uow(), self.gateway.ctx, record, reapply=True),
        )

    def _wake_relay(self) -> None:
        self.gateway.relay.wake()
        if self.gateway.agency_relay is not None:
            self.gateway.agency_relay.wake()

    async def close(self) -> None:
        if self._refetch_consumer is not None:
            await self._refetch_consumer.stop()


async def apply_batches(
    stream: Any,
    handle: Callable[[Sequence[Any]], Awaitable[object]],
    *,
    size: int,
    within: float,
) -> None:
    """Hand the stream's events to `handle` in batches; ack a batch only once it returned.

    Not `take_events`: it acks a batch in a `finally`, so an agent cancelled mid-batch
    (shutdown, rebalance) would have the batch's offsets committed although its records were
    never applied. `noack_take` leaves acking to us: a cancelled batch stays unacked and is
    consumed again after the restart (the handlers are idempotent).
    """
    async for events in stream.noack_take(size, within=within):
        await handle(events)
        for event in events:
            await stream.ack(event)


class WorkerApp(faust.App):
    """A faust app that opens the gateway runtime before its agents start and closes it after
    they stopped: once per worker process."""

    processor: StreamProcessor
    """Set on first start, before any agent or task runs."""

    def __init__(
        self,
        *args: Any,
        open_runtime: Callable[[], contextlib.AbstractAsyncContextManager[Gateway]],
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._open_runtime = open_runtime
        self._resources = contextlib.AsyncExitStack()

    async def on_first_start(self) -> None:
        await super().on_first_start()
        gateway = await self._resources.enter_async_context(self._open_runtime())
        self.processor = StreamProcessor(gateway)
        self._resources.push_async_callback(self.processor.close)

    async def on_shutdown(self) -> None:
        await super().on_shutdown()
        await self._resources.aclose()


def create_worker_app(
    settings: GatewaySettings,
    *,
    open_runtime: Callable[[], contextlib.AbstractAsyncContextManager[Gateway]] | None = None,
) -> WorkerApp:
    """The faust app of one agency's worker; `open_runtime` defaults to `bootstrap(settings)`."""
    web_port = settings.worker_web_port
    app = WorkerApp(
        settings.consumer_group,
        open_runtime=open_runtime or (lambda: bootstrap(settings)),
        **KafkaConnection.from_settings(settings).faust_broker_kwargs(),
        processing_guarantee="at_least_once",
        store="memory://",
        datadir=str(settings.resolved_data_dir()),
        consumer_auto_offset_reset="earliest",
        topic_disable_leader=True,
        topic_allow_declare=False,
        broker_commit_interval=1.0,
        broker_session_timeout=settings.session_timeout_seconds,
        broker_heartbeat_interval=max(1.0, settings.session_timeout_seconds / 5),
        web_enabled=web_port is not None,
        web_port=web_port or 6066,
        web_host="127.0.0.1",
        key_serializer="raw",
        value_serializer="raw",
    )
    prefix = settings.kafka_topic_prefix
    profile_topic = app.topic(
        topics.PROFILE.full_name(prefix), key_serializer="raw", value_serializer="raw"
    )
    consent_topic = app.topic(
        topics.CONSENT.full_name(prefix), key_serializer="raw", value_serializer="raw"
    )

    def unpack(event: Any) -> RawRecord:
        message = event.message
        headers = message.headers or []
        if isinstance(headers, dict):
            headers = list(headers.items())
        return (
            message.topic,
            message.partition,
            message.offset,
            message.key,
            message.value,
            list(headers),
        )

    batch_size, batch_seconds = settings.stream_batch_size, settings.stream_batch_seconds

    @app.agent(profile_topic, name="profiles")
    async def profiles(stream: Any) -> None:
        async def handle(events: Sequence[Any]) -> None:
            await app.processor.on_profiles([unpack(event) for event in events])

        await apply_batches(stream, handle, size=batch_size, within=batch_seconds)

    @app.agent(consent_topic, name="consents")
    async def consents(stream: Any) -> None:
        async def handle(events: Sequence[Any]) -> None:
            await app.processor.on_consents([unpack(event) for event in events])

        await apply_batches(stream, handle, size=batch_size, within=batch_seconds)

    @app.task  # type: ignore[untyped-decorator]
    async def relay() -> None:
        await app.processor.gateway.relay.run()

    @app.task  # type: ignore[untyped-decorator]
    async def agency_topic() -> None:
        publisher = app.processor.gateway.agency_relay
        if publisher is not None:
            await publisher.supervise(asyncio.Event())  # until the worker cancels it

    @app.task  # type: ignore[untyped-decorator]
    async def webhooks() -> None:
        dispatcher = app.processor.gateway.dispatcher
        while True:
            try:
                attempted = await dispatcher.run_once()
            except Exception:
                log.exception("webhook dispatch failed")
                attempted = 0
            if attempted:
                app.processor._wake_relay()
            else:
                await asyncio.sleep(settings.webhook_poll_seconds)

    @app.task  # type: ignore[untyped-decorator]
    async def retention() -> None:
        gateway = app.processor.gateway
        while True:
            try:
                purged = await sweep_retention(gateway.uow(), gateway.ctx)
                if purged:
                    app.processor._wake_relay()
                    log.info("retention sweep purged fields of %d citizens", purged)
                    continue
            except Exception:
                log.exception("retention sweep failed")
            await asyncio.sleep(settings.retention_check_seconds)

    return app


def run_worker(settings: GatewaySettings, *, loglevel: str = "INFO") -> None:
    """Run the faust worker until SIGTERM/SIGINT (faust owns the event loop)."""
    config = check_or_exit(settings)  # before faust starts: a bad policy exits with one line
    app = create_worker_app(settings, open_runtime=lambda: bootstrap(settings, config=config))
    settings.resolved_data_dir().mkdir(parents=True, exist_ok=True)
    if settings.worker_metrics_port is not None:
        # The worker's own counters (webhook retries, dead letters); the API serves the rest.
        prometheus_client.start_http_server(settings.worker_metrics_port, addr=settings.host)
    worker = faust.Worker(
        app,
        loglevel=loglevel,
        quiet=True,
        logging_config=logs.logging_config(loglevel),
    )
    worker.execute_from_commandline()
