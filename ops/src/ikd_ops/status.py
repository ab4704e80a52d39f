"""`ikdctl status`: is every service ready, which topics exist, how far behind each consumer is."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
from aiokafka import TopicPartition

from ikd_ops.platform import Endpoints
from ikd_shared.events.topics import ALL_TOPICS
from ikd_shared.kafka import KafkaConnection


def _services(endpoints: Endpoints) -> dict[str, str]:
    services = {"identity": endpoints.identity, "audit": endpoints.audit}
    services.update({f"gateway {agency}": url for agency, url in endpoints.gateways.items()})
    return services


def _readiness(endpoints: Endpoints, say: Callable[[str], None]) -> bool:
    healthy = True
    for name, url in _services(endpoints).items():
        try:
            response = httpx.get(f"{url}/readyz", timeout=5)
            state = "ready" if response.status_code == 200 else f"NOT READY ({response.text[:80]})"
            healthy &= response.status_code == 200
        except httpx.HTTPError as error:
            state, healthy = f"DOWN ({type(error).__name__})", False
        say(f"  {name:<24} {url:<26} {state}")
    return healthy


async def _lag(kafka: KafkaConnection) -> tuple[list[str], dict[str, int]]:
    admin = kafka.admin()
    consumer = kafka.consumer(group=None)
    await admin.start()
    await consumer.start()
    try:
        topics = sorted(await admin.list_topics())
        lags: dict[str, int] = {}
        for group, *_ in await admin.list_consumer_groups():
            offsets = await admin.list_consumer_group_offsets(group)
            if not offsets:
                continue
            ends = await consumer.end_offsets(list(offsets))
            lags[group] = sum(
                max(ends[tp] - meta.offset, 0)
                for tp, meta in offsets.items()
                if isinstance(tp, TopicPartition) and meta.offset >= 0
            )
        return topics, lags
    finally:
        await consumer.stop()
        await admin.close()


def report(endpoints: Endpoints, kafka: KafkaConnection, say: Callable[[str], None]) -> bool:
    bootstrap = kafka.bootstrap_servers
    say("services:")
    healthy = _readiness(endpoints, say)
    try:
        topics, lags = asyncio.run(_lag(kafka))
    except Exception as error:
        say(f"kafka {bootstrap}: DOWN ({error})")
        return False
    declared = {spec.name for spec in ALL_TOPICS}
    say(
        f"topics on {bootstrap}: "
        f"{len(declared & set(topics))}/{len(declared)} declared topics present"
    )
    say("consumer groups (messages behind):")
    for group, lag in sorted(lags.items()):
        say(f"  {group:<40} {lag}")
    return healthy and declared <= set(topics)
