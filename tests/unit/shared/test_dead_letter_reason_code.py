"""Dead letters say in one machine-readable word why they were set aside (`dlq_reason_code`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ikd_shared.consumer import DeadLetterWriter, Poison, SourceRecord, consume_batch
from ikd_shared.events.envelope import CloudEvent


class Producer:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send_and_wait(self, topic: str, **kwargs: Any) -> None:
        self.sent.append({"topic": topic, **kwargs})


def decode(source: SourceRecord) -> str:
    assert source.value is not None
    if source.value == b"garbage":
        raise Poison("missing header ce_type")
    return source.value.decode()


async def apply(records: Sequence[str]) -> list[str]:
    if "refused" in records:
        raise ValueError("the database refused it")
    return list(records)


async def test_undecodable_and_refused_records_carry_their_reason_code() -> None:
    producer = Producer()
    writer = DeadLetterWriter(producer, "dead", service="svc")
    batch = [
        SourceRecord("src", 2, offset, b"k", value, (("ce_id", b"id-1"),))
        for offset, value in enumerate([b"garbage", b"fine", b"refused"])
    ]
    applied = await consume_batch(
        batch, decode=decode, apply=apply, dead_letter=writer.record, transient=()
    )
    assert [record for record, _ in applied] == ["fine"]
    headers = [dict(sent["headers"]) for sent in producer.sent]
    assert [h["dlq_reason_code"] for h in headers] == [b"undecodable", b"apply-failed"]
    assert headers[1]["dlq_reason"] == b"apply: ValueError: the database refused it"
    assert [(h["dlq_source_topic"], h["dlq_offset"]) for h in headers] == [
        (b"src", b"0"),
        (b"src", b"2"),
    ]
    assert all(h["ce_id"] == b"id-1" for h in headers), "the CloudEvents headers are kept"


async def test_a_failure_event_is_marked_as_such() -> None:
    producer = Producer()
    event = CloudEvent(type="id.go.mpp.test.v1", source="/t", data=b"{}", key="k")
    await DeadLetterWriter(producer, "dead", service="svc").event(event, "HTTP 500 five times")
    [sent] = producer.sent
    assert dict(sent["headers"])["dlq_reason_code"] == b"failed-event"
