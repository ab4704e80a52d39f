"""A record that decodes but cannot be applied is dead-lettered; the rest of its batch applies.

faust acknowledges every event of a batch when the agent asks for the next one, whatever the
agent body did: the batch's offsets are committed only after each of its records was either
applied to the view or put on the dead-letter topic.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import TopicPartition

from ikd_gateway.config import GatewaySettings
from ikd_shared.events import to_cloudevent
from ikd_shared.events.envelope import to_kafka
from ikd_shared.events.topics import GATEWAY_DEAD_LETTER, PROFILE
from tests.support.gateway import gateway_env, read_topic
from tests.support.gateway_factories import Tokens, profile, verified
from tests.support.kafka import kafka_connection
from tests.support.polling import eventually

AGENCY = "polres-cirebon"
NOW = dt.datetime.now(dt.UTC)


async def committed_offset(bootstrap: str, group: str, partition: TopicPartition) -> int:
    admin = kafka_connection(bootstrap).admin()
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group, partitions=[partition])
    finally:
        await admin.close()
    found = offsets.get(partition)
    return found.offset if found is not None else -1


async def test_a_record_failing_to_apply_is_dead_lettered_and_the_rest_of_its_batch_applies(
    gateway_db: Any,
    db: asyncpg.Connection,
    producer: Any,
    topic_prefix: str,
    kafka_bootstrap: str,
    tokens: Tokens,
    tmp_path: Path,
    worker_factory: Any,
) -> None:
    topic = PROFILE.full_name(topic_prefix)
    # A valid event PostgreSQL refuses to store (jsonb holds no U+0000): not an outage, so no
    # retry helps. It comes first, the good records after it, all on one partition so the
    # worker takes them as one batch in this order.
    bad = verified(profile(1, street="Jl. \x00 Nol"), 1, NOW)
    good = [verified(profile(serial), 1, NOW) for serial in range(2, 7)]
    bad_event = to_cloudevent(bad, source="/test", key=bad.pseudonym)
    for event in [bad_event] + [to_cloudevent(g, source="/test", key=g.pseudonym) for g in good]:
        record = to_kafka(event)
        await producer.producer.send_and_wait(
            topic, value=record.value, key=record.key, headers=record.headers, partition=0
        )
    end = len(good) + 1

    worker = worker_factory(gateway_env(AGENCY, gateway_db, topic_prefix, tokens, tmp_path))
    worker.start()
    group = GatewaySettings.model_construct(agency=AGENCY).consumer_group
    partition = TopicPartition(topic, 0)

    async def batch_committed() -> bool:
        return await committed_offset(kafka_bootstrap, group, partition) == end

    try:
        await eventually(batch_committed, timeout=60, interval=0.2)
    except AssertionError:
        raise AssertionError(worker.log()) from None
    # The offsets are committed: by then every good record is in the view and the bad one on
    # the dead-letter topic (nothing was acknowledged without being applied).
    stored = {
        row["pseudonym"]: row["version"]
        for row in await db.fetch("SELECT pseudonym, version FROM citizen_view")
    }
    assert stored == {g.pseudonym: 1 for g in good}, worker.log()
    dead = await read_topic(kafka_bootstrap, GATEWAY_DEAD_LETTER.full_name(topic_prefix), 1)
    assert len(dead) == 1
    headers = {name: raw.decode() for name, raw in dead[0].headers}
    assert headers["ce_id"] == bad_event.id, "the record is forwarded with its CloudEvents headers"
    assert headers["dlq_reason"].startswith("apply: UntranslatableCharacterError"), headers
    assert (headers["dlq_source_topic"], headers["dlq_partition"], headers["dlq_offset"]) == (
        topic,
        "0",
        "0",
    )
    assert dead[0].value == to_kafka(bad_event).value
