"""The access-event consumer against the real broker: batches, redelivery, dead letters."""

from __future__ import annotations

import asyncio
from typing import Any

from audit_support import access, eventually

from ikd_audit.bootstrap import AuditRuntime
from ikd_audit.entrypoints.consumer import AccessConsumer
from ikd_shared import codec
from ikd_shared.events import to_cloudevent
from ikd_shared.events.envelope import CloudEvent
from ikd_shared.events.topics import ACCESS, AUDIT_DEAD_LETTER
from ikd_shared.kafka import send_event
from tests.kafka_auth import kafka_connection


async def test_consumer_records_each_event_once_and_dead_letters_malformed_ones(
    runtime: AuditRuntime, kafka_bootstrap: str, topic_prefix: str, citizens: Any
) -> None:
    topic = ACCESS.full_name(topic_prefix)
    events = [access(citizens[i % 3]) for i in range(25)]
    producer = kafka_connection(kafka_bootstrap).producer()
    await producer.start()
    clouds = [
        to_cloudevent(
            event,
            source="/ikd/gateway/bpjs-kesehatan",
            key=event.pseudonym or "none",
            event_id=str(event.access_id),
        )
        for event in events
    ]
    try:
        # Then a redelivery: the first events again (same CloudEvent ids).
        for cloud in clouds + clouds[:5]:
            await send_event(producer, topic, cloud)
        await producer.send_and_wait(topic, value=b"\x00garbage", key=b"k")
        await send_event(
            producer,
            topic,
            CloudEvent(type="id.go.mpp.unknown.v1", source="/x", data=b"{}", key="k"),
        )
        await send_event(
            producer,
            topic,
            CloudEvent(
                type="id.go.mpp.access.recorded.v1",
                source="/x",
                key="k",
                data=codec.dumps({"agency": "NOT A CODE"}),
            ),
        )
    finally:
        await producer.stop()

    consumer = AccessConsumer(
        runtime.log,
        bootstrap_servers=kafka_connection(kafka_bootstrap),
        topic_prefix=topic_prefix,
        group_id=f"{topic_prefix}audit",
        batch_size=7,
    )
    task = asyncio.create_task(consumer.run())
    try:

        async def all_recorded() -> bool:
            return (await runtime.log.tree_state())[0] == 25

        await eventually(all_recorded, within=30)
        dead = kafka_connection(kafka_bootstrap).consumer(
            AUDIT_DEAD_LETTER.full_name(topic_prefix), group=None, auto_offset_reset="earliest"
        )
        await dead.start()
        try:
            records: list[Any] = []

            async def three_dead_letters() -> bool:
                batch = await dead.getmany(timeout_ms=500)
                records.extend(r for rs in batch.values() for r in rs)
                return len(records) >= 3

            await eventually(three_dead_letters, within=30)
        finally:
            await dead.stop()
        reasons = [dict(r.headers)["dlq_reason"].decode() for r in records]
        print(reasons)
        assert any("missing header" in reason for reason in reasons)
        assert any("unknown event type" in reason for reason in reasons)
        assert any("invalid fields" in reason for reason in reasons)
        assert all(dict(r.headers)["dlq_service"] == b"ikd-audit" for r in records)
        # The consumer carried on: a later event is still recorded.
        producer = kafka_connection(kafka_bootstrap).producer()
        await producer.start()
        late = access(citizens[0])
        try:
            await send_event(
                producer,
                topic,
                to_cloudevent(late, source="/ikd/gateway/x", key="k", event_id=str(late.access_id)),
            )
        finally:
            await producer.stop()

        async def late_recorded() -> bool:
            return (await runtime.log.tree_state())[0] == 26

        await eventually(late_recorded, within=30)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    entries = [e async for e, _ in runtime.log.stream()]
    assert len({e.access_id for e in entries}) == 26
