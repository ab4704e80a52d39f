"""Command handlers: each runs in one unit of work; state and outbox rows commit together."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import ValidationError

from ikd_identity.domain import commands
from ikd_identity.domain.consents import check_desk, consent_period
from ikd_identity.domain.errors import (
    CitizenInactive,
    CitizenNotFound,
    ConcurrentWrite,
    ConsentNotActive,
    ConsentNotFound,
    CredentialRejected,
    InvalidConsent,
    InvalidUpdate,
)
from ikd_identity.domain.model import (
    OutboxMessage,
    ProfileRecord,
    ProfileStatus,
    active_consents,
    changed_fields,
    event_message,
    merge_changes,
    tombstone_message,
)
from ikd_identity.domain.relationships import (
    OfferedService,
    RelationshipRecord,
    in_force,
    requested_services,
    start_or_renew,
)
from ikd_identity.service_layer.relationships import publish_relationships, stored_relationships
from ikd_identity.service_layer.unit_of_work import UnitOfWork, UnitOfWorkFactory
from ikd_shared import tracing
from ikd_shared.credentials import (
    CredentialError,
    CredentialVerifier,
    Purpose,
    VerifiedCredential,
)
from ikd_shared.events.consent_v1 import (
    Consent,
    ConsentGranted,
    ConsentRevoked,
    ConsentStatus,
    GrantedBy,
)
from ikd_shared.events.profile_v1 import (
    CitizenDied,
    CitizenProfile,
    CredentialRevoked,
    ProfileUpdated,
    ProfileVerified,
    Relationship,
    RelationshipKind,
)
from ikd_shared.events.topics import CONSENT, PROFILE
from ikd_shared.group_commit import GroupCommit
from ikd_shared.policy import MppPolicy
from ikd_shared.pseudonym import pseudonymize

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_ATTEMPTS = 3


@dataclass(frozen=True, slots=True)
class Deps:
    """What the handlers need, wired by bootstrap()."""

    uow: UnitOfWorkFactory
    verifier: CredentialVerifier  # credentials presented for verification at a counter
    consent_verifier: CredentialVerifier  # credentials presented to grant or revoke a consent
    pseudonym_key: bytes
    credential_max_age: dt.timedelta
    policy: MppPolicy
    clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)
    # Group commit of verifications (None: each in its own transaction)
    verifications: GroupCommit[PreparedVerification, ProfileResult] | None = None

    def pseudonym(self, nik: str) -> str:
        return pseudonymize(nik, self.pseudonym_key)


@dataclass(frozen=True, slots=True)
class ProfileResult:
    pseudonym: str
    version: int
    changed: bool
    changed_fields: list[str]
    status: ProfileStatus
    relationships: list[Relationship] = field(default_factory=list)
    """The relationships this command started or renewed (a verification's service requests)."""


@dataclass(frozen=True, slots=True)
class BulkResult:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    skipped_inactive: int = 0


async def _with_retries(deps: Deps, work: Callable[[UnitOfWork], Awaitable[T]]) -> T:
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            async with deps.uow() as uow:
                return await work(uow)
        except ConcurrentWrite:
            if attempt == MAX_ATTEMPTS:
                raise
            log.info("concurrent write, retrying", extra={"attempt": attempt})
    raise AssertionError("unreachable")


def _verify(
    deps: Deps, credential: str, purpose: Purpose = Purpose.VERIFICATION
) -> VerifiedCredential:
    """Verify a credential presented for `purpose`; a consent needs a recently issued one."""
    if purpose is Purpose.CONSENT:
        verifier, max_age = deps.consent_verifier, deps.credential_max_age
    else:
        verifier, max_age = deps.verifier, None
    try:
        return verifier.verify(credential, max_age=max_age)
    except CredentialError as error:
        raise CredentialRejected(error.code, str(error)) from None


async def _record_jti(uow: UnitOfWork, credential: VerifiedCredential, pseudonym: str) -> None:
    if not await uow.credentials.record(credential.jti, pseudonym, credential.expires_at):
        raise CredentialRejected("credential_replayed", "this credential was already used")


def _result(
    record: ProfileRecord,
    changed: list[str] | None,
    relationships: list[Relationship] | None = None,
) -> ProfileResult:
    return ProfileResult(
        pseudonym=record.pseudonym,
        version=record.version,
        changed=changed is not None,
        changed_fields=changed or [],
        status=record.status,
        relationships=relationships or [],
    )


@dataclass(frozen=True, slots=True)
class PreparedVerification:
    """A verification with everything that needs no database done (before any transaction)."""

    cmd: commands.VerifyCredential
    credential: VerifiedCredential
    services: list[OfferedService]
    pseudonym: str
    trace: tracing.TraceContext | None  # the request's, for its outbox row


class _NothingToCommit(Exception):  # control flow: every command of the batch was rejected
    def __init__(self, outcomes: list[ProfileResult | Exception]) -> None:
        self.outcomes = outcomes


def prepare_verification(cmd: commands.VerifyCredential, deps: Deps) -> PreparedVerification:
    credential = _verify(deps, cmd.credential)
    return PreparedVerification(
        cmd=cmd,
        credential=credential,
        services=requested_services(deps.policy, cmd.agency, cmd.services),
        pseudonym=deps.pseudonym(credential.nik),
        trace=tracing.current_trace(),
    )


async def verify_credential(cmd: commands.VerifyCredential, deps: Deps) -> ProfileResult:
    """Verify an IKD credential at a counter for the services the citizen came for.

    Starts (or renews) a service request for each service and publishes the next version of
    the citizen's record with the relationships in force, even when the profile is unchanged.
    The signature, the claims and the services are checked before any transaction; with
    `deps.verifications` concurrent verifications share one (group commit).
    """
    prepared = prepare_verification(cmd, deps)
    if deps.verifications is not None:
        return await deps.verifications.submit(prepared)
    (outcome,) = await verify_batch([prepared], deps)
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def _status_rejection(
    current: ProfileRecord | None, credential: VerifiedCredential
) -> Exception | None:
    if current is None:
        return None
    if current.status is ProfileStatus.DECEASED:
        return CitizenInactive("the citizen is recorded as deceased")
    if (
        current.status is ProfileStatus.REVOKED
        and current.revoked_at is not None
        and credential.issued_at <= current.revoked_at
    ):
        return CredentialRejected("credential_revoked", "Dukcapil revoked this credential")
    return None


def _replayed() -> CredentialRejected:
    return CredentialRejected("credential_replayed", "this credential was already used")


async def verify_batch(
    items: Sequence[PreparedVerification], deps: Deps
) -> list[ProfileResult | Exception]:
    """Verifications of distinct citizens in one transaction, one outcome per item.

    Set-based: one statement each to lock the profiles, record the credential ids, read the
    relationships, write profiles, outbox rows and service requests, whatever the batch's
    size. A rejected item (replayed, deceased, revoked) writes nothing and spends no
    credential; the others commit. Any other error fails the whole batch.
    """
    if len({item.pseudonym for item in items}) != len(items):
        raise ValueError("a batch holds each citizen once")

    async def work(uow: UnitOfWork) -> list[ProfileResult | Exception]:
        existing = await uow.profiles.get_many_for_update(sorted(i.pseudonym for i in items))
        outcomes: list[ProfileResult | Exception | None] = [
            _status_rejection(existing.get(i.pseudonym), i.credential) for i in items
        ]
        # A replayed credential is refused as replayed, whatever else is wrong with it.
        refused = [i.credential.jti for i, o in zip(items, outcomes, strict=True) if o]
        if refused:
            seen = await uow.credentials.seen(refused)
            outcomes = [
                _replayed() if o is not None and i.credential.jti in seen else o
                for i, o in zip(items, outcomes, strict=True)
            ]
        passing = [n for n, o in enumerate(outcomes) if o is None]
        fresh = await uow.credentials.record_many(
            [
                (items[n].credential.jti, items[n].pseudonym, items[n].credential.expires_at)
                for n in passing
            ]
        )
        accepted = []
        for n in passing:
            jti = items[n].credential.jti
            if jti in fresh:
                fresh.discard(jti)  # the same credential twice in one batch: once only
                accepted.append(n)
            else:
                outcomes[n] = _replayed()
        if not accepted:
            raise _NothingToCommit([o for o in outcomes if o is not None])
        now = deps.clock()
        related = await uow.relationships.current([items[n].pseudonym for n in accepted], now)
        records: list[ProfileRecord] = []
        messages: list[OutboxMessage] = []
        all_started: list[RelationshipRecord] = []
        for n in accepted:
            item = items[n]
            record, message, started, result = _verified(
                item, existing.get(item.pseudonym), related.get(item.pseudonym, []), now
            )
            records.append(record)
            messages.append(message)
            all_started.extend(started)
            outcomes[n] = result
        await uow.profiles.save_many(records)
        await uow.outbox.add(messages)
        await uow.relationships.save(all_started)
        return [o for o in outcomes if o is not None]

    try:
        return await _with_retries(deps, work)
    except _NothingToCommit as nothing:  # rolled back: no credential id was recorded
        return nothing.outcomes


def _verified(
    item: PreparedVerification,
    current: ProfileRecord | None,
    stored: list[RelationshipRecord],
    now: dt.datetime,
) -> tuple[ProfileRecord, OutboxMessage, list[RelationshipRecord], ProfileResult]:
    """The next version of a verified citizen's record, its event, and what it started."""
    cmd, profile, pseudonym = item.cmd, item.credential.profile, item.pseudonym
    started = [
        start_or_renew(
            stored,
            offered,
            pseudonym=pseudonym,
            kind=RelationshipKind.SERVICE_REQUEST,
            now=now,
            recorded_by=cmd.client_id or cmd.agency,
        )
        for offered in item.services
    ]
    profile_changed = (
        current is None or current.status is not ProfileStatus.ACTIVE or current.profile != profile
    )
    changed = (
        changed_fields(current.profile if current else None, profile) if profile_changed else []
    )
    record = ProfileRecord(
        pseudonym=pseudonym,
        version=current.version + 1 if current else 1,
        profile=profile,
        status=ProfileStatus.ACTIVE,
        verified_at=now,
        updated_at=now,
    )
    event = ProfileVerified(
        pseudonym=pseudonym,
        version=record.version,
        profile=profile,
        verified_at=now,
        verified_by=cmd.agency,
        changed_fields=changed,
        relationships=in_force(stored, now, changed=started),
    )
    message = event_message(event, topic=PROFILE, key=pseudonym, trace=item.trace)
    result = _result(
        record, changed if profile_changed else None, [r.relationship for r in started]
    )
    return record, message, started, result


async def _active_profile(uow: UnitOfWork, pseudonym: str) -> ProfileRecord:
    current = await uow.profiles.get_for_update(pseudonym)
    if current is None:
        raise CitizenNotFound("no profile for this NIK")
    if current.status is not ProfileStatus.ACTIVE:
        raise CitizenInactive(f"the citizen's profile is {current.status.value}")
    return current


async def update_profile(cmd: commands.UpdateProfile, deps: Deps) -> ProfileResult:
    """Dukcapil's feed changed some fields of a profile."""
    pseudonym = deps.pseudonym(cmd.nik)

    async def work(uow: UnitOfWork) -> ProfileResult:
        current = await _active_profile(uow, pseudonym)
        try:
            profile = CitizenProfile.model_validate(merge_changes(current.profile, cmd.changes))
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or "profile"
            raise InvalidUpdate(f"{where}: {first['msg']}") from None
        if profile == current.profile:
            return _result(current, None)
        now = deps.clock()
        changed = changed_fields(current.profile, profile)
        record = ProfileRecord(
            pseudonym=pseudonym,
            version=current.version + 1,
            profile=profile,
            status=ProfileStatus.ACTIVE,
            verified_at=current.verified_at,
            updated_at=now,
        )
        event = ProfileUpdated(
            pseudonym=pseudonym,
            version=record.version,
            profile=profile,
            verified_at=current.verified_at,
            updated_at=now,
            changed_fields=changed,
            relationships=in_force(await stored_relationships(uow, pseudonym, now), now),
        )
        await uow.profiles.save(record, [event_message(event, topic=PROFILE, key=pseudonym)])
        return _result(record, changed)

    return await _with_retries(deps, work)


async def record_death(cmd: commands.RecordDeath, deps: Deps) -> ProfileResult:
    """Dukcapil recorded a death: publish CitizenDied, then a tombstone."""
    pseudonym = deps.pseudonym(cmd.nik)

    async def work(uow: UnitOfWork) -> ProfileResult:
        current = await _active_profile(uow, pseudonym)
        now = deps.clock()
        if not current.profile.date_of_birth <= cmd.date_of_death <= now.date():
            raise InvalidUpdate("date_of_death must lie between the birth date and today")
        record = _replace(
            current, version=current.version + 1, status=ProfileStatus.DECEASED, updated_at=now
        )
        event = CitizenDied(
            pseudonym=pseudonym,
            version=record.version,
            date_of_death=cmd.date_of_death,
            recorded_at=now,
        )
        return await _end_profile(uow, record, event)

    return await _with_retries(deps, work)


async def revoke_credential(cmd: commands.RevokeCredential, deps: Deps) -> ProfileResult:
    """Dukcapil revoked the citizen's credential: publish CredentialRevoked, then a tombstone."""
    pseudonym = deps.pseudonym(cmd.nik)

    async def work(uow: UnitOfWork) -> ProfileResult:
        current = await _active_profile(uow, pseudonym)
        now = deps.clock()
        record = _replace(
            current,
            version=current.version + 1,
            status=ProfileStatus.REVOKED,
            updated_at=now,
            revoked_at=now,
        )
        event = CredentialRevoked(
            pseudonym=pseudonym, version=record.version, reason=cmd.reason, revoked_at=now
        )
        return await _end_profile(uow, record, event)

    return await _with_retries(deps, work)


async def _end_profile(
    uow: UnitOfWork, record: ProfileRecord, event: CitizenDied | CredentialRevoked
) -> ProfileResult:
    """Save the profile's final state; publish why it ended, then the citizen's tombstone.

    Every relationship ends with it (the tombstone tells the agencies).
    """
    await uow.profiles.save(
        record,
        [
            event_message(event, topic=PROFILE, key=record.pseudonym),
            tombstone_message(record.pseudonym),
        ],
    )
    await uow.relationships.end_all(record.pseudonym, record.updated_at)
    return _result(record, [])


def _replace(record: ProfileRecord, **changes: Any) -> ProfileRecord:
    values = {name: getattr(record, name) for name in ProfileRecord.__slots__}
    values.update(changes)
    return ProfileRecord(**values)


async def load_profiles(cmd: commands.LoadProfiles, deps: Deps) -> BulkResult:
    """Dukcapil's bulk feed: one transaction for the whole batch, outbox rows included."""
    by_pseudonym: dict[str, CitizenProfile] = {}
    for profile in cmd.profiles:
        by_pseudonym[deps.pseudonym(profile.nik)] = profile

    async def work(uow: UnitOfWork) -> BulkResult:
        existing = await uow.profiles.get_many_for_update(sorted(by_pseudonym))
        now = deps.clock()
        changes: list[tuple[ProfileRecord, ProfileRecord | None]] = []
        unchanged = skipped = 0
        for pseudonym, profile in by_pseudonym.items():
            current = existing.get(pseudonym)
            if current is not None and current.status is not ProfileStatus.ACTIVE:
                skipped += 1
                continue
            if current is not None and current.profile == profile:
                unchanged += 1
                continue
            if current is None:
                record = ProfileRecord(
                    pseudonym=pseudonym,
                    version=1,
                    profile=profile,
                    status=ProfileStatus.ACTIVE,
                    verified_at=now,
                    updated_at=now,
                )
            else:
                record = _replace(
                    current, version=current.version + 1, profile=profile, updated_at=now
                )
            changes.append((record, current))
        # The relationships of the whole batch in one query: the bulk path stays one round
        # trip per kind of statement however many citizens it carries.
        related = await uow.relationships.current([r.pseudonym for r, _ in changes], now)
        messages: list[OutboxMessage] = []
        for record, current in changes:
            relationships = in_force(related.get(record.pseudonym, []), now)
            event: ProfileVerified | ProfileUpdated
            if current is None:
                event = ProfileVerified(
                    pseudonym=record.pseudonym,
                    version=1,
                    profile=record.profile,
                    verified_at=now,
                    verified_by=None,
                    changed_fields=changed_fields(None, record.profile),
                    relationships=relationships,
                )
            else:
                event = ProfileUpdated(
                    pseudonym=record.pseudonym,
                    version=record.version,
                    profile=record.profile,
                    verified_at=current.verified_at,
                    updated_at=now,
                    changed_fields=changed_fields(current.profile, record.profile),
                    relationships=relationships,
                )
            messages.append(event_message(event, topic=PROFILE, key=record.pseudonym))
        await uow.profiles.save_many([record for record, _ in changes])
        await uow.outbox.add(messages)
        created = sum(1 for _, current in changes if current is None)
        return BulkResult(
            created=created,
            updated=len(changes) - created,
            unchanged=unchanged,
            skipped_inactive=skipped,
        )

    return await _with_retries(deps, work)


async def grant_consent(cmd: commands.GrantConsent, deps: Deps) -> Consent:
    """The citizen consents with a fresh credential for the consent purpose.

    Self-service, or at an officer's desk whose client serves the agency. What needs no
    credential is checked first, so a refused request stores nothing and spends no credential.
    """
    now = deps.clock()
    terms = cmd.terms
    check_desk(cmd.desk, terms.agency)
    starts_at, expires_at = consent_period(deps.policy, terms, now)
    credential = _verify(deps, cmd.credential, Purpose.CONSENT)
    pseudonym = deps.pseudonym(credential.nik)
    if cmd.desk is None:
        granted_by, officer_id, recorded_by = GrantedBy.CITIZEN, None, "citizen"
    else:
        granted_by, officer_id = GrantedBy.OFFICER, cmd.desk.client_id
        recorded_by = cmd.desk.client_id
    try:
        consent = Consent(
            consent_id=cmd.consent_id,
            pseudonym=pseudonym,
            agency=terms.agency,
            service=terms.service,
            fields=terms.fields,
            purpose_code=terms.purpose_code,
            purpose_text=terms.purpose_text,
            starts_at=starts_at,
            expires_at=expires_at,
            status=ConsentStatus.ACTIVE,
            granted_by=granted_by,
            officer_id=officer_id,
        )
    except ValidationError as error:
        first = error.errors()[0]
        raise InvalidConsent(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None

    async def work(uow: UnitOfWork) -> Consent:
        await _record_jti(uow, credential, pseudonym)
        profile = await uow.profiles.get_for_update(pseudonym)
        if profile is not None and profile.status is not ProfileStatus.ACTIVE:
            raise CitizenInactive(f"the citizen's profile is {profile.status.value}")
        version = await uow.consents.next_version(pseudonym)
        await uow.consents.save(consent, recorded_by=recorded_by)
        await publish_relationships(uow, pseudonym, now, started=[consent], credential=credential)
        active = active_consents(await uow.consents.for_citizen(pseudonym), now)
        event = ConsentGranted(
            pseudonym=pseudonym, consents_version=version, consent=consent, active_consents=active
        )
        await uow.outbox.add([event_message(event, topic=CONSENT, key=pseudonym)])
        return consent

    return await _with_retries(deps, work)


async def revoke_consent(cmd: commands.RevokeConsent, deps: Deps) -> Consent:
    """The citizen revokes one of their consents, proven like a grant (never by a token alone).

    A consent that is not the citizen's gets the answer of one that does not exist; at an
    officer's desk the client must serve the consent's agency.
    """
    credential = _verify(deps, cmd.credential, Purpose.CONSENT)
    citizen = deps.pseudonym(credential.nik)

    async def work(uow: UnitOfWork) -> Consent:
        consent = await uow.consents.get_for_update(cmd.consent_id)
        if consent is None or consent.pseudonym != citizen:
            raise ConsentNotFound("no such consent for this citizen")
        check_desk(cmd.desk, consent.agency)
        await _record_jti(uow, credential, citizen)
        if consent.status is not ConsentStatus.ACTIVE:
            raise ConsentNotActive(f"the consent is already {consent.status.value}")
        now = deps.clock()
        version = await uow.consents.next_version(consent.pseudonym)
        revoked = consent.model_copy(update={"status": ConsentStatus.REVOKED, "revoked_at": now})
        recorded_by = "citizen" if cmd.desk is None else cmd.desk.client_id
        await uow.consents.save(revoked, recorded_by=recorded_by)
        await publish_relationships(uow, consent.pseudonym, now, ended=[revoked])
        active = active_consents(await uow.consents.for_citizen(consent.pseudonym), now)
        event = ConsentRevoked(
            pseudonym=consent.pseudonym,
            consents_version=version,
            consent=revoked,
            active_consents=active,
        )
        await uow.outbox.add([event_message(event, topic=CONSENT, key=consent.pseudonym)])
        return revoked

    return await _with_retries(deps, work)
