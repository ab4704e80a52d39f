"""CloudEvents 1.0 over Kafka in binary content mode.

Attributes travel as `ce_*` headers, the data as the record value, `content-type` as a header,
and the `partitionkey` extension as the record key (the citizen pseudonym, never a NIK).
A tombstone is a record with headers and no value.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from ikd_shared import codec

SPEC_VERSION = "1.0"
JSON = "application/json"
_REQUIRED = ("id", "source", "type", "specversion")
_CORE = ("id", "source", "type", "specversion", "time", "subject", "dataschema")

KafkaHeaders = list[tuple[str, bytes]]


class EnvelopeError(ValueError):
    """A record that is not a CloudEvent in binary mode."""


@dataclass(frozen=True, slots=True)
class CloudEvent:
    type: str
    source: str
    data: bytes | None
    key: str | None = None
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    time: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    subject: str | None = None
    dataschema: str | None = None
    datacontenttype: str = JSON
    extensions: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_tombstone(self) -> bool:
        return self.data is None

    def json(self) -> object:
        if self.data is None:
            raise EnvelopeError("a tombstone has no data")
        try:
            return codec.loads(self.data)
        except codec.JSONDecodeError as error:
            raise EnvelopeError(f"data is not JSON: {error}") from None


@dataclass(frozen=True, slots=True)
class KafkaRecord:
    key: bytes | None
    value: bytes | None
    headers: KafkaHeaders


def _format_time(value: dt.datetime) -> str:
    if value.tzinfo is None:
        raise EnvelopeError("event time must be timezone-aware")
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def to_kafka(event: CloudEvent) -> KafkaRecord:
    headers: KafkaHeaders = [
        ("ce_specversion", SPEC_VERSION.encode()),
        ("ce_id", event.id.encode()),
        ("ce_source", event.source.encode()),
        ("ce_type", event.type.encode()),
        ("ce_time", _format_time(event.time).encode()),
    ]
    if event.subject is not None:
        headers.append(("ce_subject", event.subject.encode()))
    if event.dataschema is not None:
        headers.append(("ce_dataschema", event.dataschema.encode()))
    for name, value in event.extensions.items():
        if name in _CORE or not name.isalnum() or not name.islower():
            raise EnvelopeError(f"invalid extension attribute name {name!r}")
        headers.append((f"ce_{name}", value.encode()))
    if event.data is not None:
        headers.append(("content-type", event.datacontenttype.encode()))
    key = event.key.encode() if event.key is not None else None
    return KafkaRecord(key=key, value=event.data, headers=headers)


def _decode_headers(headers: Iterable[tuple[str, bytes | None]]) -> dict[str, str]:
    decoded: dict[str, str] = {}
    for name, raw in headers:
        if raw is None:
            continue
        try:
            decoded[name.lower()] = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise EnvelopeError(f"header {name} is not UTF-8") from None
    return decoded


def from_kafka(
    key: bytes | None, value: bytes | None, headers: Sequence[tuple[str, bytes | None]]
) -> CloudEvent:
    """Read a binary-mode CloudEvent from a Kafka record; raise EnvelopeError if it is not one."""
    attrs = _decode_headers(headers)
    for name in _REQUIRED:
        if f"ce_{name}" not in attrs:
            raise EnvelopeError(f"missing header ce_{name}")
    if attrs["ce_specversion"] != SPEC_VERSION:
        raise EnvelopeError(f"unsupported specversion {attrs['ce_specversion']}")
    time_header = attrs.get("ce_time")
    try:
        time = (
            dt.datetime.fromisoformat(time_header.replace("Z", "+00:00"))
            if time_header
            else dt.datetime.now(dt.UTC)
        )
    except ValueError:
        raise EnvelopeError(f"ce_time is not RFC 3339: {time_header}") from None
    extensions = {
        name[3:]: val
        for name, val in attrs.items()
        if name.startswith("ce_") and name[3:] not in _CORE
    }
    try:
        decoded_key = key.decode("utf-8") if key is not None else None
    except UnicodeDecodeError:
        raise EnvelopeError("record key is not UTF-8") from None
    return CloudEvent(
        id=attrs["ce_id"],
        source=attrs["ce_source"],
        type=attrs["ce_type"],
        time=time,
        subject=attrs.get("ce_subject"),
        dataschema=attrs.get("ce_dataschema"),
        datacontenttype=attrs.get("content-type", JSON),
        data=value,
        key=decoded_key,
        extensions=extensions,
    )
