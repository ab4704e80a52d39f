"""Handlers driven through fakes: what is stored and what goes to the outbox."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

import pytest
import yaml

from ikd_dev.issuer import mint_credential
from ikd_dev.synthetic import citizen, generate_citizens
from ikd_identity.domain import commands
from ikd_identity.domain.errors import (
    AgencyNotServed,
    CitizenInactive,
    ConsentNotActive,
    ConsentNotAllowed,
    ConsentNotFound,
    CredentialRejected,
    InvalidConsent,
    InvalidUpdate,
)
from ikd_identity.domain.model import ProfileStatus
from ikd_identity.service_layer import handlers
from ikd_shared.credentials import Purpose
from ikd_shared.events.consent_v1 import ConsentGranted, ConsentRevoked
from ikd_shared.events.profile_v1 import TOMBSTONE_TYPE, CitizenDied, ProfileVerified
from ikd_shared.events.topics import CONSENT, PROFILE
from ikd_shared.policy import MppPolicy, parse_policy

COUNTER = "bpjs-kesehatan"  # an agency counter of one service: verifications default to it


def _mint(key, profile, purpose=Purpose.VERIFICATION, **kwargs) -> str:
    return mint_credential(
        key, kid="k1", issuer="dukcapil", purpose=purpose, profile=profile, **kwargs
    )


def _consent(key, profile, **kwargs) -> str:
    return _mint(key, profile, Purpose.CONSENT, **kwargs)


async def test_new_profile_is_stored_with_one_event(deps, state, issuer_key) -> None:
    profile = citizen(1, 0)
    result = await handlers.verify_credential(
        commands.VerifyCredential(_mint(issuer_key, profile), agency=COUNTER), deps
    )
    assert (result.version, result.changed) == (1, True)
    assert state.profiles[result.pseudonym].profile == profile
    (message,) = state.outbox
    assert (message.topic, message.key, message.ce_type) == (
        PROFILE.name,
        result.pseudonym,
        ProfileVerified.event_type,
    )
    assert profile.nik not in message.key
    event = ProfileVerified.model_validate_json(message.payload or b"")
    assert event.verified_by == COUNTER


async def test_unchanged_profile_renews_the_service_request(deps, state, issuer_key, clock) -> None:
    profile = citizen(1, 1)
    results = []
    for _ in range(3):
        clock.now += dt.timedelta(hours=1)
        results.append(
            await handlers.verify_credential(
                commands.VerifyCredential(_mint(issuer_key, profile), agency=COUNTER), deps
            )
        )
    assert [(r.version, r.changed) for r in results] == [(1, True), (2, False), (3, False)]
    events = [ProfileVerified.model_validate_json(m.payload or b"") for m in state.outbox]
    assert [bool(e.changed_fields) for e in events] == [True, False, False]
    # One service request, renewed: same id and start, the expiry a full period from now.
    (first,), (last,) = events[0].relationships, events[-1].relationships
    assert last.relationship_id == first.relationship_id
    assert last.starts_at == first.starts_at
    assert last.expires_at == clock.now + dt.timedelta(days=3650)
    assert len(state.relationships) == 1


async def test_replay_rolls_back_everything(deps, state, issuer_key) -> None:
    credential = _mint(issuer_key, citizen(1, 2))
    await handlers.verify_credential(commands.VerifyCredential(credential, COUNTER), deps)
    commits = state.commits
    with pytest.raises(CredentialRejected) as error:
        await handlers.verify_credential(commands.VerifyCredential(credential, COUNTER), deps)
    assert error.value.code == "credential_replayed"
    assert error.value.status_code == 409
    assert state.commits == commits
    assert len(state.outbox) == 1


async def test_death_publishes_event_then_tombstone_and_blocks_verification(
    deps, state, issuer_key, clock
) -> None:
    profile = citizen(1, 3)
    await handlers.verify_credential(
        commands.VerifyCredential(_mint(issuer_key, profile), COUNTER), deps
    )
    result = await handlers.record_death(commands.RecordDeath(profile.nik, clock.now.date()), deps)
    assert result.status is ProfileStatus.DECEASED
    assert [m.ce_type for m in state.outbox[1:]] == [CitizenDied.event_type, TOMBSTONE_TYPE]
    assert state.outbox[2].payload is None
    with pytest.raises(CitizenInactive):
        await handlers.verify_credential(
            commands.VerifyCredential(_mint(issuer_key, profile), COUNTER), deps
        )
    with pytest.raises(CitizenInactive):
        await handlers.record_death(commands.RecordDeath(profile.nik, clock.now.date()), deps)


async def test_revocation_refuses_older_credentials_and_a_newer_one_reactivates(
    deps, state, issuer_key, clock
) -> None:
    profile = citizen(1, 4)
    old = _mint(issuer_key, profile, issued_at=clock.now - dt.timedelta(minutes=1))
    await handlers.verify_credential(
        commands.VerifyCredential(_mint(issuer_key, profile), COUNTER), deps
    )
    await handlers.revoke_credential(commands.RevokeCredential(profile.nik, "lost"), deps)
    with pytest.raises(CredentialRejected) as error:
        await handlers.verify_credential(commands.VerifyCredential(old, COUNTER), deps)
    assert error.value.code == "credential_revoked"
    newer = _mint(issuer_key, profile, issued_at=clock.now + dt.timedelta(seconds=1))
    result = await handlers.verify_credential(commands.VerifyCredential(newer, COUNTER), deps)
    assert (result.status, result.version) == (ProfileStatus.ACTIVE, 3)


async def test_update_that_contradicts_the_nik_is_refused(deps, state, issuer_key) -> None:
    profile = citizen(1, 5)
    await handlers.verify_credential(
        commands.VerifyCredential(_mint(issuer_key, profile), COUNTER), deps
    )
    with pytest.raises(InvalidUpdate):
        await handlers.update_profile(
            commands.UpdateProfile(profile.nik, {"date_of_birth": "1999-01-01"}), deps
        )
    assert len(state.outbox) == 1


SAVINGS = ["full_name", "date_of_birth", "address.street", "occupation"]


def _terms(clock, **changes) -> commands.ConsentTerms:
    values = {
        "agency": "bank-bjb",
        "service": "bjb-savings-account",
        "fields": SAVINGS,
        "purpose_code": "account-opening",
        "purpose_text": "Pembukaan rekening tabungan",
        "expires_at": clock.now + dt.timedelta(days=30),
    }
    values.update(changes)
    return commands.ConsentTerms(**values)


DESK = commands.OfficerDesk(client_id="mpp-officer", serves=frozenset({"bank-bjb", "bank-bri"}))


async def test_consents_carry_the_active_set_and_a_growing_version(
    deps, state, issuer_key, clock
) -> None:
    profile = citizen(1, 6)
    await handlers.verify_credential(
        commands.VerifyCredential(_mint(issuer_key, profile), COUNTER), deps
    )
    first = await handlers.grant_consent(
        commands.GrantConsent(_consent(issuer_key, profile), _terms(clock), desk=DESK), deps
    )
    second = await handlers.grant_consent(
        commands.GrantConsent(
            _consent(issuer_key, profile),
            _terms(clock, service="bjb-kur-loan", purpose_code="micro-loan-assessment"),
        ),
        deps,
    )
    await handlers.revoke_consent(
        commands.RevokeConsent(_consent(issuer_key, profile), first.consent_id), deps
    )
    consent_rows = [m for m in state.outbox if m.topic == CONSENT.name]
    granted_1 = ConsentGranted.model_validate_json(consent_rows[0].payload or b"")
    granted_2 = ConsentGranted.model_validate_json(consent_rows[1].payload or b"")
    revoked = ConsentRevoked.model_validate_json(consent_rows[2].payload or b"")
    assert [granted_1.consents_version, granted_2.consents_version, revoked.consents_version] == [
        1,
        2,
        3,
    ]
    assert [c.consent_id for c in revoked.active_consents] == [second.consent_id]
    # The officer is the desk's client, never a name from the request.
    assert (granted_1.consent.granted_by.value, granted_1.consent.officer_id) == (
        "officer",
        "mpp-officer",
    )
    assert (granted_2.consent.granted_by.value, granted_2.consent.officer_id) == ("citizen", None)
    assert granted_1.consent.pseudonym == deps.pseudonym(profile.nik)
    assert state.consents[first.consent_id][1] == "citizen"  # revoked by the citizen

    someone_else = _consent(issuer_key, citizen(1, 7))
    with pytest.raises(ConsentNotFound):
        await handlers.revoke_consent(commands.RevokeConsent(someone_else, second.consent_id), deps)
    assert len([m for m in state.outbox if m.topic == CONSENT.name]) == 3


def _refused(state) -> tuple[int, int, int]:
    return (len(state.outbox), len(state.consents), len(state.jtis))


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"agency": "bank-bjb", "service": "no-such-service"}, "unknown_service"),
        ({"agency": "no-such-agency"}, "unknown_service"),
        ({"agency": "polres-cirebon", "service": "skck"}, "consent_not_applicable"),
        ({"fields": [*SAVINGS, "religion"]}, "fields_not_in_policy"),
        ({"fields": ["gaji"]}, "fields_not_in_policy"),
        ({"purpose_code": "marketing"}, "purpose_mismatch"),
        ({"expires_at_days": 1826}, "expiry_beyond_limit"),
    ],
)
async def test_the_policy_bounds_what_a_consent_may_say(
    deps, state, issuer_key, clock, changes, code
) -> None:
    if "expires_at_days" in changes:
        changes = {"expires_at": clock.now + dt.timedelta(days=changes.pop("expires_at_days"))}
    credential = _consent(issuer_key, citizen(1, 9))
    with pytest.raises(ConsentNotAllowed) as error:
        await handlers.grant_consent(
            commands.GrantConsent(credential, _terms(clock, **changes)), deps
        )
    assert (error.value.code, error.value.status_code) == (code, 400)
    assert _refused(state) == (0, 0, 0)  # nothing stored, the credential not spent
    # The same credential still works for a consent the policy allows.
    await handlers.grant_consent(commands.GrantConsent(credential, _terms(clock)), deps)


async def test_the_longest_consent_is_the_policy_limit(deps, issuer_key, clock) -> None:
    limit = clock.now + dt.timedelta(days=1825)  # bjb-savings-account retention_days
    consent = await handlers.grant_consent(
        commands.GrantConsent(
            _consent(issuer_key, citizen(1, 10)), _terms(clock, expires_at=limit)
        ),
        deps,
    )
    assert consent.expires_at == limit
    with pytest.raises(InvalidConsent):
        await handlers.grant_consent(
            commands.GrantConsent(
                _consent(issuer_key, citizen(1, 10)), _terms(clock, expires_at=clock.now)
            ),
            deps,
        )


async def test_consent_max_days_shortens_the_limit(deps, issuer_key, clock) -> None:
    policy = _with_consent_max_days(deps.policy, "bank-bjb", "bjb-savings-account", 90)
    deps = dataclasses.replace(deps, policy=policy)
    too_long = _terms(clock, expires_at=clock.now + dt.timedelta(days=91))
    with pytest.raises(ConsentNotAllowed) as error:
        await handlers.grant_consent(
            commands.GrantConsent(_consent(issuer_key, citizen(1, 11)), too_long), deps
        )
    assert error.value.code == "expiry_beyond_limit"
    within = _terms(clock, expires_at=clock.now + dt.timedelta(days=90))
    await handlers.grant_consent(
        commands.GrantConsent(_consent(issuer_key, citizen(1, 11)), within), deps
    )


def _with_consent_max_days(policy: MppPolicy, agency: str, service: str, days: int) -> MppPolicy:
    document = policy.model_dump(mode="json")
    for entry in document["agencies"]:
        for item in entry["services"]:
            if (entry["code"], item["code"]) == (agency, service):
                item["consent_max_days"] = days
    return parse_policy(yaml.safe_dump(document))


async def test_an_officer_acts_only_for_the_agencies_its_client_serves(
    deps, state, issuer_key, clock
) -> None:
    profile = citizen(1, 12)
    elsewhere = commands.OfficerDesk("desk-bri", frozenset({"bank-bri-cirebon"}))
    with pytest.raises(AgencyNotServed) as error:
        await handlers.grant_consent(
            commands.GrantConsent(_consent(issuer_key, profile), _terms(clock), desk=elsewhere),
            deps,
        )
    assert (error.value.status_code, error.value.code) == (403, "agency_not_served")
    assert _refused(state) == (0, 0, 0)

    granted = await handlers.grant_consent(
        commands.GrantConsent(_consent(issuer_key, profile), _terms(clock), desk=DESK), deps
    )
    before = _refused(state)
    with pytest.raises(AgencyNotServed):
        await handlers.revoke_consent(
            commands.RevokeConsent(_consent(issuer_key, profile), granted.consent_id, elsewhere),
            deps,
        )
    assert _refused(state) == before
    await handlers.revoke_consent(
        commands.RevokeConsent(_consent(issuer_key, profile), granted.consent_id, DESK), deps
    )
    with pytest.raises(ConsentNotActive):
        await handlers.revoke_consent(
            commands.RevokeConsent(_consent(issuer_key, profile), granted.consent_id, DESK), deps
        )


@pytest.mark.parametrize("purpose", [Purpose.VERIFICATION, Purpose.TRAIL])
async def test_a_consent_needs_a_credential_for_the_consent_purpose(
    deps, state, issuer_key, clock, purpose
) -> None:
    profile = citizen(1, 13)
    granted = await handlers.grant_consent(
        commands.GrantConsent(_consent(issuer_key, profile), _terms(clock)), deps
    )
    before = _refused(state)
    other = _mint(issuer_key, profile, purpose)
    with pytest.raises(CredentialRejected) as error:
        await handlers.grant_consent(commands.GrantConsent(other, _terms(clock)), deps)
    assert (error.value.code, error.value.status_code) == ("wrong_audience", 403)
    with pytest.raises(CredentialRejected) as error:
        await handlers.revoke_consent(commands.RevokeConsent(other, granted.consent_id), deps)
    assert error.value.code == "wrong_audience"
    assert _refused(state) == before


async def test_a_consent_credential_works_once_and_not_at_a_counter(
    deps, state, issuer_key, clock
) -> None:
    profile = citizen(1, 14)
    credential = _consent(issuer_key, profile)
    granted = await handlers.grant_consent(commands.GrantConsent(credential, _terms(clock)), deps)
    # the grant stored the profile from the credential (the consented agency needs it)
    stored = state.profiles[deps.pseudonym(profile.nik)]
    with pytest.raises(CredentialRejected) as error:
        await handlers.revoke_consent(commands.RevokeConsent(credential, granted.consent_id), deps)
    assert (error.value.code, error.value.status_code) == ("credential_replayed", 409)
    with pytest.raises(CredentialRejected) as error:
        await handlers.verify_credential(commands.VerifyCredential(credential, "agency-x"), deps)
    assert error.value.code == "wrong_audience"
    assert state.profiles[deps.pseudonym(profile.nik)] == stored


async def test_consent_proof_must_be_fresh(deps, issuer_key, clock) -> None:
    stale = _consent(issuer_key, citizen(1, 8), issued_at=clock.now - dt.timedelta(minutes=9))
    with pytest.raises(CredentialRejected) as error:
        await handlers.grant_consent(commands.GrantConsent(stale, _terms(clock)), deps)
    assert error.value.code == "credential_not_fresh"


async def test_bulk_load_creates_updates_and_skips(deps, state, clock) -> None:
    people = generate_citizens(20, seed=3)
    result = await handlers.load_profiles(commands.LoadProfiles(people), deps)
    assert (result.created, result.updated, result.unchanged) == (20, 0, 0)
    await handlers.record_death(commands.RecordDeath(people[0].nik, clock.now.date()), deps)
    changed = [people[1].model_copy(update={"occupation": "Guru"}), *people[2:]]
    result = await handlers.load_profiles(commands.LoadProfiles([people[0], *changed]), deps)
    assert (result.created, result.updated, result.unchanged, result.skipped_inactive) == (
        0,
        1,
        18,
        1,
    )
    assert len(state.outbox) == 20 + 2 + 1
    assert len({m.event_id for m in state.outbox}) == len(state.outbox)


async def test_unknown_consent_id(deps, issuer_key) -> None:
    with pytest.raises(ConsentNotFound):
        await handlers.revoke_consent(
            commands.RevokeConsent(_consent(issuer_key, citizen(1, 15)), uuid.uuid4(), DESK), deps
        )
