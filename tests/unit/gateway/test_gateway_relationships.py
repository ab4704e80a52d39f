"""Relationships decide whom an agency holds: the fold, the consent path and the retention sweep
over in-memory units of work."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass

import pytest

from ikd_gateway.domain.model import SourcePosition, agency_relationships, project_profile
from ikd_gateway.service_layer.stream import (
    ConsentRecord,
    ProfileRecord,
    apply_consents,
    apply_profile,
    apply_profiles,
    sweep_retention,
)
from ikd_gateway.service_layer.unit_of_work import Endpoint, WebhookMessage
from ikd_shared.events.access_v1 import Channel
from ikd_shared.events.profile_v1 import (
    CitizenDied,
    ProfileUpdated,
    ProfileVerified,
    Relationship,
    RelationshipKind,
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
    relationship,
    verified,
)
from tests.support.gateway_fakes import FakeUnitOfWork, Store, assert_only_a_floor

POLRES = POLICY.agency("polres-cirebon")
SKCK = POLRES.service("skck")
SIM = POLRES.service("sim-driving-licence")
assert SKCK is not None
assert SIM is not None


@dataclass
class Clock:
    now: dt.datetime = NOW

    def __call__(self) -> dt.datetime:
        return self.now


def changed(
    event: ProfileVerified | RelationshipsChanged,
    version: int,
    relationships: list[Relationship],
) -> RelationshipsChanged:
    return RelationshipsChanged(
        pseudonym=event.pseudonym,
        version=version,
        profile=event.profile,
        verified_at=event.verified_at,
        changed_at=NOW,
        relationships=relationships,
    )


def rec(event: object, offset: int = 0) -> ProfileRecord:
    assert isinstance(event, ProfileVerified | ProfileUpdated | RelationshipsChanged | CitizenDied)
    return ProfileRecord(str(uuid.uuid4()), event.pseudonym, event, SourcePosition(0, offset))


async def test_a_citizen_without_a_relationship_leaves_no_trace() -> None:
    store = Store()
    event = verified(profile(1), relationships=[relationship("bank-bjb", "bjb-savings-account")])
    [result] = await apply_profiles(FakeUnitOfWork(store), context("polres-cirebon"), [rec(event)])
    assert (result.applied, result.reason) == (False, "not related")
    assert store.views == {}
    assert store.outbox == []
    assert store.agency_records == []
    assert store.messages == {}


async def test_a_service_request_holds_exactly_that_services_fields_and_only_its_own() -> None:
    store = Store()
    skck = relationship("polres-cirebon", "skck")
    elsewhere = relationship("dinsos-cirebon", "social-assistance")
    event = verified(profile(2), relationships=[skck, elsewhere])
    await apply_profile(FakeUnitOfWork(store), context("polres-cirebon"), rec(event))
    row = store.views[event.pseudonym]
    assert set(row.data) == set(SKCK.fields), "skck's fields, not the driving licence's"
    assert "blood_type" not in row.data
    assert row.relationships == (skck,), "never another agency's relationships"
    assert all(until == skck.expires_at for until in row.expires.values())
    [published] = store.agency_records
    assert published.event is not None
    assert [grant.service for grant in published.event.services] == ["skck"]


async def test_the_last_relationship_ending_purges_the_row_like_a_revoked_consent() -> None:
    store = Store()
    ctx = context("polres-cirebon")
    endpoint = Endpoint(uuid.uuid4(), "https://polres.example/hook", "skck", "whsec_x", True)
    store.endpoints[endpoint.id] = endpoint
    skck = relationship("polres-cirebon", "skck")
    event = verified(profile(3), relationships=[skck])
    await apply_profile(FakeUnitOfWork(store), ctx, rec(event))
    assert [m.status for m in store.messages.values()] == ["pending"]

    ended = changed(event, 2, [relationship("dinsos-cirebon", "social-assistance")])
    [result] = await apply_profiles(FakeUnitOfWork(store), ctx, [rec(ended, 1)])
    assert (result.applied, result.reason) == (True, "purged")
    assert_only_a_floor(store.views.get(event.pseudonym))
    assert store.views[event.pseudonym].version == 2
    assert [m.status for m in store.messages.values()] == ["cancelled"]
    assert store.agency_records[-1].event is None, "the agency topic says: purged"
    assert store.disclosed == {}
    purge = [e for e in store.outbox if e.channel is Channel.AGENCY_TOPIC][-1]
    assert (purge.reason, purge.fields) == ("purged", [])


async def test_a_new_relationship_is_a_new_version_folded_like_an_update() -> None:
    store = Store()
    ctx = context("polres-cirebon")
    event = verified(profile(4), relationships=[relationship("polres-cirebon", "skck")])
    await apply_profile(FakeUnitOfWork(store), ctx, rec(event))
    both = [*event.relationships, relationship("polres-cirebon", "sim-driving-licence")]
    await apply_profile(FakeUnitOfWork(store), ctx, rec(changed(event, 2, both), 1))
    row = store.views[event.pseudonym]
    assert (row.version, set(row.data)) == (2, SKCK.fields | SIM.fields)
    record = store.agency_records[-1].event
    assert record is not None
    assert [grant.service for grant in record.services] == ["sim-driving-licence", "skck"]
    assert set(record.changed_fields) == SIM.fields, "what the new service now sees"


async def test_an_expired_relationship_is_purged_by_the_retention_sweep() -> None:
    store = Store()
    clock = Clock()
    ctx = context("polres-cirebon", clock=clock)
    short = relationship("polres-cirebon", "skck", expires_at=NOW + dt.timedelta(days=2))
    longer = relationship(
        "polres-cirebon", "sim-driving-licence", expires_at=NOW + dt.timedelta(days=5)
    )
    event = verified(profile(5), relationships=[short, longer])
    await apply_profile(FakeUnitOfWork(store), ctx, rec(event))
    assert await sweep_retention(FakeUnitOfWork(store), ctx) == 0, "nothing due yet"

    clock.now = NOW + dt.timedelta(days=3)
    assert await sweep_retention(FakeUnitOfWork(store), ctx) == 1
    row = store.views[event.pseudonym]
    assert set(row.data) == set(SIM.fields), "skck's own fields went with its request"
    assert row.relationships == (longer,)

    clock.now = NOW + dt.timedelta(days=6)
    assert await sweep_retention(FakeUnitOfWork(store), ctx) == 1
    assert_only_a_floor(store.views.get(event.pseudonym))
    assert store.agency_records[-1].event is None
    published = len(store.agency_records)

    clock.now += ctx.version_floor - dt.timedelta(seconds=1)
    assert await sweep_retention(FakeUnitOfWork(store), ctx) == 0, "the floor's time not yet up"
    clock.now += dt.timedelta(seconds=1)
    assert await sweep_retention(FakeUnitOfWork(store), ctx) == 1
    assert store.views == {}, "the floor's time is up: nothing of the citizen is left"
    assert len(store.agency_records) == published, "the purge was already published"


async def test_a_registration_holds_its_services_fields_until_it_expires() -> None:
    store = Store()
    clock = Clock()
    ctx = context("dinsos-cirebon", clock=clock)
    registered = relationship(
        "dinsos-cirebon",
        "social-assistance",
        kind=RelationshipKind.REGISTRATION,
        expires_at=NOW + dt.timedelta(days=1),
    )
    event = verified(profile(6), relationships=[registered])
    await apply_profile(FakeUnitOfWork(store), ctx, rec(event))
    service = POLICY.agency("dinsos-cirebon").service("social-assistance")
    assert service is not None
    assert set(store.views[event.pseudonym].data) == set(service.fields)
    clock.now = NOW + dt.timedelta(days=1)
    await sweep_retention(FakeUnitOfWork(store), ctx)
    assert_only_a_floor(store.views.get(event.pseudonym))


async def test_a_consent_relationship_grants_nothing_until_the_consent_arrives() -> None:
    store = Store()
    ctx = context("bank-bjb")
    granted_service = POLICY.agency("bank-bjb").service("bjb-savings-account")
    assert granted_service is not None
    pseudonym = pseudonym_of(profile(7))
    given = consent(pseudonym, "bank-bjb", "bjb-savings-account", ["full_name", "nik"])
    mirrored = relationship("bank-bjb", "bjb-savings-account", relationship_id=given.consent_id)
    event = verified(profile(7), relationships=[mirrored])
    await apply_profile(FakeUnitOfWork(store), ctx, rec(event))
    row = store.views[pseudonym]
    assert (dict(row.data), row.relationships) == ({}, (mirrored,))
    assert store.agency_records == [], "nothing to disclose yet"

    result = await apply_consents(
        FakeUnitOfWork(store),
        ctx,
        ConsentRecord("c-1", pseudonym, consent_event(pseudonym, 1, [given])),
    )
    assert result.refetch == SourcePosition(0, 0), "re-read the record to add the fields"
    await apply_profile(FakeUnitOfWork(store), ctx, rec(event), reapply=True)
    assert set(store.views[pseudonym].data) == {"full_name", "nik"}


async def test_a_consent_without_its_relationship_grants_nothing() -> None:
    """The consent topic says which fields; the relationship says the agency may hold any."""
    store = Store()
    ctx = context("bank-bjb")
    pseudonym = pseudonym_of(profile(8))
    given = consent(pseudonym, "bank-bjb", "bjb-kur-loan", ["full_name"])
    await apply_consents(
        FakeUnitOfWork(store),
        ctx,
        ConsentRecord("c-1", pseudonym, consent_event(pseudonym, 1, [given])),
    )
    other = relationship("bank-bjb", "bjb-savings-account")  # a consent for another service
    await apply_profile(
        FakeUnitOfWork(store), ctx, rec(verified(profile(8), relationships=[other]))
    )
    assert dict(store.views[pseudonym].data) == {}


async def test_death_of_a_citizen_never_held_stores_nothing() -> None:
    store = Store()
    pseudonym = pseudonym_of(profile(9))
    died = CitizenDied(pseudonym=pseudonym, version=3, date_of_death=NOW.date(), recorded_at=NOW)
    [result] = await apply_profiles(FakeUnitOfWork(store), context("polres-cirebon"), [rec(died)])
    assert result.reason == "not held"
    assert store.views == {}


async def test_pending_webhooks_of_a_purged_citizen_are_cancelled_on_relationship_expiry() -> None:
    store = Store()
    clock = Clock()
    ctx = context("polres-cirebon", clock=clock)
    skck = relationship("polres-cirebon", "skck", expires_at=NOW + dt.timedelta(hours=1))
    event = verified(profile(10), relationships=[skck])
    await apply_profile(FakeUnitOfWork(store), ctx, rec(event))
    message = WebhookMessage(uuid.uuid4(), uuid.uuid4(), event.pseudonym, 1, "t", ("nik",))
    store.messages[message.id] = message
    clock.now = NOW + dt.timedelta(hours=2)
    await sweep_retention(FakeUnitOfWork(store), ctx)
    assert store.messages[message.id].status == "cancelled"


def test_project_profile_keeps_only_this_agencys_relationships_in_force() -> None:
    ours = relationship("polres-cirebon", "skck")
    expired = relationship("polres-cirebon", "sim-driving-licence", expires_at=NOW)
    theirs = relationship("bank-bjb", "bjb-kur-loan")
    assert agency_relationships(POLRES, [theirs, expired, ours], NOW) == (ours,)
    assert (
        project_profile(
            agency=POLRES,
            pseudonym=pseudonym_of(profile(11)),
            version=1,
            profile=profile(11),
            verified_at=NOW,
            relationships=[theirs, expired],
            consents=(),
            now=NOW,
        )
        is None
    )


async def test_another_agencys_consent_leaves_no_trace_of_the_citizen() -> None:
    store = Store()
    ctx = context("polres-cirebon")
    pseudonym = pseudonym_of(profile(12))
    given = consent(pseudonym, "bank-bjb", "bjb-savings-account", ["full_name"])
    event = consent_event(pseudonym, 1, [given])
    await apply_consents(FakeUnitOfWork(store), ctx, ConsentRecord("c-1", pseudonym, event))
    assert store.consents == {}, "not even an empty set: it would say the citizen exists"
    assert store.views == {}
    # The agency's own consent set, once emptied by a revocation, goes too.
    bank = context("bank-bjb")
    await apply_consents(FakeUnitOfWork(store), bank, ConsentRecord("c-2", pseudonym, event))
    assert pseudonym in store.consents
    revoked = consent_event(pseudonym, 2, [], revoked=given)
    await apply_consents(FakeUnitOfWork(store), bank, ConsentRecord("c-3", pseudonym, revoked))
    assert store.consents == {}


def _suffix(serial: int) -> list[ProfileVerified | RelationshipsChanged]:
    """v1 and v2 relate the citizen to polres-cirebon, v3 ends that (only another agency's)."""
    first = verified(profile(serial), relationships=[relationship("polres-cirebon", "skck")])
    second = changed(first, 2, [relationship("polres-cirebon", "skck")])
    return [first, second, changed(first, 3, [relationship("dinsos-cirebon", "social-assistance")])]


@pytest.mark.parametrize("batched", [False, True], ids=["one by one", "in one batch"])
async def test_a_suffix_sent_again_after_the_relationship_ended_stores_nothing(
    batched: bool,
) -> None:
    """identity's relay re-sending v1 v2 v3 after a takeover (new offsets, new ids): the older
    versions find the floor v3 left and are refused, not stored, audited or pushed again."""
    store = Store()
    ctx = context("polres-cirebon")
    endpoint = Endpoint(uuid.uuid4(), "https://polres.example/hook", "skck", "whsec_x", True)
    store.endpoints[endpoint.id] = endpoint
    events = _suffix(13)
    pseudonym = events[0].pseudonym
    for offset, event in enumerate(events):
        await apply_profile(FakeUnitOfWork(store), ctx, rec(event, offset))
    assert_only_a_floor(store.views.get(pseudonym))
    before = (list(store.outbox), list(store.agency_records), dict(store.messages))

    again = [rec(event, 3 + offset) for offset, event in enumerate(events)]
    if batched:
        results = await apply_profiles(FakeUnitOfWork(store), ctx, again)
    else:
        results = [await apply_profile(FakeUnitOfWork(store), ctx, r) for r in again]

    assert [r.reason for r in results] == ["stale", "stale", "stale"]
    assert_only_a_floor(store.views.get(pseudonym))
    assert store.views[pseudonym].version == 3
    assert (store.outbox, store.agency_records, store.messages) == before, "nothing served"
    assert store.disclosed == {}


async def test_a_floor_refuses_older_versions_after_a_death_too() -> None:
    store = Store()
    ctx = context("polres-cirebon")
    first, second, ended = _suffix(14)
    died = CitizenDied(
        pseudonym=first.pseudonym, version=4, date_of_death=NOW.date(), recorded_at=NOW
    )
    results = await apply_profiles(
        FakeUnitOfWork(store), ctx, [rec(first), rec(ended, 1), rec(died, 2), rec(second, 3)]
    )
    assert [r.reason for r in results] == ["stored", "purged", "not held", "stale"]
    assert_only_a_floor(store.views.get(first.pseudonym))
    assert store.views[first.pseudonym].version == 4, "the death only raises the floor"


async def test_a_newer_version_relating_the_citizen_again_replaces_the_floor() -> None:
    store = Store()
    ctx = context("polres-cirebon")
    first, _, ended = _suffix(15)
    await apply_profiles(FakeUnitOfWork(store), ctx, [rec(first), rec(ended, 1)])
    assert_only_a_floor(store.views.get(first.pseudonym))
    back = changed(first, 4, [relationship("polres-cirebon", "skck")])
    [result] = await apply_profiles(FakeUnitOfWork(store), ctx, [rec(back, 2)])
    assert result.reason == "stored"
    row = store.views[first.pseudonym]
    assert (row.version, row.is_floor, set(row.data)) == (4, False, set(SKCK.fields))


async def test_a_citizen_never_held_gets_no_floor() -> None:
    store = Store()
    ctx = context("polres-cirebon")
    _, _, ended = _suffix(16)
    [result] = await apply_profiles(FakeUnitOfWork(store), ctx, [rec(ended)])
    assert result.reason == "not related"
    assert store.views == {}, "a floor only where the agency held the citizen"


async def test_a_floor_rises_with_newer_versions_and_keeps_its_end() -> None:
    """An older version delivered after a newer one is refused however far the floor is below
    the newest; the floor still goes when its time after the purge is up."""
    store = Store()
    clock = Clock()
    ctx = context("polres-cirebon", clock=clock)
    first, _, ended = _suffix(17)
    await apply_profiles(FakeUnitOfWork(store), ctx, [rec(first), rec(ended, 1)])
    clock.now = NOW + dt.timedelta(days=1)
    later = changed(first, 5, [relationship("dinsos-cirebon", "social-assistance")])
    [result] = await apply_profiles(FakeUnitOfWork(store), ctx, [rec(later, 2)])
    assert result.reason == "not related"
    back = changed(first, 4, [relationship("polres-cirebon", "skck")])
    [result] = await apply_profiles(FakeUnitOfWork(store), ctx, [rec(back, 3)])
    assert result.reason == "stale"
    floor = store.views[first.pseudonym]
    assert_only_a_floor(floor)
    assert (floor.version, floor.floor_until) == (5, NOW + ctx.version_floor)
