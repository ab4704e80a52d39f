"""Use cases of the gateway: apply stream events to the view, answer prefill, manage webhooks.

Each handler opens one unit of work and commits once. Stream handlers are idempotent: the
event id is recorded in the same transaction as the write, and writes are version-guarded, so a
redelivered or stale event changes nothing.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from collections.abc import Callable, Sequence
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
from ikd_gateway.service_layer.unit_of_work import Endpoint, UnitOfWork, WebhookMessage
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
from ikd_shared.tracing import TraceContext

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
    trace: TraceContext | None = field(default=None, compare=False, repr=False)
    """The record's trace context (a child span); the access event it causes carries it."""


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
    if not reapply:
        return (await apply_profiles(uow, ctx, [record]))[0]
    async with uow:
        await uow.lock_citizen(record.pseudonym)
        event = record.event
        if isinstance(event, ProfileVerified | ProfileUpdated):
            result = await _store(uow, ctx, record, event, reapply=True)
        else:
            result = StreamResult(False, "ignored")
        await uow.commit()
        return result


async def apply_profiles(
    uow: UnitOfWork, ctx: GatewayContext, records: Sequence[ProfileRecord]
) -> list[StreamResult]:
    """Apply a batch of profile records in one transaction; one result per record.

    The outcome is the one of applying the records one after the other: the citizens' locks
    are taken for the whole batch, every new event id is recorded, and each citizen's records
    are folded in order over its row (versions guard, erasures purge, stale events change
    nothing); then only the final row per citizen is written, audited and announced.
    """
    results: list[StreamResult] = [StreamResult(False, "duplicate")] * len(records)
    async with uow:
        await uow.lock_citizens(r.pseudonym for r in records)
        fresh = await uow.processed.add_many(ctx.consumer, [r.event_id for r in records])
        by_citizen: dict[str, list[int]] = {}
        for index, record in enumerate(records):
            if record.event_id in fresh:
                fresh.discard(record.event_id)  # a second copy in the batch is a duplicate
                by_citizen.setdefault(record.pseudonym, []).append(index)
        if by_citizen:
            await _apply_folded(uow, ctx, records, by_citizen, results)
        await uow.commit()
    return results


@dataclass
class _Fold:
    """One citizen's row while its records of a batch are applied in memory, in order."""

    row: CitizenView | None
    consents: tuple[Any, ...]
    baseline: dict[str, Any]
    """The data the pending webhook messages are relative to (the row before the batch, or
    the row when its messages were last cancelled)."""
    stored: tuple[ProfileRecord, ProfileVerified | ProfileUpdated] | None = None
    """The record whose projection the row now is, if it was written in this batch."""
    announce: bool = False
    """Whether the stored projection's webhook messages still stand (not cancelled since)."""
    cancel: bool = False
    delete_consents: bool = False


async def _apply_folded(
    uow: UnitOfWork,
    ctx: GatewayContext,
    records: Sequence[ProfileRecord],
    by_citizen: dict[str, list[int]],
    results: list[StreamResult],
) -> None:
    now = ctx.clock()
    citizens = sorted(by_citizen)
    rows = await uow.views.get_many(citizens, for_update=True)
    consent_sets = await uow.consents.get_many(citizens)
    newer: list[CitizenView] = []
    same_version: list[CitizenView] = []
    cancel: list[str] = []
    delete_consents: list[str] = []
    stored: list[tuple[_Fold, ProfileRecord, ProfileVerified | ProfileUpdated]] = []
    for pseudonym in citizens:
        before = rows.get(pseudonym)
        consent_set = consent_sets.get(pseudonym)
        fold = _Fold(
            row=before,
            consents=consent_set.consents if consent_set else (),
            baseline=dict(before.data) if before and not before.erased else {},
        )
        for index in by_citizen[pseudonym]:
            results[index] = _fold_record(ctx, fold, records[index], now)
        if fold.cancel:
            cancel.append(pseudonym)
        if fold.delete_consents:
            delete_consents.append(pseudonym)
        row = fold.row
        if row is not None and row is not before:
            if before is None or row.version > before.version:
                newer.append(row)
            else:
                same_version.append(row)
        if fold.stored is not None:
            stored.append((fold, *fold.stored))
    await uow.views.upsert_newer_many(newer)
    await uow.views.replace_same_version_many(same_version)
    await uow.webhooks.cancel_pending_many(cancel)
    await uow.consents.delete_many(delete_consents)
    access: list[tuple[AccessRecorded, TraceContext | None]] = []
    messages: list[WebhookMessage] = []
    endpoints: Sequence[Endpoint] | None = None
    for fold, record, event in stored:
        view = fold.row
        assert view is not None
        if view.data:
            access.append((_view_access(ctx, record, view), record.trace))
        changed = {name for name, value in view.data.items() if fold.baseline.get(name) != value}
        if changed and fold.announce:
            if endpoints is None:
                endpoints = await uow.webhooks.endpoints(enabled_only=True)
            messages += _webhook_messages(
                ctx, endpoints, view, fold.consents, changed, type(event).event_type, now
            )
    await uow.outbox.add_many(access)
    await uow.webhooks.enqueue_many(messages)


def _fold_record(
    ctx: GatewayContext, fold: _Fold, record: ProfileRecord, now: dt.datetime
) -> StreamResult:
    """Apply one record to the citizen's row in memory, as `apply_profile` did in SQL."""
    event = record.event
    current = fold.row
    if event is None:  # a tombstone: erase whatever version is there
        if current is None or current.erased:
            fold.delete_consents = True
            fold.consents = ()
            return StreamResult(False, "nothing to erase")
        return _fold_erase(fold, erased(record.pseudonym, current.version))
    if isinstance(event, CitizenDied | CredentialRevoked):
        if current is not None and current.version >= event.version:
            fold.cancel = True  # a stale death still cancels the pending messages
            fold.announce = False
            fold.baseline = dict(current.data) if not current.erased else {}
            return StreamResult(False, "stale")
        return _fold_erase(fold, erased(record.pseudonym, event.version))
    if isinstance(event, ProfileVerified | ProfileUpdated):
        if current is not None and current.version >= event.version:
            return StreamResult(False, "stale")
        fold.row = project_profile(
            agency=ctx.agency,
            pseudonym=record.pseudonym,
            version=event.version,
            profile=event.profile,
            verified_at=event.verified_at,
            consents=fold.consents,
            now=now,
            source=record.source,
        )
        fold.stored = (record, event)
        fold.announce = True
        return StreamResult(True, "stored", view=fold.row)
    return StreamResult(False, "ignored")  # pragma: no cover - decode() yields only the above


def _fold_erase(fold: _Fold, view: CitizenView) -> StreamResult:
    fold.row = view
    fold.stored = None
    fold.announce = False
    fold.cancel = True
    fold.baseline = {}
    fold.delete_consents = True
    fold.consents = ()
    return StreamResult(True, "erased")


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
        await uow.outbox.add(_view_access(ctx, record, view))
    before = dict(previous.data) if previous and not previous.erased else {}
    changed = {name for name, value in view.data.items() if before.get(name) != value}
    if changed:
        endpoints = await uow.webhooks.endpoints(enabled_only=True)
        await uow.webhooks.enqueue_many(
            _webhook_messages(ctx, endpoints, view, consents, changed, type(event).event_type, now)
        )
    return StreamResult(True, "stored", view=view)


def _view_access(ctx: GatewayContext, record: ProfileRecord, view: CitizenView) -> AccessRecorded:
    """The access event for storing a citizen's fields in the agency's view."""
    return ctx.access(
        pseudonym=record.pseudonym,
        fields=sorted(view.data),
        channel=Channel.VIEW,
        outcome=Outcome.SERVED,
        correlation_id=record.event_id[:64],
    )


def _webhook_messages(
    ctx: GatewayContext,
    endpoints: Sequence[Endpoint],
    view: CitizenView,
    consents: tuple[Any, ...],
    changed: set[str],
    event_type: str,
    now: dt.datetime,
) -> list[WebhookMessage]:
    messages = []
    for endpoint in endpoints:
        service = ctx.agency.service(endpoint.service)
        if service is None:
            continue
        visible = answer_fields(service, consents, view, now)
        if not visible or not changed & set(visible):
            continue
        messages.append(
            WebhookMessage(
                id=uuid.uuid4(),
                endpoint_id=endpoint.id,
                pseudonym=view.pseudonym,
                version=view.version,
                event_type=event_type,
                changed_fields=tuple(sorted(changed & set(visible))),
            )
        )
    return messages


@dataclass(frozen=True)
class ConsentRecord:
    event_id: str
    pseudonym: str
    event: ConsentEvent


async def apply_consents(
    uow: UnitOfWork, ctx: GatewayContext, record: ConsentRecord
) -> StreamResult:
    """Replace the citizen's consent set (if newer) and bring the row in line with it."""
    return (await apply_consent_batch(uow, ctx, [record]))[0]


async def apply_consent_batch(
    uow: UnitOfWork, ctx: GatewayContext, records: Sequence[ConsentRecord]
) -> list[StreamResult]:
    """Apply a batch of consent records in one transaction; one result per record.

    Each event carries the citizen's whole active set, so per citizen the newest set of the
    batch wins if it is newer than the stored one; the row is restricted to it once, and a
    `refetch` is returned when the set grants fields the row lacks.
    """
    results: list[StreamResult] = [StreamResult(False, "duplicate")] * len(records)
    async with uow:
        await uow.lock_citizens(r.pseudonym for r in records)
        fresh = await uow.processed.add_many(ctx.consumer, [r.event_id for r in records])
        newest: dict[str, int] = {}
        for index, record in enumerate(records):
            if record.event_id not in fresh:
                continue
            fresh.discard(record.event_id)
            results[index] = StreamResult(False, "stale")
            best = newest.get(record.pseudonym)
            if best is None or records[best].event.consents_version < record.event.consents_version:
                newest[record.pseudonym] = index
        stored = await uow.consents.get_many(newest)
        winners = {
            pseudonym: index
            for pseudonym, index in newest.items()
            if pseudonym not in stored
            or stored[pseudonym].version < records[index].event.consents_version
        }
        sets = {
            pseudonym: ConsentSet(
                pseudonym,
                records[index].event.consents_version,
                consents_for_agency(records[index].event.active_consents, ctx.agency.code),
            )
            for pseudonym, index in winners.items()
        }
        await uow.consents.replace_newer_many(list(sets.values()))
        now = ctx.clock()
        views = await uow.views.get_many(sorted(winners), for_update=True)
        restricted_rows = []
        for pseudonym, index in winners.items():
            view = views.get(pseudonym)
            refetch = None
            if view is not None and not view.erased:
                mine = sets[pseudonym].consents
                restricted = restrict(view, ctx.agency, mine, now)
                if restricted != view:
                    restricted_rows.append(restricted)
                if missing_fields(restricted, ctx.agency, mine, now) and view.source is not None:
                    refetch = view.source
            results[index] = StreamResult(True, "consents replaced", refetch=refetch)
        await uow.views.replace_same_version_many(restricted_rows)
        await uow.commit()
    return results


async def sweep_retention(uow: UnitOfWork, ctx: GatewayContext, *, limit: int = 500) -> int:
    """Purge fields whose retention or consent has run out; return how many rows changed."""
    async with uow:
        now = ctx.clock()
        changed = 0
        due_rows = await uow.views.due_for_expiry(now, limit)
        await uow.lock_citizens(due.pseudonym for due in due_rows)
        for due in due_rows:
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
