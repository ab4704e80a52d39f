"""Kafka plumbing: idempotent topic creation and the project's producer settings."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from ikd_shared.events.envelope import CloudEvent, KafkaHeaders, to_kafka
from ikd_shared.events.topics import ALL_TOPICS, TopicSpec


async def ensure_topics(
    bootstrap_servers: str,
    *,
    prefix: str = "",
    replication_factor: int = 1,
    specs: Iterable[TopicSpec] = ALL_TOPICS,
) -> list[str]:
    """Create the declared topics that do not exist yet; return the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                name=spec.full_name(prefix),
                num_partitions=spec.partitions,
                replication_factor=replication_factor,
                topic_configs=spec.topic_config(),
            )
            for spec in specs
            if spec.full_name(prefix) not in existing
        ]
        if not missing:
            return []
        response = await admin.create_topics(missing)
        created = []
        for name, error_code, *_ in response.topic_errors:
            if error_code == 0:
                created.append(name)
            elif error_code != TopicAlreadyExistsError.errno:
                raise RuntimeError(f"creating topic {name} failed with error code {error_code}")
        return created
    finally:
        await admin.close()


def producer_config(bootstrap_servers: str, **overrides: Any) -> dict[str, Any]:
    """acks=all with idempotence: a send that was acknowledged is never lost or duplicated."""
    config: dict[str, Any] = {
        "bootstrap_servers": bootstrap_servers,
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "max_batch_size": 256 * 1024,
        "request_timeout_ms": 30000,
    }
    config.update(overrides)
    return config


def make_producer(bootstrap_servers: str, **overrides: Any) -> AIOKafkaProducer:
    return AIOKafkaProducer(**producer_config(bootstrap_servers, **overrides))


async def send_event(producer: AIOKafkaProducer, topic: str, event: CloudEvent) -> Any:
    """Send one CloudEvent and wait for the broker's acknowledgement."""
    record = to_kafka(event)
    return await producer.send_and_wait(
        topic, value=record.value, key=record.key, headers=record.headers
    )


async def send_events(producer: AIOKafkaProducer, events: Iterable[tuple[str, CloudEvent]]) -> None:
    """Send (topic, CloudEvent) pairs in order, then wait for the broker to acknowledge all.

    Each send only queues its record, so a batch travels in few requests; the idempotent
    producer keeps the order per partition. Any failed acknowledgement fails the call.
    """
    futures = []
    for topic, event in events:
        record = to_kafka(event)
        futures.append(
            await producer.send(topic, value=record.value, key=record.key, headers=record.headers)
        )
    await asyncio.gather(*futures)


def dead_letter_headers(
    reason: str, *, source_topic: str, partition: int, offset: int, service: str
) -> KafkaHeaders:
    """Why and where from: headers added to a record sent to a dead-letter topic."""
    return [
        ("dlq_reason", reason[:1000].encode()),
        ("dlq_source_topic", source_topic.encode()),
        ("dlq_partition", str(partition).encode()),
        ("dlq_offset", str(offset).encode()),
        ("dlq_service", service.encode()),
    ]


async def wait_for_broker(bootstrap_servers: str, within_s: float = 30.0) -> None:
    """Poll until the broker answers a metadata request or the deadline passes."""
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
        try:
            await admin.start()
            await admin.list_topics()
            return
        except KafkaConnectionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)
        finally:
            await admin.close()


async def delete_prefixed_topics(bootstrap_servers: str, prefix: str) -> list[str]:
    """Delete every topic whose name starts with `prefix` (a test's or a bench run's)."""
    if not prefix:
        raise ValueError("refusing to delete topics without a prefix")
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    await admin.start()
    try:
        names = [name for name in await admin.list_topics() if name.startswith(prefix)]
        if names:
            await admin.delete_topics(names)
        return names
    finally:
        await admin.close()
