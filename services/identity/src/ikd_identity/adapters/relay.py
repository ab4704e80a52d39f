"""The outbox relay: profile and consent events published to Kafka in outbox order.

The ordered strategy of ikd_shared.outbox (one active relay per outbox under an advisory lock,
standbys take over; woken in-process, by LISTEN/NOTIFY and by a fallback poll) over identity's
outbox table, publishing with the idempotent producer (acks=all) and marking a batch sent only
after every record of it was acknowledged. Order matters here: a citizen's profile versions
must reach the agencies in the order they were written.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable, Sequence

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from ikd_identity.adapters.postgres import OutboxRow, OutboxStore
from ikd_identity.metrics import OUTBOX_PUBLISHED, RELAY_ACTIVE
from ikd_shared.events.envelope import CloudEvent
from ikd_shared.kafka import send_events
from ikd_shared.outbox import OrderedRelay, Publish, RelayHooks

# What the relay waits out and retries; anything else is a bug and propagates.
OUTAGES = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, KafkaError)

OutboxRelay = OrderedRelay[OutboxRow]
ProducerFactory = Callable[[], AIOKafkaProducer]
__all__ = [
    "OUTAGES",
    "OutboxRelay",
    "ProducerFactory",
    "RelayHooks",
    "kafka_publisher",
    "outbox_relay",
]


def to_cloudevent(row: OutboxRow) -> CloudEvent:
    return CloudEvent(
        id=str(row.event_id),
        type=row.ce_type,
        source=row.ce_source,
        key=row.key,
        data=row.payload,
        time=row.created_at,
        dataschema=row.dataschema,
        extensions=row.extensions(),
    )


def kafka_publisher(
    producer_factory: ProducerFactory, topic_prefix: str
) -> Callable[[], contextlib.AbstractAsyncContextManager[Publish[OutboxRow]]]:
    """A started producer per relay session; a batch returns once every record is acked."""

    @contextlib.asynccontextmanager
    async def open_publisher() -> AsyncIterator[Publish[OutboxRow]]:
        producer = producer_factory()
        await producer.start()

        async def publish(rows: Sequence[OutboxRow]) -> None:
            await send_events(
                producer, ((f"{topic_prefix}{row.topic}", to_cloudevent(row)) for row in rows)
            )

        try:
            yield publish
        finally:
            await producer.stop()

    return open_publisher


def outbox_relay(
    dsn: str,
    producer_factory: ProducerFactory,
    *,
    topic_prefix: str = "",
    batch_size: int = 1000,
    poll_interval: float = 1.0,
    standby_interval: float = 1.0,
    retry_interval: float = 1.0,
    hooks: RelayHooks[OutboxRow] | None = None,
    name: str = "relay",
) -> OutboxRelay:
    async def connect() -> OutboxStore:
        return await OutboxStore.connect(dsn)

    return OrderedRelay(
        connect,
        kafka_publisher(producer_factory, topic_prefix),
        outages=OUTAGES,
        batch_size=batch_size,
        poll_interval=poll_interval,
        standby_interval=standby_interval,
        retry_interval=retry_interval,
        hooks=hooks,
        on_active=lambda active: RELAY_ACTIVE.set(int(active)),
        on_published=OUTBOX_PUBLISHED.inc,
        name=name,
    )
