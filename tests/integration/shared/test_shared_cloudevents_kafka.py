"""A CloudEvent produced with aiokafka comes back with its ce_* headers; the SDK parses it."""

from __future__ import annotations

import datetime as dt

from cloudevents.v1.kafka import KafkaMessage, from_binary

from ikd_dev.synthetic import citizen
from ikd_shared.events import decode, to_cloudevent
from ikd_shared.events.envelope import from_kafka
from ikd_shared.events.profile_v1 import EVENTS, ProfileVerified
from ikd_shared.events.topics import PROFILE
from ikd_shared.kafka import send_event
from ikd_shared.pseudonym import pseudonymize
from tests.support.kafka import kafka_connection


async def test_cloudevent_round_trip_through_the_broker(kafka_bootstrap, topic_prefix) -> None:
    profile = citizen(8, 0)
    pseudonym = pseudonymize(profile.nik, b"integration-key")
    payload = ProfileVerified(
        pseudonym=pseudonym,
        version=1,
        profile=profile,
        verified_at=dt.datetime.now(dt.UTC),
        changed_fields=["nik"],
    )
    event = to_cloudevent(payload, source="/ikd/identity", key=pseudonym)
    topic = PROFILE.full_name(topic_prefix)

    producer = kafka_connection(kafka_bootstrap).producer()
    await producer.start()
    try:
        await send_event(producer, topic, event)
    finally:
        await producer.stop()

    consumer = kafka_connection(kafka_bootstrap).consumer(
        topic, group=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        message = await consumer.getone()
    finally:
        await consumer.stop()

    headers = dict(message.headers)
    assert {"ce_id", "ce_type", "ce_source", "ce_specversion", "ce_time"} <= set(headers)
    assert message.key == pseudonym.encode()
    assert profile.nik.encode() not in b"".join(headers.values())

    sdk = from_binary(KafkaMessage(headers=headers, key=message.key, value=message.value))
    assert sdk["id"] == event.id
    assert sdk["type"] == ProfileVerified.event_type
    assert sdk["specversion"] == "1.0"

    ours = decode(from_kafka(message.key, message.value, message.headers), EVENTS)
    assert ours == payload
