"""Use cases of the gateway: apply stream events to the view, answer prefill, manage webhooks.

Each handler opens one unit of work and commits once. Stream handlers are idempotent: the
event id is recorded in the same transaction as the write, and writes are version-guarded, so a
redelivered or stale event changes nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ikd_gateway.domain import errors
from ikd_gateway.domain.model import (
    CitizenView,
    ConsentSet,
    SourcePosition,
    answer_fields,
    consents_for_agency,
    erased,
    missing_fields,
    project_profile,
    restrict,
    service_grant,
)
from ikd_gateway.domain.policy import AgencyPolicy, ServicePolicy
from ikd_gateway.service_layer.unit_of_work import UnitOfWork, WebhookMessage
from ikd_shared.events.access_v1 import AccessRecorded, Channel, Outcome
from ikd_shared.events.consent_v1 import ConsentEvent
from ikd_shared.events.profile_v1 import (
    CitizenDied,
    CredentialRevoked,
    ProfileEvent,
    ProfileUpdated,
    ProfileVerified,
)
from ikd_shared.nik import InvalidNik as NikRejected
from ikd_shared.nik import parse_nik
from ikd_shared.pseudonym import is_pseudonym, pseudonymize

log = logging.getLogger(__name__)

UnitOfWorkFactory = Callable[[], UnitOfWork]
Clock = Callable[[], dt.datetime]


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class GatewayContext:
    """What every handler needs: the agency's policy, the pseudonym key, a clock."""

    agency: AgencyPolicy
    pseudonym_key: bytes
    consumer: str
    clock: Clock = utcnow

    def access(self, **fields: Any) -> AccessRecorded:
        return AccessRecorded(
            access_id=uuid.uuid4(), occurred_at=self.clock(), agency=self.agency.code, **fields
        )


# --- the stream -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProfileRecord:
    """One record of the profile topic, decoded (`event` None for a tombstone)."""

    event_id: str
    pseudonym: str
    event: ProfileEvent | None
    source: SourcePosition | None = None


@dataclass(frozen=True)
class StreamResult:
    applied: bool
    reason: str = ""
    refetch: SourcePosition | None = None
    """Set when a consent now grants fields the row lacks: re-read this profile record."""
    view: CitizenView | None = field(default=None, repr=False)


async def apply_profile(
    uow: UnitOfWork, ctx: GatewayContext, record: ProfileRecord, *, reapply: bool = False
) -> StreamResult:
    """Apply one profile record: upsert the minimised row, or erase it.

    `reapply` re-projects a version the row already has (after a consent grant), so it skips
    the idempotency record and replaces the row only if it still has that version.
    """
    async with uow:
        await uow.lock_citizen(record.pseudonym)
        if not reapply and not await uow.processed.add(ctx.consumer, record.event_id):
            return StreamResult(False, "duplicate")
        event = record.event
        if event is None:
            result = await _erase(uow, record.pseudonym, None)
        elif isinstance(event, CitizenDied | CredentialRevoked):
            result = await _erase(uow, record.pseudonym, event.version)
        elif isinstance(event, ProfileVerified | ProfileUpdated):
            result = await _store(uow, ctx, record, event, reapply=reapply)
        else:  # pragma: no cover - decode() only yields the models above
            result = StreamResult(False, "ignored")
        await uow.commit()
        return result


async def _store(
    uow: UnitOfWork,
    ctx: GatewayContext,
    record: ProfileRecord,
    event: ProfileVerified | ProfileUpdated,
    *,
    reapply: bool,
) -> StreamResult:
    now = ctx.clock()
    consent_set = await uow.consents.get(record.pseudonym)
    consents = consent_set.consents if consent_set else ()
    previous = await uow.views.get(record.pseudonym)
    view = project_profile(
        agency=ctx.agency,
        pseudonym=record.pseudonym,
        version=event.version,
        profile=event.profile,
        verified_at=event.verified_at,
        consents=consents,
        now=now,
        source=record.source,
    )
    if reapply:
        applied = await uow.views.replace_same_version(view)
    else:
        applied = await uow.views.upsert_newer(view)
    if not applied:
        return StreamResult(False, "stale")
    if view.data:
        await uow.outbox.add(
            ctx.access(
                pseudonym=record.pseudonym,
                fields=sorted(view.data),
                channel=Channel.VIEW,
                outcome=Outcome.SERVED,
                correlation_id=record.event_id[:64],
            )
        )
    before = dict(previous.data) if previous and not previous.erased else {}
    changed = {name for name, value in view.data.items() if before.get(name) != value}
    if changed:
        await _enqueue_webhooks(uow, ctx, view, consents, changed, type(event).event_type, now)
    return StreamResult(True, "stored", view=view)


async def _erase(uow: UnitOfWork, pseudonym: str, version: int | None) -> StreamResult:
    current = await uow.views.get(pseudonym, for_update=True)
    if version is None:  # a tombstone: erase whatever version is there
        if current is None or current.erased:
            await uow.consents.delete(pseudonym)
            return StreamResult(False, "nothing to erase")
        applied = await uow.views.replace_same_version(erased(pseudonym, current.version))
    else:
        applied = await uow.views.upsert_newer(erased(pseudonym, version))
    await uow.webhooks.cancel_pending(pseudonym)
    if applied:
        await uow.consents.delete(pseudonym)
    return StreamResult(applied, "erased" if applied else "stale")


async def _enqueue_webhooks(
    uow: UnitOfWork,
    ctx: GatewayContext,
    view: CitizenView,
    consents: tuple[Any, ...],
    changed: set[str],
    event_type: str,
    now: dt.datetime,
) -> None:
    for endpoint in await uow.webhooks.endpoints(enabled_only=True):
        service = ctx.agency.service(endpoint.service)
        if service is None:
            continue
        visible = answer_fields(service, consents, view, now)
        if not visible or not changed & set(visible):
            continue
        await uow.webhooks.enqueue(
            WebhookMessage(
                id=uuid.uuid4(),
                endpoint_id=endpoint.id,
                pseudonym=view.pseudonym,
                version=view.version,
                event_type=event_type,
                changed_fields=tuple(sorted(changed & set(visible))),
            )
        )


@dataclass(frozen=True)
class ConsentRecord:
    event_id: str
    pseudonym: str
    event: ConsentEvent


async def apply_consents(
    uow: UnitOfWork, ctx: GatewayContext, record: ConsentRecord
) -> StreamResult:
    """Replace the citizen's consent set (if newer) and bring the row in line with it."""
    async with uow:
        await uow.lock_citizen(record.pseudonym)
        if not await uow.processed.add(ctx.consumer, record.event_id):
            return StreamResult(False, "duplicate")
        event = record.event
        mine = consents_for_agency(event.active_consents, ctx.agency.code)
        new_set = ConsentSet(record.pseudonym, event.consents_version, mine)
        if not await uow.consents.replace_newer(new_set):
            await uow.commit()
            return StreamResult(False, "stale")
        now = ctx.clock()
        view = await uow.views.get(record.pseudonym, for_update=True)
        refetch = None
        if view is not None and not view.erased:
            restricted = restrict(view, ctx.agency, mine, now)
            if restricted != view:
                await uow.views.replace_same_version(restricted)
            if missing_fields(restricted, ctx.agency, mine, now) and view.source is not None:
                refetch = view.source
        await uow.commit()
        return StreamResult(True, "consents replaced", refetch=refetch)


async def sweep_retention(uow: UnitOfWork, ctx: GatewayContext, *, limit: int = 500) -> int:
    """Purge fields whose retention or consent has run out; return how many rows changed."""
    async with uow:
        now = ctx.clock()
        changed = 0
        for due in await uow.views.due_for_expiry(now, limit):
            await uow.lock_citizen(due.pseudonym)
            view = await uow.views.get(due.pseudonym, for_update=True)
            if view is None:
                continue
            consent_set = await uow.consents.get(view.pseudonym)
            consents = consent_set.consents if consent_set else ()
            await uow.views.replace_same_version(restrict(view, ctx.agency, consents, now))
            changed += 1
        await uow.commit()
        return changed


# --- prefill ----------------------------------------------------------------------------------


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
) -> PrefillAnswer:
    """Exactly one service's granted fields for one citizen, audited in the same transaction.

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
            if view is None or view.erased or view.verified_at is None:
                raise errors.CitizenNotFound("no profile of this citizen is on record here")
            consent_set = await uow.consents.get(citizen)
            consents = consent_set.consents if consent_set else ()
            answer = answer_fields(service, consents, view, now)
            if answer is None:
                raise errors.ConsentRequired(
                    f"service {service.code} needs the citizen's consent, which is not active"
                )
            if not answer:
                raise errors.CitizenNotFound(
                    "none of this service's fields is on record here (retention ended)"
                )
            await uow.outbox.add(
                ctx.access(
                    service=service.code,
                    pseudonym=citizen,
                    fields=sorted(answer),
                    purpose=service.purpose.code,
                    legal_basis=service.legal_basis,
                    channel=Channel.PREFILL,
                    outcome=Outcome.SERVED,
                    correlation_id=correlation_id,
                )
            )
            await uow.commit()
            return PrefillAnswer(
                service=service,
                pseudonym=citizen,
                version=view.version,
                verified_at=view.verified_at,
                fields=answer,
            )
    except errors.GatewayError as error:
        raise DeniedRequest(error, denial) from error


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
        await uow.commit()


def _is_code(value: str | None) -> bool:
    import re

    from ikd_shared.legal import CODE_PATTERN

    return value is not None and re.fullmatch(CODE_PATTERN, value) is not None


def visible_to(
    service: ServicePolicy, consents: tuple[Any, ...], now: dt.datetime
) -> frozenset[str]:
    """The field names a service may see now (empty without a needed consent)."""
    return service_grant(service, consents, now) or frozenset()
