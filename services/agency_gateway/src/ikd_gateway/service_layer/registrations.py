"""Registrations: the agency registers a citizen for one of its services under a legal duty.

Only a service whose policy allows registration (a legal obligation or public task) can be
named, and only by this gateway's agency. identity records the relationship and publishes it on
the profile topic; the view then holds the citizen as for any other relationship. Every attempt,
served or refused, is an access event in the gateway's outbox.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Protocol

from ikd_gateway.domain import errors
from ikd_gateway.service_layer.context import GatewayContext, UnitOfWorkFactory
from ikd_gateway.service_layer.prefill import resolve_service
from ikd_shared.events.access_v1 import Channel, Outcome
from ikd_shared.events.profile_v1 import Relationship, RelationshipKind
from ikd_shared.nik import InvalidNik as NikRejected
from ikd_shared.nik import parse_nik
from ikd_shared.policy import ServicePolicy
from ikd_shared.pseudonym import pseudonymize

REGISTERED = "registered"
ENDED = "registration_ended"


class Registrar(Protocol):
    """Where relationships are recorded: identity (`adapters.identity.IdentityClient`)."""

    async def register(self, *, nik: str, service: str, legal_reference: str) -> Relationship: ...

    async def end(self, relationship_id: uuid.UUID) -> Relationship | None: ...


@dataclass(frozen=True)
class Registered:
    pseudonym: str
    relationship: Relationship


@dataclass(frozen=True)
class Ended:
    pseudonym: str | None
    relationship: Relationship | None


async def register(
    uow: UnitOfWorkFactory,
    ctx: GatewayContext,
    registrar: Registrar | None,
    *,
    nik: str,
    service_code: str,
    legal_reference: str,
    correlation_id: str,
) -> Registered:
    """Register the citizen for the service at identity; audited whatever the outcome."""
    service: ServicePolicy | None = None
    pseudonym: str | None = None
    try:
        service = resolve_service(ctx, service_code)
        if not service.registration:
            raise errors.ServiceNotRegistrable(
                f"service {service.code} does not take registrations (the policy allows them "
                "only where a legal obligation or public task requires them)"
            )
        try:
            parse_nik(nik)
        except NikRejected as error:
            raise errors.InvalidNik(str(error), code=f"invalid_nik_{error.reason.value}") from None
        pseudonym = pseudonymize(nik, ctx.pseudonym_key)
        if registrar is None:
            raise errors.IdentityUnavailable("registrations are not configured on this gateway")
        relationship = await registrar.register(
            nik=nik, service=service.code, legal_reference=legal_reference
        )
    except errors.GatewayError as error:
        await _audit(uow, ctx, service, pseudonym, error, correlation_id)
        raise
    if (relationship.agency, relationship.service, relationship.kind) != (
        ctx.agency.code,
        service.code,
        RelationshipKind.REGISTRATION,
    ):
        failure = errors.IdentityFailed("identity recorded another relationship than asked for")
        await _audit(uow, ctx, service, pseudonym, failure, correlation_id)
        raise failure
    await _audit(uow, ctx, service, pseudonym, None, str(relationship.relationship_id))
    return Registered(pseudonym, relationship)


async def end(
    uow: UnitOfWorkFactory,
    ctx: GatewayContext,
    registrar: Registrar | None,
    relationship_id: uuid.UUID,
    *,
    correlation_id: str,
) -> Ended:
    """End one of the agency's registrations at identity; audited whatever the outcome."""
    async with uow() as work:
        held = await work.views.holding_relationship(relationship_id)
    pseudonym, known = held if held is not None else (None, None)
    service = ctx.agency.service(known.service) if known is not None else None
    try:
        # A backend may end what it registered, never a citizen's request or consent.
        if known is not None and known.kind is not RelationshipKind.REGISTRATION:
            raise errors.RegistrationNotFound("no registration of this agency has this id")
        if registrar is None:
            raise errors.IdentityUnavailable("registrations are not configured on this gateway")
        ended = await registrar.end(relationship_id)
    except errors.GatewayError as error:
        await _audit(uow, ctx, service, pseudonym, error, correlation_id)
        raise
    relationship = ended or known
    if relationship is not None and service is None:
        service = ctx.agency.service(relationship.service)
    await _audit(uow, ctx, service, pseudonym, None, str(relationship_id), reason=ENDED)
    return Ended(pseudonym, relationship)


async def _audit(
    uow: UnitOfWorkFactory,
    ctx: GatewayContext,
    service: ServicePolicy | None,
    pseudonym: str | None,
    error: errors.GatewayError | None,
    correlation_id: str,
    *,
    reason: str = REGISTERED,
) -> None:
    """The access event of one attempt, in its own transaction: a refusal is recorded too."""
    if error is None:
        outcome = Outcome.SERVED
    elif error.status_code >= 500:
        outcome = Outcome.FAILED
    else:
        outcome = Outcome.DENIED
    async with uow() as work:
        await work.outbox.add(
            ctx.access(
                # A service named in the request that is not the agency's is not recorded as
                # one (it may not even be a code).
                service=service.code if service is not None else None,
                pseudonym=pseudonym,
                fields=sorted(service.fields) if service is not None else [],
                purpose=service.purpose.code if service is not None else None,
                legal_basis=service.legal_basis if service is not None else None,
                channel=Channel.REGISTRATION,
                outcome=outcome,
                reason=(error.code if error is not None else reason)[:64],
                correlation_id=correlation_id[:64],
            )
        )
