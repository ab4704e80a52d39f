"""The stream worker: a faust-streaming app in the agency's own consumer group.

Two agents consume the profile and consent topics in batches (up to `stream_batch_size` records
or `stream_batch_seconds`), each batch applied in one transaction (`at_least_once`: a batch's
offsets are committed only after its transaction committed). Handlers are idempotent and
version-guarded, so the records a crash makes Kafka redeliver change nothing. A record that is
not a valid event goes to the gateway dead-letter topic with the reason and the rest of its batch
goes on; a database or broker outage is retried until it passes, never skipped.

Beside the agents the worker runs the access-event relay, the webhook dispatcher and the
retention sweep.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any, TypeVar

import asyncpg
import faust
import prometheus_client
from aiokafka import AIOKafkaConsumer, TopicPartition

from ikd_gateway.bootstrap import SERVICE, Gateway
from ikd_gateway.domain.model import SourcePosition
from ikd_gateway.service_layer import handlers
from ikd_gateway.service_layer.context import GatewayContext
from ikd_gateway.service_layer.unit_of_work import UnitOfWork
from ikd_shared import logs, tracing
from ikd_shared.consumer import DeadLetterWriter, Poison, SourceRecord, consume_batch
from ikd_shared.events import decode, topics
from ikd_shared.events.consent_v1 import EVENTS as CONSENT_EVENTS
from ikd_shared.events.envelope import EnvelopeError, from_kafka
from ikd_shared.events.profile_v1 import EVENTS as PROFILE_EVENTS
from ikd_shared.events.profile_v1 import TOMBSTONE_TYPE, ProfileUpdated, ProfileVerified
from ikd_shared.kafka import KafkaConnection
from ikd_shared.pseudonym import is_pseudonym
from ikd_shared.supervise import retry

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R", handlers.ProfileRecord, handlers.ConsentRecord)
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
) -> handlers.ProfileRecord:
    try:
        event = from_kafka(key, value, headers)
    except EnvelopeError as error:
        raise Poison(f"envelope: {error}") from None
    if event.key is None or not is_pseudonym(event.key):
        raise Poison("record key is not a citizen pseudonym")
    if event.is_tombstone:
        if event.type != TOMBSTONE_TYPE:
            raise Poison(f"a record without value has type {event.type!r}")
        return handlers.ProfileRecord(event.id, event.key, None, source)
    try:
        payload = decode(event, PROFILE_EVENTS)
    except EnvelopeError as error:
        raise Poison(f"{type(error).__name__}: {error}") from None
    if payload.pseudonym != event.key:
        raise Poison("the event's pseudonym differs from the record key")
    return handlers.ProfileRecord(event.id, event.key, payload, source)


def read_consent_record(
    key: bytes | None, value: bytes | None, headers: Headers
) -> handlers.ConsentRecord:
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
    return handlers.ConsentRecord(event.id, event.key, payload)


class StreamProcessor:
    """What the agents do with each record; independent of faust so it can be reused."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self._started = asyncio.Lock()
        self._ready = False
        self._refetch_consumer: AIOKafkaConsumer | None = None
        self._refetch_lock = asyncio.Lock()
        self.dead_lettered = 0

    async def ready(self) -> None:
        if self._ready:
            return
        async with self._started:
            if not self._ready:
                await self.gateway.start()
                self._ready = True

    async def retry_transient(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        return await retry(call, what=what, retry_on=TRANSIENT, logger=log)

    def dead_letters(self) -> DeadLetterWriter:
        producer = self.gateway.producer
        assert producer is not None
        return DeadLetterWriter(
            producer,
            self.gateway.topic(topics.GATEWAY_DEAD_LETTER),
            service=f"{SERVICE}:{self.gateway.ctx.agency.code}",
        )

    async def dead_letter(self, source: SourceRecord, reason: str) -> None:
        await self.dead_letters().record(source, reason)
        self.dead_lettered += 1
        log.warning(
            "dead-lettered %s[%d]@%d: %s", source.topic, source.partition, source.offset, reason
        )

    async def on_profiles(self, messages: Sequence[RawRecord]) -> None:
        """Apply a batch of profile records in one transaction (poison records go aside)."""

        def read(source: SourceRecord) -> handlers.ProfileRecord:
            position = SourcePosition(source.partition, source.offset)
            record = read_profile_record(source.key, source.value, source.headers, position)
            incoming = tracing.from_kafka_headers(source.headers)
            return replace(record, trace=incoming.child() if incoming else None)

        await self._process_batch("profile", messages, read, handlers.apply_profiles)

    async def on_consents(self, messages: Sequence[RawRecord]) -> None:
        """Apply a batch of consent records in one transaction, then re-project where a
        consent granted fields the row lacks."""
        applied = await self._process_batch(
            "consent",
            messages,
            lambda s: read_consent_record(s.key, s.value, s.headers),
            handlers.apply_consent_batch,
        )
        for record, result in applied:
            if result.refetch is not None:
                await self.refetch(record.pseudonym, result.refetch)

    async def _process_batch(
        self,
        kind: str,
        messages: Sequence[RawRecord],
        read: Callable[[SourceRecord], R],
        apply: Callable[
            [UnitOfWork, GatewayContext, Sequence[R]], Awaitable[list[handlers.StreamResult]]
        ],
    ) -> list[tuple[R, handlers.StreamResult]]:
        """Every record of the batch applied or dead-lettered (see `consume_batch`): only then
        may the agent ask for the next batch, which acknowledges this one."""
        await self.ready()
        uow_factory = self.gateway.uow_factory()
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
            record.event, ProfileVerified | ProfileUpdated
        ):
            return
        uow_factory = self.gateway.uow_factory()
        await self.retry_transient(
            "profile re-projection",
            lambda: handlers.apply_profile(uow_factory(), self.gateway.ctx, record, reapply=True),
        )

    def _wake_relay(self) -> None:
        if self.gateway.relay is not None:
            self.gateway.relay.wake()

    async def close(self) -> None:
        if self._refetch_consumer is not None:
            await self._refetch_consumer.stop()
        await self.gateway.stop()


def create_worker_app(gateway: Gateway) -> tuple[faust.App, StreamProcessor]:
    settings = gateway.settings
    processor = StreamProcessor(gateway)
    web_port = settings.worker_web_port
    app = faust.App(
        settings.consumer_group,
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
    profile_topic = app.topic(
        gateway.topic(topics.PROFILE), key_serializer="raw", value_serializer="raw"
    )
    consent_topic = app.topic(
        gateway.topic(topics.CONSENT), key_serializer="raw", value_serializer="raw"
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

    # Batches: `take_events` acks a batch's events (so their offsets may be committed) only
    # when the agent body asks for the next batch, i.e. after the batch's transaction committed.
    batch_size, batch_seconds = settings.stream_batch_size, settings.stream_batch_seconds

    @app.agent(profile_topic, name="profiles")
    async def profiles(stream: Any) -> None:
        async for events in stream.take_events(batch_size, within=batch_seconds):
            await processor.on_profiles([unpack(event) for event in events])

    @app.agent(consent_topic, name="consents")
    async def consents(stream: Any) -> None:
        async for events in stream.take_events(batch_size, within=batch_seconds):
            await processor.on_consents([unpack(event) for event in events])

    @app.task  # type: ignore[untyped-decorator]
    async def relay() -> None:
        await processor.ready()
        assert gateway.relay is not None
        await gateway.relay.run()

    @app.task  # type: ignore[untyped-decorator]
    async def webhooks() -> None:
        await processor.ready()
        dispatcher = gateway.dispatcher()
        while True:
            try:
                attempted = await dispatcher.run_once()
            except Exception:
                log.exception("webhook dispatch failed")
                attempted = 0
            if attempted:
                processor._wake_relay()
            else:
                await asyncio.sleep(settings.webhook_poll_seconds)

    @app.task  # type: ignore[untyped-decorator]
    async def retention() -> None:
        await processor.ready()
        while True:
            try:
                uow_factory = gateway.uow_factory()
                purged = await handlers.sweep_retention(uow_factory(), gateway.ctx)
                if purged:
                    log.info("retention sweep purged fields of %d citizens", purged)
                    continue
            except Exception:
                log.exception("retention sweep failed")
            await asyncio.sleep(settings.retention_check_seconds)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def close(app: faust.App, **_: Any) -> None:
        await processor.close()

    return app, processor


def run_worker(gateway: Gateway, *, loglevel: str = "INFO") -> None:
    """Run the faust worker until SIGTERM/SIGINT (faust owns the event loop)."""
    app, _ = create_worker_app(gateway)
    settings = gateway.settings
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
