"""CloudEvents binary mode over Kafka: round trip, SDK compatibility, malformed records."""

from __future__ import annotations

import datetime as dt

import pytest
from cloudevents.v1.kafka import KafkaMessage, from_binary

from ikd_shared.events import InvalidEventData, UnknownEventType, decode, to_cloudevent
from ikd_shared.events.envelope import CloudEvent, EnvelopeError, from_kafka, to_kafka
from ikd_shared.events.profile_v1 import EVENTS, CitizenDied

PSEUDONYM = "a" * 64


def _event() -> CloudEvent:
    died = CitizenDied(
        pseudonym=PSEUDONYM,
        version=3,
        date_of_death=dt.date(2025, 1, 2),
        recorded_at=dt.datetime(2025, 1, 3, tzinfo=dt.UTC),
    )
    return to_cloudevent(died, source="/ikd/identity", key=PSEUDONYM)


def test_round_trip_keeps_every_attribute() -> None:
    event = _event()
    record = to_kafka(event)
    assert record.key == PSEUDONYM.encode()
    headers = dict(record.headers)
    assert headers["ce_specversion"] == b"1.0"
    assert headers["content-type"] == b"application/json"
    back = from_kafka(record.key, record.value, record.headers)
    assert (back.id, back.type, back.source, back.key, back.data, back.time) == (
        event.id,
        event.type,
        event.source,
        event.key,
        event.data,
        event.time,
    )
    died = decode(back, EVENTS)
    assert isinstance(died, CitizenDied)
    assert died.version == 3


def test_reference_sdk_reads_our_records() -> None:
    event = _event()
    record = to_kafka(event)
    sdk = from_binary(
        KafkaMessage(headers=dict(record.headers), key=record.key, value=record.value or b"")
    )
    assert sdk["id"] == event.id
    assert sdk["type"] == CitizenDied.event_type
    assert sdk["source"] == "/ikd/identity"


def test_tombstone_has_headers_and_no_value() -> None:
    tombstone = CloudEvent(
        type="id.go.mpp.profile.erased.v1", source="/s", data=None, key=PSEUDONYM
    )
    record = to_kafka(tombstone)
    assert record.value is None
    assert "content-type" not in dict(record.headers)
    assert from_kafka(record.key, None, record.headers).is_tombstone


@pytest.mark.parametrize("missing", ["ce_id", "ce_source", "ce_type", "ce_specversion"])
def test_missing_required_header_is_an_envelope_error(missing) -> None:
    record = to_kafka(_event())
    headers = [(k, v) for k, v in record.headers if k != missing]
    with pytest.raises(EnvelopeError, match=missing):
        from_kafka(record.key, record.value, headers)


def test_bad_time_and_bad_data_are_refused() -> None:
    record = to_kafka(_event())
    headers = [(k, b"yesterday" if k == "ce_time" else v) for k, v in record.headers]
    with pytest.raises(EnvelopeError):
        from_kafka(record.key, record.value, headers)
    with pytest.raises(InvalidEventData):
        decode(from_kafka(record.key, b'{"version": "x"}', record.headers), EVENTS)
    other = CloudEvent(type="id.go.mpp.unknown.v1", source="/s", data=b"{}")
    with pytest.raises(UnknownEventType):
        decode(other, EVENTS)
