"""The stream: apply profile and consent records to the agency's view, and the retention sweep.

Each use case is one unit of work. Stream use cases are idempotent: the event id is recorded
in the same transaction as the write, and writes are version-guarded, so a redelivered or stale
event changes nothing; a citizen no longer held leaves a version floor for that
(`model.version_floor`), so an older version delivered again is not stored as new either.
Whatever changes what the agency may hold of a citizen also queues, in the same transaction, a
record for the agency topic and its access events.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ikd_gateway.domain.model import (
    CitizenView,
    ConsentSet,
    SourcePosition,
    answer_fields,
    changed_fields,
    consents_for_agency,
    disclosed,
    fingerprint,
    missing_fields,
    restrict,
    version_floor,
)
from ikd_gateway.domain.projection import Change, CitizenFold, fold
from ikd_gateway.service_layer.context import GatewayContext
from ikd_gateway.service_layer.unit_of_work import (
    AgencyPublication,
    Endpoint,
    UnitOfWork,
    WebhookMessage,
)
from ikd_shared.events.access_v1 import AccessRecorded, Channel, Outcome
from ikd_shared.events.agency_v1 import AgencyRecordChanged, ServiceFields
from ikd_shared.events.consent_v1 import Consent, ConsentEvent
from ikd_shared.events.profile_v1 import (
    ProfileEvent,
    ProfileUpdated,
    ProfileVerified,
    RelationshipsChanged,
)
from ikd_shared.tracing import TraceContext


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
    """Apply one profile record (see `apply_profiles`)."""
    return (await apply_profiles(uow, ctx, [record], reapply=reapply))[0]


async def apply_profiles(
    uow: UnitOfWork,
    ctx: GatewayContext,
    records: Sequence[ProfileRecord],
    *,
    reapply: bool = False,
) -> list[StreamResult]:
    """Apply a batch of profile records in one transaction; one result per record.

    The outcome is the one of applying the records one after the other: the citizens' locks
    are taken for the whole batch, every new event id is recorded, and each citizen's records
    are folded in order over its row (`domain.projection`); then only the final row per
    citizen is written, audited and announced. `reapply` re-projects versions the rows already
    have (after a consent grant): no idempotency record, a row is replaced only if it still
    has that version.
    """
    results: list[StreamResult] = [StreamResult(False, "duplicate")] * len(records)
    async with uow:
        await uow.lock_citizens(r.pseudonym for r in records)
        if reapply:
            fresh = {r.event_id for r in records}
        else:
            fresh = await uow.processed.add_many(ctx.consumer, [r.event_id for r in records])
        by_citizen: dict[str, list[int]] = {}
        for index, record in enumerate(records):
            if record.event_id in fresh:
                fresh.discard(record.event_id)  # a second copy in the batch is a duplicate
                by_citizen.setdefault(record.pseudonym, []).append(index)
        if by_citizen:
            await _apply_folded(uow, ctx, records, by_citizen, results, reapply=reapply)
    return results


async def _apply_folded(
    uow: UnitOfWork,
    ctx: GatewayContext,
    records: Sequence[ProfileRecord],
    by_citizen: dict[str, list[int]],
    results: list[StreamResult],
    *,
    reapply: bool,
) -> None:
    now = ctx.clock()
    floor_until = now + ctx.version_floor
    citizens = sorted(by_citizen)
    rows = await uow.views.get_many(citizens, for_update=True)
    consent_sets = await uow.consents.get_many(citizens)
    newer: list[CitizenView] = []
    same_version: list[CitizenView] = []
    cancel: list[str] = []
    delete_consents: list[str] = []
    stored: list[tuple[CitizenFold, ProfileRecord]] = []
    settled: list[Settled] = []
    for pseudonym in citizens:
        before = rows.get(pseudonym)
        consent_set = consent_sets.get(pseudonym)
        state = CitizenFold.start(before, consent_set.consents if consent_set else ())
        for index in by_citizen[pseudonym]:
            record = records[index]
            change = Change(pseudonym, record.event, record.source, reapply=reapply)
            step = fold(state, index, change, ctx.agency, now, floor_until)
            results[index] = StreamResult(
                step.applied, step.reason, view=state.row if step.reason == "stored" else None
            )
        if state.cancel:
            cancel.append(pseudonym)
        if state.delete_consents:
            delete_consents.append(pseudonym)
        row = state.row  # None only if there was none: a purge leaves a floor
        if row is not None and row is not before:
            if before is None or row.version > before.version:
                newer.append(row)
            else:
                same_version.append(row)
        if state.stored is not None:
            stored.append((state, records[state.stored]))
        last = records[by_citizen[pseudonym][-1]]
        settled.append(Settled(pseudonym, row, state.consents, last.trace))
    await uow.views.upsert_newer_many(newer)
    await uow.views.replace_same_version_many(same_version)
    await uow.webhooks.cancel_pending_many(cancel)
    await uow.consents.delete_many(delete_consents)
    access: list[tuple[AccessRecorded, TraceContext | None]] = []
    messages: list[WebhookMessage] = []
    endpoints: Sequence[Endpoint] | None = None
    for state, record in stored:
        view = state.row
        assert view is not None
        if view.data:
            access.append((_view_access(ctx, record, view), record.trace))
        changed = state.changed
        if changed and state.announce:
            if endpoints is None:
                endpoints = await uow.webhooks.endpoints(enabled_only=True)
            messages += _webhook_messages(
                ctx, endpoints, view, state.consents, changed, _event_type(record), now
            )
    await uow.webhooks.enqueue_many(messages)
    await publish_changes(uow, ctx, settled, now, access=access)  # one outbox write per batch


def _event_type(record: ProfileRecord) -> str:
    event = record.event
    assert isinstance(event, ProfileVerified | ProfileUpdated | RelationshipsChanged), (
        "only these are stored"
    )
    return event.event_type


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
    batch wins if it is newer than the stored one (an empty one deletes it); the row is
    restricted to it once, and a `refetch` is returned when the set grants fields the row
    lacks.
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
        # A set with none of this agency's consents is not kept: the other agencies' consents
        # reach every gateway, and an empty set would still say the citizen exists.
        await uow.consents.replace_newer_many([s for s in sets.values() if s.consents])
        await uow.consents.delete_many([p for p, s in sets.items() if not s.consents])
        now = ctx.clock()
        views = await uow.views.get_many(sorted(winners), for_update=True)
        restricted_rows = []
        dropped = []
        settled = []
        for pseudonym, index in winners.items():
            view = views.get(pseudonym)
            refetch = None
            mine = sets[pseudonym].consents
            if view is not None and not view.erased:
                restricted = restrict(view, ctx.agency, mine, now)
                if restricted is None:
                    dropped.append(pseudonym)
                    restricted = version_floor(pseudonym, view.version, now + ctx.version_floor)
                if restricted != view:
                    restricted_rows.append(restricted)
                if missing_fields(restricted, ctx.agency, mine, now) and view.source is not None:
                    refetch = view.source
                view = restricted
            settled.append(Settled(pseudonym, view, mine))
            results[index] = StreamResult(True, "consents replaced", refetch=refetch)
        await uow.webhooks.cancel_pending_many(dropped)
        await uow.views.replace_same_version_many(restricted_rows)
        await publish_changes(uow, ctx, settled, now)
    return results


async def sweep_retention(uow: UnitOfWork, ctx: GatewayContext, *, limit: int = 500) -> int:
    """Purge fields whose relationship, retention or consent has run out, and the whole row
    (leaving a version floor) when the last relationship has; delete floors whose time is up;
    return how many rows changed."""
    async with uow:
        now = ctx.clock()
        changed = 0
        due_rows = await uow.views.due_for_expiry(now, limit)
        await uow.lock_citizens(due.pseudonym for due in due_rows)
        settled = []
        for due in due_rows:
            view = await uow.views.get(due.pseudonym, for_update=True)
            if view is None:
                continue
            if view.is_floor:  # nothing to publish: the purge that left it already did
                if view.next_expiry is not None and view.next_expiry <= now:
                    await uow.views.delete_many([view.pseudonym])
                    changed += 1
                continue
            consent_set = await uow.consents.get(view.pseudonym)
            consents = consent_set.consents if consent_set else ()
            restricted = restrict(view, ctx.agency, consents, now)
            if restricted is None:
                restricted = version_floor(view.pseudonym, view.version, now + ctx.version_floor)
                await uow.webhooks.cancel_pending_many([view.pseudonym])
            await uow.views.replace_same_version(restricted)
            settled.append(Settled(view.pseudonym, restricted, consents))
            changed += 1
        await publish_changes(uow, ctx, settled, now)
        return changed


@dataclass(frozen=True)
class Settled:
    """A citizen's row and consents as a use case leaves them (None: no row)."""

    pseudonym: str
    view: CitizenView | None
    consents: tuple[Consent, ...]
    trace: TraceContext | None = None


async def publish_changes(
    uow: UnitOfWork,
    ctx: GatewayContext,
    citizens: Iterable[Settled],
    now: dt.datetime,
    *,
    access: list[tuple[AccessRecorded, TraceContext | None]] | None = None,
) -> None:
    """Queue an agency-topic record for each citizen whose disclosure changed, with one access
    event per service it discloses to (one, fieldless, for a purge).

    The comparison is with what the topic last said (its fingerprint), not with the row before:
    a redelivered event or a change the agency cannot see publishes nothing, and a disclosure
    that only time changed is caught up by the next write. `access`, the batch's other access
    events, are queued in the same write.
    """
    access = [] if access is None else access  # queued with the topic's access events
    settled = {citizen.pseudonym: citizen for citizen in citizens}
    if not settled:
        await uow.outbox.add_many(access)
        return
    published = await uow.agency_topic.published(settled)
    publications: list[AgencyPublication] = []
    for pseudonym in sorted(settled):
        citizen = settled[pseudonym]
        disclosure = disclosed(ctx.agency, citizen.consents, citizen.view, now)
        after = fingerprint(disclosure)
        before = published.get(pseudonym, {})
        if after == before:
            continue
        event_id = uuid.uuid4()
        event = None
        if disclosure:
            assert citizen.view is not None
            event = agency_record(ctx, citizen.view, disclosure, changed_fields(before, after))
            access += [
                (_topic_access(ctx, pseudonym, event_id, grant), citizen.trace)
                for grant in event.services
            ]
        else:
            access.append((_topic_access(ctx, pseudonym, event_id, None), citizen.trace))
        publications.append(AgencyPublication(event_id, pseudonym, event, after, citizen.trace))
    await uow.agency_topic.add_many(publications)
    await uow.outbox.add_many(access)


def agency_record(
    ctx: GatewayContext,
    view: CitizenView,
    disclosure: dict[str, dict[str, Any]],
    changed: list[str],
) -> AgencyRecordChanged:
    """The agency-topic record of a citizen: per service its prefill answer (`disclosed`)."""
    assert view.verified_at is not None
    services = []
    for code, fields in sorted(disclosure.items()):
        service = ctx.agency.service(code)
        assert service is not None
        services.append(
            ServiceFields(
                service=code,
                purpose=service.purpose.code,
                legal_basis=service.legal_basis,
                fields=fields,
            )
        )
    return AgencyRecordChanged(
        agency=ctx.agency.code,
        pseudonym=view.pseudonym,
        version=view.version,
        verified_at=view.verified_at,
        changed_fields=changed,
        services=services,
    )


def _topic_access(
    ctx: GatewayContext, pseudonym: str, event_id: uuid.UUID, grant: ServiceFields | None
) -> AccessRecorded:
    """The access event of one agency-topic publication (a purge discloses no field)."""
    if grant is None:
        return ctx.access(
            pseudonym=pseudonym,
            channel=Channel.AGENCY_TOPIC,
            outcome=Outcome.SERVED,
            reason="purged",
            correlation_id=str(event_id),
        )
    return ctx.access(
        service=grant.service,
        pseudonym=pseudonym,
        fields=sorted(grant.fields),
        purpose=grant.purpose,
        legal_basis=grant.legal_basis,
        channel=Channel.AGENCY_TOPIC,
        outcome=Outcome.SERVED,
        correlation_id=str(event_id),
    )
