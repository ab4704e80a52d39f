"""Kafka reachability and consumer lag, for readiness checks and `/metrics`.

`ikd_kafka_consumer_lag` per partition: end offset minus the group's committed offset.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable

from prometheus_client import Gauge

from ikd_shared.kafka import KafkaConnection

CONSUMER_LAG = Gauge(
    "ikd_kafka_consumer_lag",
    "Records not yet processed by a consumer group: end offset minus committed offset",
    ["group", "topic", "partition"],
)


def _connection(kafka: KafkaConnection | str) -> KafkaConnection:
    return KafkaConnection(kafka) if isinstance(kafka, str) else kafka


async def kafka_reachable(kafka: KafkaConnection | str, *, seconds: float = 2.0) -> None:
    """Raise unless a broker answers a metadata request."""
    client = _connection(kafka).client(request_timeout_ms=int(seconds * 1000))
    try:
        await asyncio.wait_for(client.bootstrap(), timeout=seconds)
    finally:
        await client.close()


async def consumer_group_lag(
    kafka: KafkaConnection | str, group: str, topics: Iterable[str]
) -> dict[tuple[str, int], int]:
    """Per partition of `topics`: end offset minus the group's committed offset.

    A partition the group has not committed yet counts from its first retained offset.
    """
    from aiokafka import TopicPartition

    admin = _connection(kafka).admin()
    consumer = _connection(kafka).consumer(group=None)
    await admin.start()
    try:
        described = await admin.describe_topics(list(topics))
        partitions = [
            TopicPartition(item["topic"], part["partition"])
            for item in described
            if item.get("error_code", 0) == 0
            for part in sorted(item["partitions"], key=lambda p: int(p["partition"]))
        ]
        if not partitions:
            return {}
        committed = await admin.list_consumer_group_offsets(group, partitions=partitions)
        await consumer.start()
        try:
            ends = await consumer.end_offsets(partitions)
            starts = await consumer.beginning_offsets(partitions)
        finally:
            await consumer.stop()
    finally:
        await admin.close()
    lag: dict[tuple[str, int], int] = {}
    for tp in partitions:
        meta = committed.get(tp)
        position = meta.offset if meta is not None and meta.offset >= 0 else starts[tp]
        lag[(tp.topic, tp.partition)] = max(ends[tp] - position, 0)
    return lag


def lag_refresher(
    kafka: KafkaConnection | str, group: str, topics: Iterable[str]
) -> Callable[[], Awaitable[None]]:
    """A `refresh` step for `ikd_shared.api.operations_router` that sets the lag gauge."""
    names = list(topics)

    async def refresh() -> None:
        for (topic, partition), lag in (await consumer_group_lag(kafka, group, names)).items():
            CONSUMER_LAG.labels(group, topic, str(partition)).set(lag)

    return refresh
