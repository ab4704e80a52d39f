"""The batch append path against the log's reference definitions: the same leaf bytes as
`Entry.leaf_data()`, the same nodes and root as `merkle.CompactRange`, and the consumer's
record check accepting and refusing exactly what `from_kafka` + `decode` do."""

from __future__ import annotations

import datetime as dt
import uuid
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ikd_audit.domain.batch import EntryBatch, extend_tree, utc_text
from ikd_audit.domain.model import LookupAction, NewEntry
from ikd_audit.entrypoints.consumer import parse_record
from ikd_shared import merkle
from ikd_shared.consumer import SourceRecord
from ikd_shared.events import decode, to_cloudevent
from ikd_shared.events.access_v1 import EVENTS, AccessRecorded, Channel, Outcome
from ikd_shared.events.envelope import EnvelopeError, from_kafka, to_kafka
from ikd_shared.legal import LegalBasis
from ikd_shared.transparency import Entry, format_time

T0 = dt.datetime(2025, 3, 1, 8, 0, tzinfo=dt.UTC)

aware_times = st.datetimes(
    min_value=dt.datetime(2, 1, 1),
    max_value=dt.datetime(9998, 12, 31),
    timezones=st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=7)), ZoneInfo("UTC")]),
)
text = st.text(max_size=12)


@settings(deadline=None)
@given(aware_times)
def test_utc_text_is_format_time(value: dt.datetime) -> None:
    assert utc_text(value) == format_time(value)


def test_utc_text_refuses_a_naive_time_as_format_time_does() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        utc_text(dt.datetime(2025, 1, 1))


def reference(batch: EntryBatch, items: list[NewEntry]) -> list[bytes]:
    return [
        Entry(
            position=batch.first + i,
            access_id=e.access_id,
            occurred_at=e.occurred_at,
            recorded_at=batch.recorded_at,
            agency=e.agency,
            service=e.service,
            pseudonym=e.pseudonym,
            fields=e.fields,
            purpose=e.purpose,
            legal_basis=e.legal_basis,
            channel=e.channel,
            outcome=e.outcome,
            reason=e.reason,
        ).leaf_hash()
        for i, e in enumerate(items)
    ]


new_entries = st.builds(
    NewEntry,
    access_id=st.uuids(),
    occurred_at=aware_times,
    agency=text,
    service=st.none() | text,
    pseudonym=st.none() | text,
    fields=st.lists(text, max_size=4).map(tuple),
    purpose=st.none() | text,
    legal_basis=st.none() | text,
    channel=text,
    outcome=text,
    reason=st.none() | text,
)


@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.lists(new_entries, max_size=8), st.integers(0, 2**40), aware_times)
def test_batch_leaves_are_the_reference_leaf_hashes(
    items: list[NewEntry], first: int, recorded: dt.datetime
) -> None:
    batch = EntryBatch.of_entries(items, first, recorded)
    assert batch.leaves == reference(batch, items)
    assert [e.leaf_hash() for e in batch.entries()] == batch.leaves


def event(**changes: object) -> AccessRecorded:
    values: dict[str, object] = {
        "access_id": uuid.uuid4(),
        "occurred_at": T0,
        "agency": "polres-cirebon",
        "service": "skck",
        "pseudonym": "a" * 64,
        "fields": ["full_name", "address.street"],
        "purpose": "skck",
        "legal_basis": LegalBasis.PUBLIC_TASK,
        "channel": Channel.VIEW,
        "outcome": Outcome.SERVED,
    }
    values.update(changes)
    return AccessRecorded.model_validate(values)


def test_events_give_the_leaves_of_their_entries_with_enum_values() -> None:
    events = [
        event(),
        event(legal_basis=None, service=None, pseudonym=None, purpose=None, fields=[]),
        event(outcome=Outcome.DENIED, reason="not_in_policy", channel=Channel.PREFILL),
        event(
            occurred_at=dt.datetime(2025, 3, 1, 15, 0, tzinfo=dt.timezone(dt.timedelta(hours=7)))
        ),
    ]
    batch = EntryBatch.of_entries(events, 41, T0)
    as_entries = [
        NewEntry(
            access_id=e.access_id,
            occurred_at=e.occurred_at,
            agency=e.agency,
            service=e.service,
            pseudonym=e.pseudonym,
            fields=tuple(e.fields),
            purpose=e.purpose,
            legal_basis=e.legal_basis.value if e.legal_basis else None,
            channel=e.channel.value,
            outcome=e.outcome.value,
            reason=e.reason,
        )
        for e in events
    ]
    assert batch.leaves == reference(batch, as_entries)
    stored = batch.entries()
    assert stored[0].legal_basis == "public_task"
    assert type(stored[0].channel) is str


def test_a_lookup_entry_has_its_reference_leaf() -> None:
    lookup = NewEntry.lookup("auditor-1", "b" * 64, LookupAction.SEARCH, T0)
    batch = EntryBatch.of_entries([lookup], 0, T0)
    assert batch.leaves == reference(batch, [lookup])


@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.integers(0, 300), st.lists(st.integers(0, 40), max_size=6))
def test_extend_tree_completes_the_nodes_compact_range_does(start: int, sizes: list[int]) -> None:
    leaf = [merkle.leaf_hash(i.to_bytes(4, "big")) for i in range(start + sum(sizes))]
    reference_tree, tree = merkle.CompactRange(), merkle.CompactRange()
    for value in leaf[:start]:
        reference_tree.append(value)
        tree.append(value)
    at = start
    for n in sizes:
        expected = [node for value in leaf[at : at + n] for node in reference_tree.append(value)]
        nodes = extend_tree(tree, leaf[at : at + n])
        at += n
        assert nodes.pairs() == expected
        assert tree == reference_tree
        assert tree.root() == reference_tree.root()


def record(
    *,
    headers: list[tuple[str, bytes | None]] | None = None,
    key: bytes | None = b"k",
    value: bytes | None = None,
    access: AccessRecorded | None = None,
) -> SourceRecord:
    access = access or event()
    kafka = to_kafka(to_cloudevent(access, source="/x", key="k", event_id=str(access.access_id)))
    return SourceRecord(
        "access",
        0,
        0,
        key,
        kafka.value if value is None else value,
        tuple(kafka.headers if headers is None else headers),
    )


def reference_parse(r: SourceRecord) -> AccessRecorded:
    cloud = from_kafka(r.key, r.value, list(r.headers))
    access = decode(cloud, EVENTS)
    if str(access.access_id) != cloud.id:
        raise EnvelopeError("access_id differs from the CloudEvent id")
    return access


def good_headers() -> list[tuple[str, bytes | None]]:
    return list(record().headers)


def replaced(name: str, value: bytes | None) -> list[tuple[str, bytes | None]]:
    return [(n, value if n == name else v) for n, v in good_headers()]


@pytest.mark.parametrize(
    "case",
    [
        record(),
        record(key=None),
        record(key=b"\xff"),
        record(headers=[h for h in good_headers() if h[0] != "ce_id"]),
        record(headers=[h for h in good_headers() if h[0] != "ce_time"]),
        record(headers=replaced("ce_time", b"yesterday")),
        record(headers=replaced("ce_time", b"")),
        record(headers=replaced("ce_type", b"id.go.mpp.other.v1")),
        record(headers=replaced("ce_specversion", b"0.3")),
        record(headers=replaced("ce_source", b"\xff")),
        record(headers=replaced("ce_source", None)),
        record(headers=replaced("ce_id", str(uuid.uuid4()).encode())),
        record(headers=[(n.upper(), v) for n, v in good_headers()]),
        record(value=b"{not json"),
        record(value=b'{"access_id": "nope"}'),
        record(value=b""),
    ],
)
def test_record_check_accepts_and_refuses_what_the_envelope_and_schema_do(
    case: SourceRecord,
) -> None:
    try:
        expected: AccessRecorded | type[EnvelopeError] = reference_parse(case)
    except EnvelopeError:
        expected = EnvelopeError
    if expected is EnvelopeError:
        with pytest.raises(EnvelopeError):
            parse_record(case)
    else:
        assert parse_record(case) == expected
