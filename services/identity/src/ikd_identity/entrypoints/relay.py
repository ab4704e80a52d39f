"""The outbox relay: publishes outbox rows to Kafka in position order, then marks them sent.

At most one relay is active per outbox (a session-level advisory lock on a dedicated
connection); others wait as standbys and take over when the active one's connection ends.
The active relay wakes when the process it runs in committed outbox rows (`wake`), on
LISTEN/NOTIFY from other processes, and polls as a fallback; publishes a batch with the
idempotent producer (acks=all), waits for every acknowledgement, then marks the batch sent.
A crash between the acknowledgement and the mark republishes the batch with the same event
ids (at least once; consumers drop duplicates by id).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from ikd_identity.adapters.postgres import NOTIFY_CHANNEL, OutboxRow, OutboxStore
from ikd_identity.metrics import OUTBOX_PUBLISHED, RELAY_ACTIVE
from ikd_shared.events.envelope import CloudEvent
from ikd_shared.kafka import send_events

log = logging.getLogger(__name__)

Hook = Callable[[Sequence[OutboxRow]], Awaitable[None]]
ProducerFactory = Callable[[], AIOKafkaProducer]


@dataclass(frozen=True, slots=True)
class RelayHooks:
    """Test seams around the two crash points: before publishing and before marking sent."""

    before_publish: Hook | None = None
    after_publish: Hook | None = None


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


class OutboxRelay:
    def __init__(
        self,
        dsn: str,
        producer_factory: ProducerFactory,
        *,
        topic_prefix: str = "",
        batch_size: int = 1000,
        poll_interval: float = 1.0,
        standby_interval: float = 1.0,
        retry_interval: float = 1.0,
        hooks: RelayHooks | None = None,
        name: str = "relay",
    ) -> None:
        self._dsn = dsn
        self._producer_factory = producer_factory
        self._prefix = topic_prefix
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._standby_interval = standby_interval
        self._retry_interval = retry_interval
        self._hooks = hooks or RelayHooks()
        self.name = name
        self.active = asyncio.Event()
        self.published = 0
        self._wake = asyncio.Event()

    def wake(self) -> None:
        """New outbox rows were committed (by this process): publish without waiting."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop` is set; survives database and broker outages."""
        while not stop.is_set():
            try:
                await self._session(stop)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, KafkaError) as error:
                log.warning(
                    "relay session failed, retrying",
                    extra={"relay": self.name, "error": repr(error)},
                )
                await _wait(stop, self._retry_interval)

    async def supervise(self, stop: asyncio.Event) -> None:
        """`run`, restarted after any unexpected failure (for the relay inside `serve`)."""
        while not stop.is_set():
            try:
                await self.run(stop)
            except Exception:
                log.exception("relay crashed; restarting", extra={"relay": self.name})
                await _wait(stop, self._retry_interval)

    async def _session(self, stop: asyncio.Event) -> None:
        connection: asyncpg.Connection = await asyncpg.connect(self._dsn)
        try:
            store = OutboxStore(connection)
            if not await store.try_lock():
                log.info("another relay is active; standing by", extra={"relay": self.name})
                while not await store.try_lock():
                    if await _wait(stop, self._standby_interval):
                        return
            log.info("relay active", extra={"relay": self.name})
            self.active.set()
            RELAY_ACTIVE.set(1)
            try:
                await self._lead(connection, store, stop)
            finally:
                self.active.clear()
                RELAY_ACTIVE.set(0)
        finally:
            # Closing the connection also releases the advisory lock.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(connection.close(), timeout=5)

    async def _lead(
        self, connection: asyncpg.Connection, store: OutboxStore, stop: asyncio.Event
    ) -> None:
        wake = self._wake

        def on_notify(*_: Any) -> None:
            wake.set()

        await connection.add_listener(NOTIFY_CHANNEL, on_notify)
        producer = self._producer_factory()
        await producer.start()
        try:
            while not stop.is_set():
                wake.clear()
                rows = await store.unsent(self._batch_size)
                if rows:
                    await self._publish(producer, store, rows)
                    continue
                waiter = asyncio.ensure_future(wake.wait())
                stopper = asyncio.ensure_future(stop.wait())
                try:
                    await asyncio.wait(
                        {waiter, stopper},
                        timeout=self._poll_interval,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                finally:
                    waiter.cancel()
                    stopper.cancel()
        finally:
            await producer.stop()

    async def _publish(
        self, producer: AIOKafkaProducer, store: OutboxStore, rows: Sequence[OutboxRow]
    ) -> None:
        if self._hooks.before_publish is not None:
            await self._hooks.before_publish(rows)
        await send_events(
            producer, ((f"{self._prefix}{row.topic}", to_cloudevent(row)) for row in rows)
        )
        if self._hooks.after_publish is not None:
            await self._hooks.after_publish(rows)
        await store.mark_sent([row.position for row in rows])
        self.published += len(rows)
        OUTBOX_PUBLISHED.inc(len(rows))


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep up to `seconds`; True if `stop` was set meanwhile."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    return stop.is_set()
