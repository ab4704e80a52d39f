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
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, UnknownTopicOrPartitionError, for_code

from ikd_shared.events import to_cloudevent
from ikd_shared.events.access_v1 import AccessRecorded
from ikd_shared.events.envelope import CloudEvent
from ikd_shared.events.topics import TopicSpec
from ikd_shared.kafka import KafkaConnection, send_events
from ikd_shared.outbox import ConcurrentRelay, OrderedRelay, Publish


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


# -- the agency topic ---------------------------------------------------------------------------
# Unlike access events, the agency topic is compacted by citizen: its last record per citizen
# must be the last change, so its outbox is relayed in order by one active relay (the ordered
# strategy; the worker runs it, other workers stand by) and rows are deleted once acknowledged.

AGENCY_RELAY_LOCK = "ikd-gateway-agency-outbox"


class AgencyTopicMissing(RuntimeError):
    """The agency topic does not exist: the agency has not been onboarded (yet)."""

    def __init__(self, topic: str) -> None:
        super().__init__(
            f"agency topic {topic} does not exist: the agency is not onboarded "
            "(`ikdctl agencies onboard <code>` creates it; a gateway may not create topics)"
        )


# A missing topic is waited out like an outage: publishing resumes once onboarding created it.
OUTAGES = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, KafkaError, AgencyTopicMissing)


async def check_agency_topic(kafka: KafkaConnection, topic: str) -> None:
    """Raise AgencyTopicMissing unless `topic` exists; the broker's error if it may not see it."""
    admin = kafka.admin()
    await admin.start()
    try:
        (described,) = await admin.describe_topics([topic])
    finally:
        await admin.close()
    code = described["error_code"]
    if code == UnknownTopicOrPartitionError.errno:
        raise AgencyTopicMissing(topic)
    if code:
        raise for_code(code)(f"describing {topic}")


@dataclass(frozen=True, slots=True)
class AgencyRow:
    position: int
    event_id: uuid.UUID
    record_key: str
    ce_type: str
    data: bytes | None
    created_at: dt.datetime
    traceparent: str | None
    tracestate: str | None


class AgencyOutboxSession:
    """The ordered relay's session over `agency_outbox`, on a dedicated connection (its
    advisory lock is session state)."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self._db = connection

    async def try_lock(self) -> bool:
        return bool(
            await self._db.fetchval(
                "SELECT pg_try_advisory_lock(hashtextextended($1, 0))", AGENCY_RELAY_LOCK
            )
        )

    async def listen(self, wake: Callable[[], None]) -> None:
        """Nothing to listen to: only workers write rows and each wakes its own relay; rows of a
        standby worker wait for the poll."""

    async def unsent(self, limit: int) -> list[AgencyRow]:
        rows = await self._db.fetch(
            """SELECT position, event_id, record_key, ce_type, data, created_at, traceparent,
                 tracestate FROM agency_outbox ORDER BY position LIMIT $1""",
            limit,
        )
        return [AgencyRow(**dict(row)) for row in rows]

    async def mark_sent(self, rows: Sequence[AgencyRow]) -> None:
        # Deleted, not marked: the rows hold citizen data the view may already have purged.
        await self._db.execute(
            "DELETE FROM agency_outbox WHERE position = ANY($1::bigint[])",
            [row.position for row in rows],
        )

    async def close(self) -> None:
        await self._db.close()


def agency_cloudevent(row: AgencyRow, source: str) -> CloudEvent:
    extensions = {
        name: value
        for name, value in (("traceparent", row.traceparent), ("tracestate", row.tracestate))
        if value
    }
    return CloudEvent(
        id=str(row.event_id),
        type=row.ce_type,
        source=source,
        key=row.record_key,
        data=row.data,
        time=row.created_at,
        dataschema=f"urn:ikd:schema:{row.ce_type}" if row.data is not None else None,
        extensions=extensions,
    )


def agency_relay(
    dsn: str,
    producer: AIOKafkaProducer,
    kafka: KafkaConnection,
    *,
    topic: TopicSpec,
    prefix: str,
    source: str,
    poll_interval: float = 0.2,
) -> OrderedRelay[AgencyRow]:
    """The agency topic's relay. Onboarding creates the topic (`ikdctl agencies onboard`); the
    gateway's principal may not, so while it is missing the relay waits and retries."""

    async def connect() -> AgencyOutboxSession:
        return AgencyOutboxSession(await asyncpg.connect(dsn))

    @contextlib.asynccontextmanager
    async def publisher() -> AsyncIterator[Publish[AgencyRow]]:
        name = topic.full_name(prefix)
        await check_agency_topic(kafka, name)

        async def publish(rows: Sequence[AgencyRow]) -> None:
            await send_events(producer, ((name, agency_cloudevent(row, source)) for row in rows))

        yield publish

    return OrderedRelay(
        connect,
        publisher,
        outages=OUTAGES,
        poll_interval=poll_interval,
        name="agency-topic",
    )
