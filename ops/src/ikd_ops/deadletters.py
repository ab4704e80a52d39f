"""Dead letters: read the dead-letter topics, show one record, replay records to their source.

Every consumer sets a record aside with `dlq_*` headers (ikd_shared.consumer): the reason in
words (`dlq_reason`), its kind (`dlq_reason_code`: undecodable, apply-failed, failed-event),
the service, and where it was consumed (`dlq_source_topic`, `dlq_partition`, `dlq_offset`).

A replay sends the record unchanged (its key, value and CloudEvents headers; without the `dlq_*`
ones) to the topic it was consumed from, so it goes through the consumers' normal path, and
marks it with `dlq_replay_of`. Then a marker record is appended to the dead-letter topic
(`dlq_replayed` = the replayed record's partition:offset), so a second replay skips it. Should
the tool stop between the two sends, a second replay sends the record again: the consumers'
guards (the audit log's access id, the gateways' profile and consent versions) make that change
nothing. Records without a source (a webhook delivery's failure) are redelivered by the gateway,
not here.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from ikd_shared.events.topics import (
    AUDIT_DEAD_LETTER,
    GATEWAY_DEAD_LETTER,
    WEBHOOK_DEAD_LETTER,
    TopicSpec,
)
from ikd_shared.kafka import KafkaConnection

DEAD_LETTER_TOPICS: tuple[TopicSpec, ...] = (
    GATEWAY_DEAD_LETTER,
    AUDIT_DEAD_LETTER,
    WEBHOOK_DEAD_LETTER,
)
READ_TIMEOUT_S = 60.0
REPLAYED = "dlq_replayed"  # on a marker in the dead-letter topic: "<partition>:<offset>"
REPLAYED_TO = "dlq_replayed_to"  # on the marker: "<topic>:<partition>:<offset>" it went to
REPLAY_OF = "dlq_replay_of"  # on the replayed record: "<dead-letter topic>:<partition>:<offset>"


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    def header(self, name: str) -> str | None:
        for key, raw in self.headers:
            if key == name and raw is not None:
                return raw.decode(errors="replace")
        return None

    @property
    def ref(self) -> str:
        return f"{self.partition}:{self.offset}"

    @property
    def time(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.timestamp_ms / 1000, dt.UTC)

    @property
    def reason(self) -> str:
        return self.header("dlq_reason") or ""

    @property
    def reason_code(self) -> str:
        return self.header("dlq_reason_code") or "unknown"

    @property
    def source_topic(self) -> str | None:
        return self.header("dlq_source_topic")

    @property
    def is_marker(self) -> bool:
        return self.header(REPLAYED) is not None


@dataclass(frozen=True, slots=True)
class DeadLetters:
    """One dead-letter topic's records, and which of them were replayed (and to where)."""

    topic: str
    records: tuple[DeadLetter, ...]
    replayed: dict[str, str]  # ref -> where it was replayed to

    def find(self, partition: int, offset: int) -> DeadLetter:
        for record in self.records:
            if (record.partition, record.offset) == (partition, offset):
                return record
        raise LookupError(f"{self.topic} has no dead letter at {partition}:{offset}")


async def read(conn: KafkaConnection, topic: str) -> DeadLetters:
    """Every record of the topic up to its current end (no consumer group, nothing committed)."""
    # A consumer subscribed to a missing topic would wait for it: look first.
    admin = conn.admin()
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            raise LookupError(f"no topic {topic}")
    finally:
        await admin.close()
    # Subscribed, not assigned: aiokafka 0.14's group-less consumer fails to stop after assign().
    consumer = conn.consumer(topic, group=None, auto_offset_reset="earliest")
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
        found: list[DeadLetter] = []
        pending = {tp for tp, end in ends.items() if end > 0}
        deadline = time.monotonic() + READ_TIMEOUT_S
        while pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{topic}: not read to its end within {READ_TIMEOUT_S} s")
            batch = await consumer.getmany(timeout_ms=500)
            for tp, messages in batch.items():
                found += [_dead_letter(m) for m in messages if m.offset < ends.get(tp, 0)]
            assigned = consumer.assignment()
            pending = {
                tp for tp in pending if tp not in assigned or await consumer.position(tp) < ends[tp]
            }
    finally:
        await consumer.stop()
    records = tuple(r for r in found if not r.is_marker)
    replayed = {r.header(REPLAYED) or "": r.header(REPLAYED_TO) or "" for r in found if r.is_marker}
    return DeadLetters(topic, records, replayed)


def _dead_letter(message: ConsumerRecord[bytes, bytes]) -> DeadLetter:
    # A null header value carries nothing to show or replay.
    headers = tuple((name, raw) for name, raw in message.headers or () if raw is not None)
    return DeadLetter(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        timestamp_ms=message.timestamp,
        key=message.key,
        value=message.value,
        headers=headers,
    )


@dataclass(frozen=True, slots=True)
class Replayed:
    record: DeadLetter
    outcome: str  # "replayed", "already replayed", "no source topic", "would replay"
    to: str = ""


async def replay(
    conn: KafkaConnection,
    letters: DeadLetters,
    selected: Iterable[DeadLetter] | None = None,
    *,
    again: bool = False,
    dry_run: bool = False,
) -> list[Replayed]:
    """Send the selected dead letters (default: all) back to their source topics, once each.

    `again` replays records already marked as replayed (the consumers' guards still apply).
    """
    chosen: Sequence[DeadLetter] = list(letters.records if selected is None else selected)
    results: list[Replayed] = []
    producer = None if dry_run else conn.producer()
    if producer is not None:
        await producer.start()
    try:
        for record in chosen:
            source = record.source_topic
            if source is None:
                results.append(Replayed(record, "no source topic"))
            elif record.ref in letters.replayed and not again:
                results.append(Replayed(record, "already replayed", letters.replayed[record.ref]))
            elif producer is None:
                results.append(Replayed(record, "would replay", source))
            else:
                origin = f"{record.topic}:{record.ref}"
                headers = [(n, raw) for n, raw in record.headers if not n.startswith("dlq_")]
                headers.append((REPLAY_OF, origin.encode()))
                sent = await producer.send_and_wait(
                    source, value=record.value, key=record.key, headers=headers
                )
                to = f"{source}:{sent.partition}:{sent.offset}"
                # The marker follows the replay: lost, the record is replayed again, harmlessly.
                await producer.send_and_wait(
                    record.topic,
                    value=None,
                    key=record.key,
                    partition=record.partition,
                    headers=[
                        (REPLAYED, record.ref.encode()),
                        (REPLAYED_TO, to.encode()),
                        ("dlq_service", b"ikdctl"),
                    ],
                )
                letters.replayed[record.ref] = to
                results.append(Replayed(record, "replayed", to))
    finally:
        if producer is not None:
            await producer.stop()
    return results
