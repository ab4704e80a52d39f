"""Prefill: exactly one service's granted fields for one citizen, each answer audited.

A citizen the agency has no relationship with is answered as one nobody knows: the same
404, code and body whether or not the citizen exists anywhere, and a recorded denial.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

from ikd_gateway.domain import errors
from ikd_gateway.domain.model import answer_fields, holds
from ikd_gateway.service_layer.context import GatewayContext
from ikd_gateway.service_layer.group_commit import AccessCommitter
from ikd_gateway.service_layer.unit_of_work import UnitOfWork
from ikd_shared.events.access_v1 import Channel, Outcome
from ikd_shared.legal import CODE_PATTERN
from ikd_shared.nik import InvalidNik as NikRejected
from ikd_shared.nik import parse_nik
from ikd_shared.policy import ServicePolicy
from ikd_shared.pseudonym import is_pseudonym, pseudonymize

NOT_ON_RECORD = "no fields of this citizen are on record here for this service"
"""The one message of every not-found answer: it must not tell an unknown citizen from one the
agency has no reason to hold."""


@dataclass(frozen=True)
class PrefillAnswer:
    service: ServicePolicy
    pseudonym: str
    version: int
    verified_at: dt.datetime
    fields: dict[str, Any]


@dataclass(frozen=True)
class Denial:
    """What is known about a refused request, for its access event."""

    service: str | None = None
    pseudonym: str | None = None
    fields: tuple[str, ...] = ()


def resolve_service(ctx: GatewayContext, code: str) -> ServicePolicy:
    service = ctx.agency.service(code)
    if service is None:
        raise errors.ServiceNotAllowed(
            f"service {code!r} is not one of {ctx.agency.code}'s services"
        )
    return service


def resolve_citizen(
    ctx: GatewayContext, service: ServicePolicy, nik: str | None, pseudonym: str | None
) -> str:
    if (nik is None) == (pseudonym is None):
        raise errors.BadCitizenReference("give exactly one of `nik` or `pseudonym`")
    if nik is not None:
        try:
            parse_nik(nik)
        except NikRejected as error:
            raise errors.InvalidNik(str(error), code=f"invalid_nik_{error.reason.value}") from None
        if not service.allows_nik_lookup:
            raise errors.NikLookupNotAllowed(
                f"service {service.code} is not granted the NIK; look the citizen up by pseudonym"
            )
        return pseudonymize(nik, ctx.pseudonym_key)
    assert pseudonym is not None
    if not is_pseudonym(pseudonym):
        raise errors.InvalidPseudonym("a pseudonym is 64 lower-case hex characters")
    return pseudonym


async def prefill(
    uow: UnitOfWork,
    ctx: GatewayContext,
    *,
    service_code: str,
    nik: str | None,
    pseudonym: str | None,
    correlation_id: str | None = None,
    committer: AccessCommitter | None = None,
) -> PrefillAnswer:
    """Exactly one service's granted fields for one citizen, audited before it is returned:
    in the transaction that read the view, or, with a `committer`, in the group commit it
    shares with concurrent requests once the view is read (AccessNotRecorded if that fails).

    Raises a GatewayError on refusal; `DeniedRequest.denial` tells what was asked for.
    """
    denial = Denial(service=service_code)
    try:
        service = resolve_service(ctx, service_code)
        denial = Denial(service=service.code, fields=tuple(sorted(service.fields)))
        citizen = resolve_citizen(ctx, service, nik, pseudonym)
        denial = Denial(service=service.code, pseudonym=citizen, fields=denial.fields)
        async with uow:
            now = ctx.clock()
            view = await uow.views.get(citizen)
            if view is None or view.verified_at is None or not holds(view, now):
                raise errors.CitizenNotFound(NOT_ON_RECORD)
            consent_set = await uow.consents.get(citizen)
            consents = consent_set.consents if consent_set else ()
            answer = answer_fields(service, consents, view, now)
            if answer is None:
                raise errors.ConsentRequired(
                    f"service {service.code} needs the citizen's consent, which is not active"
                )
            if not answer:
                raise errors.CitizenNotFound(NOT_ON_RECORD)
            served = ctx.access(
                service=service.code,
                pseudonym=citizen,
                fields=sorted(answer),
                purpose=service.purpose.code,
                legal_basis=service.legal_basis,
                channel=Channel.PREFILL,
                outcome=Outcome.SERVED,
                correlation_id=correlation_id,
            )
            if committer is None:
                await uow.outbox.add(served)
            found = PrefillAnswer(
                service=service,
                pseudonym=citizen,
                version=view.version,
                verified_at=view.verified_at,
                fields=answer,
            )
    except errors.GatewayError as error:
        raise DeniedRequest(error, denial) from error
    if committer is not None:
        await committer.commit(served)
    return found


class DeniedRequest(Exception):
    def __init__(self, error: errors.GatewayError, denial: Denial) -> None:
        super().__init__(str(error))
        self.error = error
        self.denial = denial


async def record_denial(
    uow: UnitOfWork,
    ctx: GatewayContext,
    error: errors.GatewayError,
    denial: Denial,
    *,
    channel: Channel = Channel.PREFILL,
    correlation_id: str | None = None,
) -> None:
    """Write the access event of a refused request (its own transaction)."""
    service = ctx.agency.service(denial.service) if denial.service else None
    async with uow:
        await uow.outbox.add(
            ctx.access(
                service=denial.service if _is_code(denial.service) else None,
                pseudonym=denial.pseudonym,
                fields=list(denial.fields),
                purpose=service.purpose.code if service else None,
                legal_basis=service.legal_basis if service else None,
                channel=channel,
                outcome=Outcome.DENIED,
                reason=error.code[:64],
                correlation_id=correlation_id,
            )
        )


def _is_code(value: str | None) -> bool:
    return value is not None and re.fullmatch(CODE_PATTERN, value) is not None
