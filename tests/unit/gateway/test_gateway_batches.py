"""Property: applying the profile stream in batches leaves what applying it record by record
leaves (views, consents, idempotency records, the access event of the current row, pending
webhooks), however the stream is cut into batches."""

from __future__ import annotations

import itertools
import uuid
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ikd_gateway.domain.model import SourcePosition
from ikd_gateway.service_layer.stream import (
    ConsentRecord,
    ProfileRecord,
    apply_consents,
    apply_profiles,
)
from ikd_gateway.service_layer.unit_of_work import Endpoint
from ikd_shared.events.access_v1 import AccessRecorded, Channel
from ikd_shared.events.profile_v1 import (
    CitizenDied,
    CredentialRevoked,
    ProfileUpdated,
    RelationshipsChanged,
)
from tests.support.gateway_factories import (
    NOW,
    POLICY,
    consent,
    consent_event,
    context,
    profile,
    pseudonym_of,
    related_everywhere,
)
from tests.support.gateway_fakes import FakeUnitOfWork, Store, assert_only_a_floor

CITIZENS = [pseudonym_of(profile(serial)) for serial in (1, 2, 3)]
ops = st.tuples(
    st.sampled_from(
        ["store", "store", "store", "unrelated", "shared", "died", "revoked", "tombstone", "again"]
    ),
    st.integers(0, 2),
    st.integers(1, 6),
)


def build(draw: list[tuple[str, int, int]]) -> list[ProfileRecord]:
    records: list[ProfileRecord] = []
    for offset, (kind, who, version) in enumerate(draw):
        pseudonym = CITIZENS[who]
        event: Any
        if kind == "again" and records:
            records.append(records[version % len(records)])
            continue
        if kind == "tombstone":
            event = None
        elif kind == "died":
            event = CitizenDied(
                pseudonym=pseudonym, version=version, date_of_death=NOW.date(), recorded_at=NOW
            )
        elif kind == "revoked":
            event = CredentialRevoked(
                pseudonym=pseudonym, version=version, reason="lost", revoked_at=NOW
            )
        elif kind == "shared":  # a relationship started: the profile again, whole
            event = RelationshipsChanged(
                pseudonym=pseudonym,
                version=version,
                profile=profile(who + 1, street=f"Jl. Versi {version}", occupation=f"K{offset}"),
                verified_at=NOW,
                changed_at=NOW,
                relationships=related_everywhere(),
            )
        else:  # an update of a citizen related to every agency, or to none ("unrelated")
            event = ProfileUpdated(
                pseudonym=pseudonym,
                version=version,
                profile=profile(who + 1, street=f"Jl. Versi {version}", occupation=f"K{offset}"),
                verified_at=NOW,
                updated_at=NOW,
                changed_fields=["address.street"],
                relationships=[] if kind == "unrelated" else related_everywhere(),
            )
        records.append(
            ProfileRecord(str(uuid.uuid4()), pseudonym, event, SourcePosition(0, offset))
        )
    return records


async def seeded(agency: str) -> Store:
    """A store with a webhook endpoint per service and a consent for the first citizen."""
    store = Store()
    for service in POLICY.agency(agency).services:
        endpoint = Endpoint(
            id=uuid.uuid4(),
            url="https://agency.example/hook",
            service=service.code,
            secret="whsec_" + "A" * 44,
            enabled=True,
        )
        store.endpoints[endpoint.id] = endpoint
    chosen = POLICY.agency(agency).services[-1]
    given_consent = consent(CITIZENS[0], agency, chosen.code, sorted(chosen.fields))
    await apply_consents(
        FakeUnitOfWork(store),
        context(agency),
        ConsentRecord("c-1", CITIZENS[0], consent_event(CITIZENS[0], 1, [given_consent])),
    )
    return store


def view_access(store: Store) -> list[AccessRecorded]:
    """The access events of view writes (agency-topic publications have their own)."""
    return [event for event in store.outbox if event.channel is Channel.VIEW]


def last_access(store: Store) -> dict[str, str]:
    last: dict[str, str] = {}
    for event in view_access(store):
        assert event.pseudonym is not None
        assert event.correlation_id is not None
        last[event.pseudonym] = event.correlation_id
    return last


def pending(store: Store) -> dict[str, int]:
    found: dict[str, int] = {}
    for message in store.messages.values():
        if message.status == "pending":
            found[message.pseudonym] = max(found.get(message.pseudonym, 0), message.version)
    return found


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    stream=st.lists(ops, min_size=1, max_size=30),
    cuts=st.lists(st.integers(1, 30), max_size=6),
    agency=st.sampled_from(["polres-cirebon", "bank-bjb"]),
)
# A purge deleted the row and its version with it: the older v1 was then stored as new.
@example(
    stream=[("store", 0, 2), ("unrelated", 0, 3), ("store", 0, 1)], cuts=[1], agency="bank-bjb"
)
async def test_batches_leave_what_one_by_one_leaves(
    stream: list[tuple[str, int, int]], cuts: list[int], agency: str
) -> None:
    records = build(stream)
    ctx = context(agency)
    one_by_one = await seeded(agency)
    batched = one_by_one.snapshot()
    for record in records:
        await apply_profiles(FakeUnitOfWork(one_by_one), ctx, [record])
    bounds = sorted({0, len(records), *(c for c in cuts if c < len(records))})
    for start, end in itertools.pairwise(bounds):
        await apply_profiles(FakeUnitOfWork(batched), ctx, records[start:end])

    assert batched.views == one_by_one.views
    assert batched.consents == one_by_one.consents
    assert batched.processed == one_by_one.processed
    holding = {p for p, row in batched.views.items() if row.data}
    audited, audited_one_by_one = last_access(batched), last_access(one_by_one)
    assert {p: audited[p] for p in holding} == {p: audited_one_by_one[p] for p in holding}
    ids = [e.correlation_id for e in view_access(batched)]
    assert len(ids) == len(set(ids)), "a view write audited twice"
    assert set(ids) <= {e.correlation_id for e in view_access(one_by_one)}
    assert batched.disclosed == one_by_one.disclosed, "the agency topic ends the same"
    assert pending(batched) == pending(one_by_one)
    assert all(not row.erased or not row.data for row in batched.views.values())
    for row in batched.views.values():
        if row.is_floor:
            assert_only_a_floor(row)
        elif not row.erased:
            assert row.version == newest_since_held(records)[row.pseudonym], "no older version"


def newest_since_held(records: list[ProfileRecord]) -> dict[str, int]:
    """Per citizen, the newest version delivered since its first version that the agency could
    hold (no older one may be held after a newer one: a purge leaves a floor)."""
    newest: dict[str, int] = {}
    seen: set[str] = set()
    for record in records:
        event = record.event
        if record.event_id in seen or event is None:
            continue
        seen.add(record.event_id)
        related = isinstance(event, ProfileUpdated | RelationshipsChanged) and event.relationships
        if related or record.pseudonym in newest:
            newest[record.pseudonym] = max(newest.get(record.pseudonym, 0), event.version)
    return newest


async def test_a_purge_after_an_older_verification_in_the_same_batch_wins() -> None:
    ctx = context("polres-cirebon")
    store = await seeded("polres-cirebon")
    records = build([("store", 0, 1), ("store", 0, 3), ("died", 0, 4), ("store", 0, 2)])
    results = await apply_profiles(FakeUnitOfWork(store), ctx, records)
    assert [r.reason for r in results] == ["stored", "stored", "erased", "stale"]
    row = store.views[CITIZENS[0]]
    assert (row.version, row.erased, dict(row.data)) == (4, True, {})
    assert store.outbox == [], "nothing written that could be served, nothing audited"
    assert CITIZENS[0] not in store.consents
    assert {(ctx.consumer, r.event_id) for r in records} <= store.processed
