"""Access-event outbox relay: publishes `access_outbox` rows to the audit topic, in order.

Why an outbox. The gateway must never serve citizen data without an audit record (UU PDP:
a record of all processing; the citizen's trail). Sending the access event to Kafka *before*
answering would tie every prefill to the broker's availability and still leave a window where
the answer goes out and the send fails; sending it *after* loses it if the process dies in
between. Instead the access event is inserted into `access_outbox` in the same PostgreSQL
transaction that reads the view (prefill), writes the view (stream) or logs a webhook attempt:
if the transaction commits, the audit record is durable before any byte of data leaves, and if
it rolls back, nothing was served. This relay then publishes the rows with an idempotent
producer (acks=all) and deletes them only after the broker acknowledged them. A crash between
send and delete re-sends the same event with the same CloudEvent id (`access_id`), which the
audit service deduplicates. Several relays (the API and the worker each run one) can share the
table: rows are claimed with FOR UPDATE SKIP LOCKED.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer

from ikd_shared.events import to_cloudevent
from ikd_shared.events.access_v1 import AccessRecorded
from ikd_shared.events.envelope import CloudEvent
from ikd_shared.kafka import send_events
from ikd_shared.outbox import ConcurrentRelay


@dataclass(slots=True)
class _Claimed:
    """Rows locked by the claiming transaction; deleted in it once the broker acked them."""

    connection: Any
    rows: Sequence[asyncpg.Record]

    async def mark_sent(self) -> None:
        await self.connection.execute(
            "DELETE FROM access_outbox WHERE position = ANY($1::bigint[])",
            [row["position"] for row in self.rows],
        )


class AccessRelay(ConcurrentRelay[asyncpg.Record]):
    """The concurrent strategy of ikd_shared.outbox over `access_outbox`."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        producer: AIOKafkaProducer,
        *,
        topic: str,
        source: str,
        interval: float = 0.2,
        batch_size: int = 500,
    ) -> None:
        super().__init__(
            self._claim, self._publish, interval=interval, batch_size=batch_size, name="access"
        )
        self.pool = pool
        self.producer = producer
        self.topic = topic
        self.source = source

    @contextlib.asynccontextmanager
    async def _claim(self, limit: int) -> AsyncIterator[_Claimed]:
        async with self.pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                """SELECT position, access_id, record_key, payload, traceparent, tracestate
                   FROM access_outbox
                   ORDER BY position LIMIT $1 FOR UPDATE SKIP LOCKED""",
                limit,
            )
            yield _Claimed(conn, rows)

    async def _publish(self, rows: Sequence[asyncpg.Record]) -> None:
        await send_events(self.producer, ((self.topic, self._cloud_event(row)) for row in rows))

    def _cloud_event(self, row: Any) -> CloudEvent:
        event = AccessRecorded.model_validate(row["payload"])
        return to_cloudevent(
            event,
            source=self.source,
            key=row["record_key"],
            event_id=str(event.access_id),
            time=event.occurred_at,
            extensions={
                name: row[name] for name in ("traceparent", "tracestate") if row[name] is not None
            },
        )

    async def backlog(self) -> int:
        """Rows waiting to be published."""
        count: int = await self.pool.fetchval("SELECT count(*) FROM access_outbox")
        return count
