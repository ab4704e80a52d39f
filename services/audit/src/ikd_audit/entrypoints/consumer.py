"""Consumes access events in batches; offsets are committed only after the batch is durable.

A record that is not a valid AccessRecorded CloudEvent goes to the audit dead-letter topic with
the reason in `dlq_*` headers, and the consumer carries on.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from aiokafka import AIOKafkaProducer, TopicPartition

from ikd_audit.entrypoints.observability import (
    BATCH_SECONDS,
    DEAD_LETTERED,
    DUPLICATES_SKIPPED,
    ENTRIES_APPENDED,
    TREE_SIZE,
)
from ikd_audit.service_layer.services import AuditLog
from ikd_shared import tracing
from ikd_shared.consumer import DeadLetterWriter, SourceRecord
from ikd_shared.events import InvalidEventData, decode
from ikd_shared.events.access_v1 import EVENTS, AccessRecorded
from ikd_shared.events.envelope import EnvelopeError, from_kafka
from ikd_shared.events.topics import ACCESS, AUDIT_DEAD_LETTER
from ikd_shared.kafka import KafkaConnection
from ikd_shared.supervise import retry

log = logging.getLogger("ikd_audit.consumer")
SERVICE = "ikd-audit"


def parse_record(record: Any) -> AccessRecorded:
    """The access event in a Kafka record; EnvelopeError says why it is not one."""
    event = from_kafka(record.key, record.value, list(record.headers or ()))
    access = decode(event, EVENTS)
    if str(access.access_id) != event.id:
        raise InvalidEventData("access_id differs from the CloudEvent id")
    return access


def _traced(record: Any) -> contextlib.AbstractContextManager[None]:
    """Log in the W3C trace context of the access that caused the event (ce_traceparent).

    Only logged, not stored: the entries' hashed leaf format stays as it is.
    """
    return tracing.bound(trace_context=tracing.from_kafka_headers(record.headers or ()))


class AccessConsumer:
    def __init__(
        self,
        audit: AuditLog,
        *,
        bootstrap_servers: str | KafkaConnection,
        topic_prefix: str = "",
        group_id: str = "ikd-audit",
        batch_size: int = 500,
    ) -> None:
        self.audit = audit
        self.bootstrap_servers = bootstrap_servers
        self.topic = ACCESS.full_name(topic_prefix)
        self.dead_letter_topic = AUDIT_DEAD_LETTER.full_name(topic_prefix)
        self.group_id = group_id
        self.batch_size = batch_size
        self.running = False

    async def run(self) -> None:
        kafka = (
            KafkaConnection(self.bootstrap_servers)
            if isinstance(self.bootstrap_servers, str)
            else self.bootstrap_servers
        )
        consumer = kafka.consumer(
            self.topic,
            group=self.group_id,
            auto_offset_reset="earliest",
            max_poll_records=self.batch_size,
            isolation_level="read_committed",
        )
        producer = kafka.producer()
        await producer.start()
        await consumer.start()
        self.running = True
        log.info("consuming", extra={"fields": {"topic": self.topic, "group": self.group_id}})
        try:
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=self.batch_size)
                if not batches:
                    continue
                started = time.perf_counter()
                await self.handle(batches, producer)
                await consumer.commit(
                    {tp: records[-1].offset + 1 for tp, records in batches.items()}
                )
                BATCH_SECONDS.observe(time.perf_counter() - started)
        finally:
            self.running = False
            await consumer.stop()
            await producer.stop()

    async def handle(
        self, batches: dict[TopicPartition, list[Any]], producer: AIOKafkaProducer
    ) -> None:
        events: list[AccessRecorded] = []
        debug = log.isEnabledFor(logging.DEBUG)
        for records in batches.values():
            for record in records:
                try:
                    events.append(parse_record(record))
                except EnvelopeError as error:
                    with _traced(record):
                        await self.dead_letter(producer, record, str(error))
                    continue
                if debug:
                    with _traced(record):
                        log.debug(
                            "access event received",
                            extra={
                                "fields": {
                                    "access_id": events[-1].access_id,
                                    "partition": record.partition,
                                    "offset": record.offset,
                                }
                            },
                        )
        if not events:
            return
        # Keep the batch and retry: never skip an access.
        result = await retry(
            lambda: self.audit.record(events), what="recording a batch of accesses", logger=log
        )
        ENTRIES_APPENDED.inc(result.appended)
        DUPLICATES_SKIPPED.inc(result.duplicates)
        TREE_SIZE.set(result.tree_size)

    async def dead_letter(self, producer: AIOKafkaProducer, record: Any, reason: str) -> None:
        writer = DeadLetterWriter(producer, self.dead_letter_topic, service=SERVICE)
        await writer.record(SourceRecord.of(record), reason)
        DEAD_LETTERED.inc()
        log.warning(
            "dead-lettered a malformed access event",
            extra={
                "fields": {"reason": reason, "partition": record.partition, "offset": record.offset}
            },
        )
