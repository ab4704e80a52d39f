"""Registrations: an agency registers citizens for a service under its legal duty.

Only where the policy allows it (`registration: true`, legal obligation or public task), only
for the agency's own services, only for an active citizen. The caller is the agency's gateway,
which audits every attempt; identity records the relationship and publishes it.
"""

from __future__ import annotations

from dataclasses import replace

from ikd_identity.domain import commands
from ikd_identity.domain.errors import (
    CitizenNotFound,
    RegistrationNotActive,
    RegistrationNotFound,
)
from ikd_identity.domain.model import ProfileStatus
from ikd_identity.domain.relationships import (
    RelationshipRecord,
    registrable_service,
    start_or_renew,
)
from ikd_identity.service_layer.handlers import Deps, _with_retries
from ikd_identity.service_layer.relationships import publish_relationships, stored_relationships
from ikd_identity.service_layer.unit_of_work import UnitOfWork
from ikd_shared.events.profile_v1 import Relationship, RelationshipKind


async def register_citizen(cmd: commands.RegisterCitizen, deps: Deps) -> Relationship:
    """Start (or renew) a registration and publish it with the citizen's whole record."""
    offered = registrable_service(deps.policy, cmd.agency, cmd.service)
    pseudonym = deps.pseudonym(cmd.nik)

    async def work(uow: UnitOfWork) -> Relationship:
        profile = await uow.profiles.get_for_update(pseudonym)
        # Unknown, deceased or revoked alike: the caller learns no more than "not here".
        if profile is None or profile.status is not ProfileStatus.ACTIVE:
            raise CitizenNotFound("no active citizen with this NIK")
        now = deps.clock()
        record = start_or_renew(
            await stored_relationships(uow, pseudonym, now),
            offered,
            pseudonym=pseudonym,
            kind=RelationshipKind.REGISTRATION,
            now=now,
            recorded_by=cmd.client_id,
            legal_reference=cmd.legal_reference,
        )
        await uow.relationships.save([record])
        await publish_relationships(uow, pseudonym, now, started=[record])
        return record.relationship

    return await _with_retries(deps, work)


async def end_registration(cmd: commands.EndRegistration, deps: Deps) -> Relationship:
    """End a registration of the caller's agency and publish that it ended."""

    async def work(uow: UnitOfWork) -> Relationship:
        found = await uow.relationships.get(cmd.relationship_id)
        if found is None or not _registered_by(found, cmd.agency):
            raise RegistrationNotFound("no registration of this agency with this id")
        # The citizen's profile is the lock every relationship change takes first.
        await uow.profiles.get_for_update(found.pseudonym)
        found = await uow.relationships.get(cmd.relationship_id)
        now = deps.clock()
        if found is None or not found.in_force(now):
            raise RegistrationNotActive("the registration has already ended or expired")
        ended = replace(found, ended_at=now)
        await uow.relationships.save([ended])
        await publish_relationships(uow, ended.pseudonym, now, ended=[ended])
        return ended.relationship

    return await _with_retries(deps, work)


def _registered_by(found: RelationshipRecord | None, agency: str) -> bool:
    return (
        found is not None
        and found.relationship.kind is RelationshipKind.REGISTRATION
        and found.relationship.agency == agency
    )
