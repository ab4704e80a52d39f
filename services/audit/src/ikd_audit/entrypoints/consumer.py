"""Consumes access events in batches; offsets are committed only after the batch is durable.

Each batch goes through the project's one batch-consumer step (`ikd_shared.consumer`): a record
that is not a valid AccessRecorded CloudEvent, or one the log cannot store, goes to the audit
dead-letter topic with the reason in `dlq_*` headers and the rest of the batch is appended; an
outage is retried until it passes. Appending is idempotent by access id, so a redelivery after a
crash changes nothing.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import time
from collections.abc import Sequence

from pydantic import ValidationError

from ikd_audit.adapters.repository import TRANSIENT_ERRORS
from ikd_audit.entrypoints.observability import (
    BATCH_SECONDS,
    DEAD_LETTERED,
    DUPLICATES_SKIPPED,
    ENTRIES_APPENDED,
    TREE_SIZE,
)
from ikd_audit.service_layer.services import AppendResult, AuditLog
from ikd_shared import telemetry, tracing
from ikd_shared.consumer import DeadLetterWriter, Poison, SourceRecord, consume_batch
from ikd_shared.events import InvalidEventData, UnknownEventType, event_type_of
from ikd_shared.events.access_v1 import AccessRecorded
from ikd_shared.events.envelope import SPEC_VERSION, EnvelopeError
from ikd_shared.events.topics import ACCESS, AUDIT_DEAD_LETTER
from ikd_shared.kafka import KafkaConnection

log = logging.getLogger("ikd_audit.consumer")
SERVICE = "ikd-audit"


_ACCESS_TYPE = event_type_of(AccessRecorded)
_REQUIRED = ("ce_id", "ce_source", "ce_type", "ce_specversion")


def parse_record(record: SourceRecord) -> AccessRecorded:
    """The access event in a Kafka record; EnvelopeError says why it is not one.

    The checks of `envelope.from_kafka` and `events.decode` (tests/unit/audit/test_audit_batch.py
    holds them the same), without the CloudEvent they build: the data is parsed and validated
    once, by the schema.
    """
    try:
        attrs = {name.lower(): raw.decode() for name, raw in record.headers if raw is not None}
    except UnicodeDecodeError:
        raise EnvelopeError(f"header {_undecodable(record)} is not UTF-8") from None
    for header in _REQUIRED:
        if header not in attrs:
            raise EnvelopeError(f"missing header {header}")
    if attrs["ce_specversion"] != SPEC_VERSION:
        raise EnvelopeError(f"unsupported specversion {attrs['ce_specversion']}")
    time_header = attrs.get("ce_time")
    if time_header:
        try:
            dt.datetime.fromisoformat(time_header.replace("Z", "+00:00"))
        except ValueError:
            raise EnvelopeError(f"ce_time is not RFC 3339: {time_header}") from None
    if record.key is not None:
        try:
            record.key.decode("utf-8")
        except UnicodeDecodeError:
            raise EnvelopeError("record key is not UTF-8") from None
    if attrs["ce_type"] != _ACCESS_TYPE:
        raise UnknownEventType(f"unknown event type {attrs['ce_type']!r}")
    try:
        access = AccessRecorded.model_validate_json(record.value or b"")
    except ValidationError as error:
        raise InvalidEventData(
            f"{_ACCESS_TYPE}: {error.error_count()} invalid fields: {error.errors()[0]['msg']}"
        ) from None
    if str(access.access_id) != attrs["ce_id"]:
        raise InvalidEventData("access_id differs from the CloudEvent id")
    return access


def _undecodable(record: SourceRecord) -> str:
    for name, raw in record.headers:
        try:
            if raw is not None:
                raw.decode()
        except UnicodeDecodeError:
            return name
    raise AssertionError("every header decodes")


def _traced(record: SourceRecord) -> contextlib.AbstractContextManager[None]:
    """Log in the W3C trace context of the access that caused the event (ce_traceparent).

    Only logged, not stored: the entries' hashed leaf format stays as it is.
    """
    return tracing.bound(trace_context=tracing.from_kafka_headers(record.headers))


class AccessConsumer:
    def __init__(
        self,
        audit: AuditLog,
        kafka: KafkaConnection,
        *,
        topic_prefix: str = "",
        group_id: str = "ikd-audit",
        batch_size: int = 500,
    ) -> None:
        self.audit = audit
        self.kafka = kafka
        self.topic = ACCESS.full_name(topic_prefix)
        self.dead_letter_topic = AUDIT_DEAD_LETTER.full_name(topic_prefix)
        self.group_id = group_id
        self.batch_size = batch_size
        self.running = False

    async def run(self) -> None:
        consumer = self.kafka.consumer(
            self.topic,
            group=self.group_id,
            auto_offset_reset="earliest",
            max_poll_records=self.batch_size,
            isolation_level="read_committed",
        )
        producer = self.kafka.producer()
        async with contextlib.AsyncExitStack() as stack:
            await producer.start()
            stack.push_async_callback(producer.stop)
            await consumer.start()
            stack.push_async_callback(consumer.stop)
            dead_letters = DeadLetterWriter(producer, self.dead_letter_topic, service=SERVICE)
            self.running = True
            stack.callback(setattr, self, "running", False)
            log.info("consuming", extra={"fields": {"topic": self.topic, "group": self.group_id}})
            while True:
                batches = await consumer.getmany(timeout_ms=500, max_records=self.batch_size)
                if not batches:
                    continue
                started = time.perf_counter()
                await self.handle(
                    [SourceRecord.of(r) for records in batches.values() for r in records],
                    dead_letters,
                )
                # Only now: every record of the batch is in the log or on the dead-letter topic.
                await consumer.commit(
                    {tp: records[-1].offset + 1 for tp, records in batches.items()}
                )
                BATCH_SECONDS.observe(time.perf_counter() - started)

    async def handle(self, batch: Sequence[SourceRecord], dead_letters: DeadLetterWriter) -> None:
        """Append the batch's access events or dead-letter them; returns once all are done."""

        async def dead_letter(record: SourceRecord, reason: str) -> None:
            await dead_letters.record(record, reason)
            DEAD_LETTERED.inc()
            with _traced(record):
                log.warning(
                    "dead-lettered an access event",
                    extra={
                        "fields": {
                            "reason": reason,
                            "partition": record.partition,
                            "offset": record.offset,
                        }
                    },
                )

        await consume_batch(
            batch,
            decode=self.decode,
            apply=self.append,
            dead_letter=dead_letter,
            transient=TRANSIENT_ERRORS,
            what="access batch",
        )

    def decode(self, record: SourceRecord) -> AccessRecorded:
        telemetry.kafka_received(
            record.topic, record.partition, record.offset, record.headers, group=self.group_id
        )
        try:
            access = parse_record(record)
        except EnvelopeError as error:
            raise Poison(str(error)) from None
        if log.isEnabledFor(logging.DEBUG):
            with _traced(record):
                log.debug(
                    "access event received",
                    extra={
                        "fields": {
                            "access_id": access.access_id,
                            "partition": record.partition,
                            "offset": record.offset,
                        }
                    },
                )
        return access

    async def append(self, events: Sequence[AccessRecorded]) -> list[AppendResult]:
        """One transaction of the log; its result stands for each of the events in it."""
        result = await self.audit.record(events)
        ENTRIES_APPENDED.inc(result.appended)
        DUPLICATES_SKIPPED.inc(result.duplicates)
        TREE_SIZE.set(result.tree_size)
        return [result] * len(events)
