"""The access-event consumer against the real broker: batches, redelivery, dead letters."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import TopicPartition

from ikd_audit.bootstrap import AuditRuntime
from ikd_audit.entrypoints.consumer import AccessConsumer
from ikd_shared import codec
from ikd_shared.events import to_cloudevent
from ikd_shared.events.access_v1 import Outcome
from ikd_shared.events.envelope import CloudEvent, to_kafka
from ikd_shared.events.topics import ACCESS, AUDIT_DEAD_LETTER
from ikd_shared.kafka import KafkaConnection, send_event
from tests.support.audit import access
from tests.support.kafka import kafka_connection
from tests.support.polling import eventually


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
        kafka_connection(kafka_bootstrap),
        topic_prefix=topic_prefix,
        group_id=f"{topic_prefix}audit",
        batch_size=7,
    )
    task = asyncio.create_task(consumer.run())
    try:

        async def all_recorded() -> bool:
            return (await runtime.log.tree_state())[0] == 25

        await eventually(all_recorded, timeout=30)
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

            await eventually(three_dead_letters, timeout=30)
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

        await eventually(late_recorded, timeout=30)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    entries = [e async for e, _ in runtime.log.stream()]
    assert len({e.access_id for e in entries}) == 26


async def committed_offset(kafka: KafkaConnection, group: str, partition: TopicPartition) -> int:
    admin = kafka.admin()
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group, partitions=[partition])
    finally:
        await admin.close()
    found = offsets.get(partition)
    return found.offset if found is not None else -1


async def read_all(kafka: KafkaConnection, topic: str, count: int) -> list[Any]:
    dead = kafka.consumer(topic, group=None, auto_offset_reset="earliest")
    await dead.start()
    records: list[Any] = []
    try:

        async def enough() -> bool:
            batch = await dead.getmany(timeout_ms=500)
            records.extend(r for rs in batch.values() for r in rs)
            return len(records) >= count

        await eventually(enough, timeout=30)
    finally:
        await dead.stop()
    return records


async def test_an_event_the_log_cannot_store_is_dead_lettered_and_the_rest_of_its_batch_appended(
    runtime: AuditRuntime, kafka_bootstrap: str, topic_prefix: str, citizens: Any
) -> None:
    kafka = kafka_connection(kafka_bootstrap)
    topic = ACCESS.full_name(topic_prefix)
    # A valid event PostgreSQL refuses to store (text holds no U+0000): not an outage, so no
    # retry helps. It comes first and the good ones after it, all on one partition, so the
    # consumer takes them as one batch in this order.
    bad = access(citizens[0], outcome=Outcome.FAILED).model_copy(update={"reason": "timeout\x00"})
    good = [access(citizens[i % 3]) for i in range(5)]
    clouds = [
        to_cloudevent(e, source="/ikd/gateway/x", key="k", event_id=str(e.access_id))
        for e in [bad, *good]
    ]
    producer = kafka.producer()
    await producer.start()
    try:
        for cloud in clouds:
            record = to_kafka(cloud)
            await producer.send_and_wait(
                topic, value=record.value, key=record.key, headers=record.headers, partition=0
            )
    finally:
        await producer.stop()

    group = f"{topic_prefix}audit"
    consumer = AccessConsumer(runtime.log, kafka, topic_prefix=topic_prefix, group_id=group)
    task = asyncio.create_task(consumer.run())
    partition = TopicPartition(topic, 0)
    try:

        async def batch_committed() -> bool:
            return await committed_offset(kafka, group, partition) == len(clouds)

        await eventually(batch_committed, timeout=60, interval=0.2)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    # Committed, so by then each good event is in the log and the bad one on the dead-letter
    # topic: nothing was acknowledged without being applied.
    entries = [e async for e, _ in runtime.log.stream()]
    assert sorted(str(e.access_id) for e in entries) == sorted(str(g.access_id) for g in good)
    [dead] = await read_all(kafka, AUDIT_DEAD_LETTER.full_name(topic_prefix), 1)
    headers = {name: raw.decode() for name, raw in dead.headers}
    assert headers["ce_id"] == str(bad.access_id), "forwarded with its CloudEvents headers"
    assert headers["dlq_reason"].startswith("apply: CharacterNotInRepertoireError"), headers
    assert headers["dlq_service"] == "ikd-audit"
    assert (headers["dlq_source_topic"], headers["dlq_partition"], headers["dlq_offset"]) == (
        topic,
        "0",
        "0",
    )
    assert dead.value == to_kafka(clouds[0]).value
