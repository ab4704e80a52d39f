"""Handlers driven through fakes: what is stored and what goes to the outbox."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest

from ikd_dev.issuer import mint_credential
from ikd_dev.synthetic import citizen, generate_citizens
from ikd_identity.domain import commands
from ikd_identity.domain.errors import (
    CitizenInactive,
    ConsentNotFound,
    CredentialRejected,
    InvalidConsent,
    InvalidUpdate,
)
from ikd_identity.domain.model import ProfileStatus
from ikd_identity.service_layer import handlers
from ikd_shared.events.consent_v1 import ConsentGranted, ConsentRevoked
from ikd_shared.events.profile_v1 import TOMBSTONE_TYPE, CitizenDied, ProfileVerified
from ikd_shared.events.topics import CONSENT, PROFILE
from ikd_shared.legal import LegalBasis

COUNTER = "bpjs-kesehatan"  # an agency counter of one service: verifications default to it


def _mint(key, profile, **kwargs) -> str:
    return mint_credential(
        key, kid="k1", issuer="dukcapil", audience="ikd-mpp", profile=profile, **kwargs
    )


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


def _terms(clock, **changes) -> commands.ConsentTerms:
    values = {
        "agency": "bpjs-kesehatan",
        "service": "daftar",
        "fields": ["full_name"],
        "purpose_code": "registration",
        "purpose_text": "Pendaftaran",
        "legal_basis": LegalBasis.CONSENT,
        "expires_at": clock.now + dt.timedelta(days=1),
    }
    values.update(changes)
    return commands.ConsentTerms(**values)


async def test_consents_carry_the_active_set_and_a_growing_version(
    deps, state, issuer_key, clock
) -> None:
    profile = citizen(1, 6)
    await handlers.verify_credential(
        commands.VerifyCredential(_mint(issuer_key, profile), COUNTER), deps
    )
    officer = commands.OfficerActing(officer_id="p7", client_id="mpp-officer", nik=profile.nik)
    first = await handlers.grant_consent(commands.GrantConsent(officer, _terms(clock)), deps)
    second = await handlers.grant_consent(
        commands.GrantConsent(
            commands.CitizenProof(_mint(issuer_key, profile)), _terms(clock, service="lain")
        ),
        deps,
    )
    await handlers.revoke_consent(
        commands.RevokeConsent(commands.CitizenProof(_mint(issuer_key, profile)), first.consent_id),
        deps,
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
    assert granted_1.consent.granted_by.value == "officer"
    assert granted_2.consent.granted_by.value == "citizen"

    someone_else = commands.CitizenProof(_mint(issuer_key, citizen(1, 7)))
    with pytest.raises(ConsentNotFound):
        await handlers.revoke_consent(commands.RevokeConsent(someone_else, second.consent_id), deps)
    with pytest.raises(InvalidConsent):
        await handlers.grant_consent(
            commands.GrantConsent(officer, _terms(clock, fields=["gaji"])), deps
        )
    with pytest.raises(InvalidConsent):
        await handlers.grant_consent(
            commands.GrantConsent(officer, _terms(clock, expires_at=clock.now)), deps
        )
    assert len([m for m in state.outbox if m.topic == CONSENT.name]) == 3


async def test_consent_proof_must_be_fresh(deps, issuer_key, clock) -> None:
    stale = _mint(issuer_key, citizen(1, 8), issued_at=clock.now - dt.timedelta(minutes=9))
    with pytest.raises(CredentialRejected) as error:
        await handlers.grant_consent(
            commands.GrantConsent(commands.CitizenProof(stale), _terms(clock)), deps
        )
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


async def test_unknown_consent_id(deps, clock) -> None:
    officer = commands.OfficerActing(officer_id="p7", client_id="c")
    with pytest.raises(ConsentNotFound):
        await handlers.revoke_consent(commands.RevokeConsent(officer, uuid.uuid4()), deps)
