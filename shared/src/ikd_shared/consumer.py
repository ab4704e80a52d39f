"""One batch-consumer step and the one dead-letter writer of the project.

The step is what every consumer does with a batch of records before it may acknowledge them:
decode each record (a poison record goes to the dead-letter topic with the reason), apply the
decoded records together, retrying an outage until it passes, and, when the batch fails for
any other reason, apply the records one by one so that only the records that fail are
dead-lettered and every other record is applied. The step returns only when each record of the
batch is either applied or dead-lettered; only then may the caller acknowledge (commit) it.

No framework here: the step takes callables, so the gateway's faust agents and the audit
consumer's aiokafka loop call the same code.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from prometheus_client import Counter

from ikd_shared.events.envelope import CloudEvent, to_kafka
from ikd_shared.supervise import retry

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")
Headers = Sequence[tuple[str, bytes | None]]


@dataclass(frozen=True, slots=True)
class SourceRecord:
    """A consumed record, whatever client consumed it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Headers = ()

    @classmethod
    def of(cls, message: Any) -> SourceRecord:
        """From an aiokafka ConsumerRecord or a faust Message (headers as pairs or a dict)."""
        headers = message.headers or ()
        if isinstance(headers, dict):
            headers = headers.items()
        return cls(
            message.topic, message.partition, message.offset, message.key, message.value,
            tuple(headers),
        )  # fmt: skip


class Poison(Exception):
    """A record that can never be processed; the message is the dead-letter reason."""


class Producer(Protocol):
    """What the dead-letter writer needs of a Kafka producer (aiokafka's has it)."""

    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: Any = None,
    ) -> Any: ...


APPLY_FAILED = "apply: "


def reason_code(reason: str, source: SourceRecord | None) -> str:
    """The machine-readable kind of a dead letter (`dlq_reason_code`), for tools and alerts."""
    if source is None:
        return "failed-event"  # a CloudEvent describing a failure (a webhook delivery's)
    return "apply-failed" if reason.startswith(APPLY_FAILED) else "undecodable"


def dead_letter_headers(
    reason: str, *, service: str, source: SourceRecord | None = None
) -> list[tuple[str, bytes]]:
    """Why and where from: the `dlq_*` headers of a dead-lettered record."""
    headers = [
        ("dlq_reason", reason[:1000].encode()),
        ("dlq_reason_code", reason_code(reason, source).encode()),
        ("dlq_service", service.encode()),
    ]
    if source is not None:
        headers += [
            ("dlq_source_topic", source.topic.encode()),
            ("dlq_partition", str(source.partition).encode()),
            ("dlq_offset", str(source.offset).encode()),
        ]
    return headers


DEAD_LETTERS = Counter(
    "ikd_dead_letters_total", "Records and events sent to a dead-letter topic", ["topic"]
)


@dataclass(frozen=True)
class DeadLetterWriter:
    """Sends to one dead-letter topic: either a consumed record unchanged (its CloudEvents
    headers kept) or a CloudEvent describing a failure, each with the `dlq_*` headers."""

    producer: Producer
    topic: str
    service: str

    async def record(self, source: SourceRecord, reason: str) -> None:
        headers = [(name, raw) for name, raw in source.headers if raw is not None]
        headers += dead_letter_headers(reason, service=self.service, source=source)
        await self.producer.send_and_wait(
            self.topic, value=source.value, key=source.key, headers=headers
        )
        DEAD_LETTERS.labels(self.topic).inc()

    async def event(self, event: CloudEvent, reason: str) -> None:
        record = to_kafka(event)
        headers = list(record.headers) + dead_letter_headers(reason, service=self.service)
        await self.producer.send_and_wait(
            self.topic, value=record.value, key=record.key, headers=headers
        )
        DEAD_LETTERS.labels(self.topic).inc()


async def consume_batch(
    batch: Sequence[SourceRecord],
    *,
    decode: Callable[[SourceRecord], T],
    apply: Callable[[Sequence[T]], Awaitable[Sequence[R]]],
    dead_letter: Callable[[SourceRecord, str], Awaitable[None]],
    transient: tuple[type[BaseException], ...],
    what: str = "batch",
) -> list[tuple[T, R]]:
    """Apply a batch so that it may be acknowledged; the applied records with their results.

    `decode` raises Poison for a record that is not a valid event; `apply` applies decoded
    records in one transaction (idempotently: a retry after an unknown outcome changes nothing)
    and returns one result per record; `transient` are the errors of an outage, retried until
    it passes. Only cancellation escapes: every record is applied or dead-lettered on return.
    """
    decoded: list[tuple[SourceRecord, T]] = []
    for source in batch:
        try:
            decoded.append((source, decode(source)))
        except Poison as poison:
            await _dead_letter(dead_letter, source, str(poison))
    if not decoded:
        return []
    records = [record for _, record in decoded]
    try:
        results = await retry(lambda: apply(records), what=what, retry_on=transient)
        return list(zip(records, results, strict=True))
    except Exception:
        if len(decoded) > 1:
            log.exception("%s of %d failed; applying it record by record", what, len(decoded))
        else:
            log.exception("%s of 1 failed", what)

    def alone(record: T) -> Callable[[], Awaitable[Sequence[R]]]:
        return lambda: apply([record])

    applied: list[tuple[T, R]] = []
    for source, record in decoded:
        try:
            [result] = await retry(alone(record), what=what, retry_on=transient)
        except Exception as error:
            await _dead_letter(
                dead_letter, source, f"{APPLY_FAILED}{type(error).__name__}: {error}"
            )
        else:
            applied.append((record, result))
    return applied


async def _dead_letter(
    dead_letter: Callable[[SourceRecord, str], Awaitable[None]], source: SourceRecord, reason: str
) -> None:
    # A record is acknowledged only once it is on the dead-letter topic: a broker outage here
    # is waited out, never skipped.
    await retry(lambda: dead_letter(source, reason), what="dead-letter write")
