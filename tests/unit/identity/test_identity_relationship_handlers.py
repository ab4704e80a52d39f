"""Relationships through the handlers and fakes: what starts, renews, ends, and is published."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
from pydantic import ValidationError

from ikd_dev.issuer import mint_credential
from ikd_dev.synthetic import citizen, generate_citizens
from ikd_identity.domain import commands
from ikd_identity.domain.errors import (
    CitizenNotFound,
    CredentialRejected,
    RegistrationNotActive,
    RegistrationNotFound,
    RegistrationRefused,
    ServicesRequired,
    UnknownService,
)
from ikd_identity.service_layer import handlers, registrations
from ikd_shared.credentials import Purpose
from ikd_shared.events.profile_v1 import (
    TOMBSTONE_TYPE,
    ProfileUpdated,
    ProfileVerified,
    RelationshipKind,
    RelationshipsChanged,
)
from ikd_shared.events.topics import PROFILE
from ikd_shared.legal import LegalBasis
from ikd_shared.policy import ServicePolicy

FRONT_DESK = "mpp-kabupaten-cirebon"  # the MPP itself: no agency of the policy
THREE_AGENCIES = ["skck", "social-assistance", "bjb-savings-account"]


def _mint(key, profile, purpose=Purpose.VERIFICATION, **kwargs) -> str:
    return mint_credential(
        key, kid="k1", issuer="dukcapil", purpose=purpose, profile=profile, **kwargs
    )


def _records(state, kind: type | None = None) -> list:
    decoded = []
    for message in state.outbox:
        if message.topic != PROFILE.name or message.payload is None:
            continue
        for model in (ProfileVerified, ProfileUpdated, RelationshipsChanged):
            if message.ce_type == model.event_type:
                decoded.append(model.model_validate_json(message.payload))
    return [d for d in decoded if kind is None or isinstance(d, kind)]


async def _verify(deps, key, profile, *, agency=FRONT_DESK, services=THREE_AGENCIES):
    return await handlers.verify_credential(
        commands.VerifyCredential(
            _mint(key, profile),
            agency=agency,
            services=tuple(services) if services is not None else None,
            client_id="front-desk-1",
        ),
        deps,
    )


async def test_front_desk_verification_starts_a_request_at_each_agency_in_one_record(
    deps, state, issuer_key, clock
) -> None:
    result = await _verify(deps, issuer_key, citizen(2, 0))
    (record,) = _records(state)
    assert isinstance(record, ProfileVerified)
    assert record.verified_by == FRONT_DESK
    by_service = {r.service: r for r in record.relationships}
    assert sorted(by_service) == sorted(THREE_AGENCIES)
    assert {r.agency for r in record.relationships} == {
        "polres-cirebon",
        "dinsos-cirebon",
        "bank-bjb",
    }
    assert {r.kind for r in record.relationships} == {RelationshipKind.SERVICE_REQUEST}
    # Expiry from each service's retention; the consent-based service is recorded all the same
    # (the gateway grants it nothing without a consent).
    for service, days, basis in [
        ("skck", 1825, LegalBasis.LEGAL_OBLIGATION),
        ("social-assistance", 1825, LegalBasis.PUBLIC_TASK),
        ("bjb-savings-account", 1825, LegalBasis.CONSENT),
    ]:
        assert by_service[service].legal_basis is basis
        assert by_service[service].starts_at == clock.now
        assert by_service[service].expires_at == clock.now + dt.timedelta(days=days)
    assert sorted(r.relationship_id for r in result.relationships) == sorted(
        r.relationship_id for r in record.relationships
    )
    assert {r.recorded_by for r in state.relationships.values()} == {"front-desk-1"}


@pytest.mark.parametrize(
    ("agency", "services", "error", "code"),
    [
        (FRONT_DESK, ["skck", "no-such-service"], UnknownService, "unknown_service"),
        (FRONT_DESK, None, ServicesRequired, "services_required"),
        ("polres-cirebon", None, ServicesRequired, "services_required"),  # two services
    ],
)
async def test_refused_services_store_nothing_and_leave_the_credential_unused(
    deps, state, issuer_key, agency, services, error, code
) -> None:
    profile = citizen(2, 1)
    credential = _mint(issuer_key, profile)
    with pytest.raises(error) as raised:
        await handlers.verify_credential(
            commands.VerifyCredential(credential, agency, tuple(services) if services else None),
            deps,
        )
    assert (raised.value.code, raised.value.status_code) == (code, 400)
    if error is UnknownService:
        assert raised.value.extras == {"unknown_services": ["no-such-service"]}
    assert (state.commits, state.outbox, state.profiles, state.jtis) == (0, [], {}, set())
    # The same credential still works once the services are right.
    result = await handlers.verify_credential(
        commands.VerifyCredential(credential, agency, ("skck",)), deps
    )
    assert [r.service for r in result.relationships] == ["skck"]


async def test_agency_counter_of_one_service_defaults_to_it(deps, state, issuer_key) -> None:
    result = await _verify(deps, issuer_key, citizen(2, 2), agency="kejari-cirebon", services=None)
    assert [(r.agency, r.service) for r in result.relationships] == [
        ("kejari-cirebon", "traffic-fine")
    ]


async def test_renewal_replaces_and_an_expired_request_is_followed_by_a_new_one(
    deps, state, issuer_key, clock
) -> None:
    profile = citizen(2, 3)
    first = await _verify(deps, issuer_key, profile, services=["skck", "skck"])
    assert len(first.relationships) == 1
    clock.now += dt.timedelta(days=30)
    renewed = await _verify(deps, issuer_key, profile, services=["skck", "passport"])
    skck = next(r for r in renewed.relationships if r.service == "skck")
    assert skck.relationship_id == first.relationships[0].relationship_id
    assert skck.expires_at == clock.now + dt.timedelta(days=1825)
    assert len(state.relationships) == 2

    clock.now += dt.timedelta(days=1826)  # skck expired; the passport request (3650 d) not
    later = await _verify(deps, issuer_key, profile, services=["skck"])
    assert later.relationships[0].relationship_id != skck.relationship_id
    record = _records(state)[-1]
    assert sorted(r.service for r in record.relationships) == ["passport", "skck"]
    assert len(state.relationships) == 3


async def test_feed_updates_and_the_bulk_feed_carry_the_relationships(
    deps, state, issuer_key, clock
) -> None:
    people = generate_citizens(3, seed=8)
    await _verify(deps, issuer_key, people[0], services=["skck"])
    await handlers.update_profile(
        commands.UpdateProfile(people[0].nik, {"occupation": "Guru"}), deps
    )
    update = _records(state, ProfileUpdated)[-1]
    assert [r.service for r in update.relationships] == ["skck"]

    moved = people[0].model_copy(update={"occupation": "Petani"})
    await handlers.load_profiles(commands.LoadProfiles([moved, *people[1:]]), deps)
    bulk = _records(state)[-3:]
    assert [type(e) for e in bulk] == [ProfileUpdated, ProfileVerified, ProfileVerified]
    assert [[r.service for r in e.relationships] for e in bulk] == [["skck"], [], []]


async def test_consents_are_published_as_relationships(deps, state, issuer_key, clock) -> None:
    profile = citizen(2, 4)
    await _verify(deps, issuer_key, profile, services=["bjb-savings-account"])
    terms = commands.ConsentTerms(
        agency="bank-bjb",
        service="bjb-savings-account",
        fields=["full_name"],
        purpose_code="account-opening",
        purpose_text="Pembukaan rekening",
        expires_at=clock.now + dt.timedelta(days=30),
    )
    consent = await handlers.grant_consent(
        commands.GrantConsent(_mint(issuer_key, profile, Purpose.CONSENT), terms), deps
    )
    granted = _records(state)[-1]
    assert isinstance(granted, RelationshipsChanged)
    assert granted.version == 2
    (started,) = granted.started
    assert (started.relationship_id, started.kind, started.legal_basis) == (
        consent.consent_id,
        RelationshipKind.CONSENT,
        LegalBasis.CONSENT,
    )
    assert (started.starts_at, started.expires_at) == (consent.starts_at, consent.expires_at)
    assert sorted(r.kind.value for r in granted.relationships) == ["consent", "service_request"]

    await handlers.revoke_consent(
        commands.RevokeConsent(_mint(issuer_key, profile, Purpose.CONSENT), consent.consent_id),
        deps,
    )
    revoked = _records(state)[-1]
    assert isinstance(revoked, RelationshipsChanged)
    assert [r.relationship_id for r in revoked.ended] == [consent.consent_id]
    assert [r.kind for r in revoked.relationships] == [RelationshipKind.SERVICE_REQUEST]


async def test_a_consent_by_a_citizen_never_verified_stores_the_profile_first(
    deps, state, issuer_key, clock
) -> None:
    profile = citizen(2, 5)
    terms = commands.ConsentTerms(
        agency="bank-bjb",
        service="bjb-savings-account",
        fields=["full_name"],
        purpose_code="account-opening",
        purpose_text="Pembukaan rekening",
        expires_at=clock.now + dt.timedelta(days=30),
    )
    consent = await handlers.grant_consent(
        commands.GrantConsent(_mint(issuer_key, profile, Purpose.CONSENT), terms), deps
    )
    (record,) = _records(state)
    assert isinstance(record, RelationshipsChanged)
    assert (record.version, record.profile) == (1, profile)
    assert [r.relationship_id for r in record.relationships] == [consent.consent_id]
    assert state.profiles[record.pseudonym].version == 1


async def _register(deps, nik, service="social-assistance", agency="dinsos-cirebon"):
    return await registrations.register_citizen(
        commands.RegisterCitizen(
            nik=nik,
            service=service,
            legal_reference="SK Bupati Cirebon 460/2026",
            agency=agency,
            client_id="gateway-dinsos",
        ),
        deps,
    )


async def test_registration_starts_renews_and_ends_for_the_registering_agency_only(
    deps, state, issuer_key, clock
) -> None:
    profile = citizen(2, 6)
    await _verify(deps, issuer_key, profile, services=["skck"])
    registered = await _register(deps, profile.nik)
    assert (registered.kind, registered.legal_basis) == (
        RelationshipKind.REGISTRATION,
        LegalBasis.PUBLIC_TASK,
    )
    assert registered.legal_reference == "SK Bupati Cirebon 460/2026"
    assert registered.expires_at == clock.now + dt.timedelta(days=1825)
    started = _records(state)[-1]
    assert isinstance(started, RelationshipsChanged)
    assert started.started == [registered]
    assert sorted(r.service for r in started.relationships) == ["skck", "social-assistance"]
    assert state.relationships[registered.relationship_id].recorded_by == "gateway-dinsos"

    clock.now += dt.timedelta(days=1)
    again = await _register(deps, profile.nik)
    assert again.relationship_id == registered.relationship_id
    assert again.expires_at == registered.expires_at + dt.timedelta(days=1)

    skck_id = next(r.relationship_id for r in started.relationships if r.service == "skck")
    for relationship_id, agency in [
        (registered.relationship_id, "kemenag-cirebon"),  # another agency's registration
        (skck_id, "polres-cirebon"),  # a service request, not a registration
        (uuid.uuid4(), "dinsos-cirebon"),
    ]:
        with pytest.raises(RegistrationNotFound):
            await registrations.end_registration(
                commands.EndRegistration(relationship_id, agency, "gw"), deps
            )
    end = commands.EndRegistration(registered.relationship_id, "dinsos-cirebon", "gw")
    ended = await registrations.end_registration(end, deps)
    assert ended.relationship_id == registered.relationship_id
    record = _records(state)[-1]
    assert isinstance(record, RelationshipsChanged)
    assert [r.relationship_id for r in record.ended] == [registered.relationship_id]
    assert [r.service for r in record.relationships] == ["skck"]
    assert state.relationships[registered.relationship_id].ended_at == clock.now
    with pytest.raises(RegistrationNotActive):
        await registrations.end_registration(end, deps)


@pytest.mark.parametrize(
    ("agency", "service", "code"),
    [
        ("dinsos-cirebon", "skck", "service_not_of_agency"),
        ("dinsos-cirebon", "no-such-service", "service_not_of_agency"),
        ("kemenag-cirebon", "marriage-registration", "service_not_registrable"),
        ("polres-cirebon", "skck", "service_not_registrable"),
    ],
)
async def test_registration_refused_by_the_policy(
    deps, state, issuer_key, agency, service, code
) -> None:
    profile = citizen(2, 7)
    await _verify(deps, issuer_key, profile, services=["skck"])
    before = (state.commits, len(state.outbox))
    with pytest.raises(RegistrationRefused) as raised:
        await _register(deps, profile.nik, service=service, agency=agency)
    assert (raised.value.code, raised.value.status_code) == (code, 403)
    assert (state.commits, len(state.outbox)) == before


async def test_registration_of_an_unknown_or_deceased_citizen_is_not_found(
    deps, state, issuer_key, clock
) -> None:
    with pytest.raises(CitizenNotFound):
        await _register(deps, citizen(2, 8).nik)
    dead = citizen(2, 9)
    await _verify(deps, issuer_key, dead, services=["skck"])
    await handlers.record_death(commands.RecordDeath(dead.nik, clock.now.date()), deps)
    with pytest.raises(CitizenNotFound) as raised:
        await _register(deps, dead.nik)
    assert raised.value.status_code == 404
    assert not any(
        r.relationship.kind is RelationshipKind.REGISTRATION for r in state.relationships.values()
    )


@pytest.mark.parametrize("end", ["death", "revocation"])
async def test_death_or_revocation_ends_every_relationship(
    deps, state, issuer_key, clock, end
) -> None:
    profile = citizen(3, 0)
    await _verify(deps, issuer_key, profile)
    await _register(deps, profile.nik)
    other = citizen(3, 1)
    await _verify(deps, issuer_key, other, services=["skck"])
    if end == "death":
        await handlers.record_death(commands.RecordDeath(profile.nik, clock.now.date()), deps)
    else:
        await handlers.revoke_credential(commands.RevokeCredential(profile.nik, "hilang"), deps)
    assert state.outbox[-1].ce_type == TOMBSTONE_TYPE
    mine = [r for r in state.relationships.values() if r.pseudonym == state.outbox[-1].key]
    assert len(mine) == 4
    assert {r.ended_at for r in mine} == {clock.now}
    assert {r.ended_at for r in state.relationships.values() if r not in mine} == {None}
    if end == "revocation":
        # A newer credential reactivates the citizen with only what the new visit asks for.
        newer = _mint(issuer_key, profile, issued_at=clock.now + dt.timedelta(seconds=1))
        result = await handlers.verify_credential(
            commands.VerifyCredential(newer, FRONT_DESK, ("passport",)), deps
        )
        assert [r.service for r in _records(state)[-1].relationships] == ["passport"]
        assert result.changed


async def test_replayed_credential_starts_no_relationship(deps, state, issuer_key) -> None:
    credential = _mint(issuer_key, citizen(3, 2))
    await handlers.verify_credential(
        commands.VerifyCredential(credential, FRONT_DESK, ("skck",)), deps
    )
    with pytest.raises(CredentialRejected):
        await handlers.verify_credential(
            commands.VerifyCredential(credential, FRONT_DESK, ("passport",)), deps
        )
    assert [r.relationship.service for r in state.relationships.values()] == ["skck"]


def test_policy_allows_registration_only_under_a_legal_duty() -> None:
    service = {
        "code": "loan",
        "name": "Micro loan",
        "fields": ["nik"],
        "purpose": {"code": "loan", "text": "Assess a micro loan application"},
        "legal_basis": "consent",
        "legal_reference": "POJK 1/2024",
        "retention_days": 30,
        "registration": True,
    }
    with pytest.raises(ValidationError, match="registration needs legal_basis"):
        ServicePolicy.model_validate(service)
    for basis in ("legal_obligation", "public_task"):
        assert ServicePolicy.model_validate({**service, "legal_basis": basis}).registration
    assert not ServicePolicy.model_validate({**service, "registration": False}).registration
