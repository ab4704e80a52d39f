"""The access consumer's batch step against the in-memory log: what is appended, what set aside."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ikd_audit.entrypoints.consumer import AccessConsumer
from ikd_audit.service_layer.checkpoints import DEFAULT_ORIGIN, CheckpointSigner
from ikd_audit.service_layer.services import AuditLog
from ikd_shared.consumer import DeadLetterWriter, SourceRecord
from ikd_shared.events import to_cloudevent
from ikd_shared.events.access_v1 import AccessRecorded, Channel, Outcome
from ikd_shared.events.envelope import to_kafka
from ikd_shared.kafka import KafkaConnection
from tests.support.audit_fakes import FakeDatabase

T0 = dt.datetime(2025, 3, 1, 8, 0, tzinfo=dt.UTC)


def access() -> AccessRecorded:
    return AccessRecorded(
        access_id=uuid.uuid4(),
        occurred_at=T0,
        agency="bpjs-kesehatan",
        channel=Channel.PREFILL,
        outcome=Outcome.SERVED,
    )


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, dict[str, bytes]]] = []

    async def send_and_wait(
        self, topic: str, value: bytes | None = None, key: bytes | None = None, **kw: Any
    ) -> None:
        self.sent.append((topic, value, dict(kw["headers"])))


def source(
    offset: int, event: AccessRecorded, *, event_id: uuid.UUID | None = None
) -> SourceRecord:
    cloud = to_cloudevent(event, source="/x", key="k", event_id=str(event_id or event.access_id))
    record = to_kafka(cloud)
    return SourceRecord("access", 0, offset, record.key, record.value, tuple(record.headers))


async def test_a_batch_is_appended_once_poison_set_aside_and_an_outage_retried() -> None:
    db = FakeDatabase(now=T0)
    signer = CheckpointSigner(db, Ed25519PrivateKey.generate(), DEFAULT_ORIGIN, lambda: T0)
    audit = AuditLog(db, signer, pseudonym_key=b"p" * 32, cursor_key=b"c" * 32, clock=lambda: T0)
    consumer = AccessConsumer(audit, KafkaConnection("127.0.0.1:1"), topic_prefix="t.")
    producer = FakeProducer()
    first, second = access(), access()
    batch = [
        source(0, first),
        SourceRecord("access", 0, 1, b"k", b"\x00garbage"),
        source(2, access(), event_id=uuid.uuid4()),  # access id is not the CloudEvent id
        source(3, second),
        source(4, first),  # redelivered
    ]
    db.fail_next_add = True  # the first transaction loses its connection
    await consumer.handle(batch, DeadLetterWriter(producer, "t.dead", service="ikd-audit"))

    appended = [e.access_id for e in db.committed.entries.values()]
    assert appended == [first.access_id, second.access_id]
    assert (db.committed.rollbacks, db.committed.commits) == (1, 1), "outage retried, batch whole"
    assert [(topic, headers["dlq_offset"]) for topic, _, headers in producer.sent] == [
        ("t.dead", b"1"),
        ("t.dead", b"2"),
    ]
    assert b"access_id differs" in producer.sent[1][2]["dlq_reason"]
