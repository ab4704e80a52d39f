"""The unit of work: one transaction over the view, consents, outbox and webhook tables.

`async with uow:` commits when the block ends normally and rolls back when it raises, so a view
write, its idempotency record and its access event stand or fall together.
"""

from __future__ import annotations

import abc
import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from ikd_gateway.domain.model import CitizenView, ConsentSet, Fingerprint
from ikd_shared import tracing
from ikd_shared.events.access_v1 import AccessRecorded
from ikd_shared.events.agency_v1 import AgencyRecordChanged
from ikd_shared.events.profile_v1 import Relationship
from ikd_shared.tracing import TraceContext


@dataclass(frozen=True, slots=True)
class Endpoint:
    id: uuid.UUID
    url: str
    service: str
    secret: str
    enabled: bool
    description: str | None = None
    disabled_reason: str | None = None
    created_at: dt.datetime | None = None
    failing_since: dt.datetime | None = None
    """Since when every attempt failed (None after a success)."""
    previous_secret: str | None = None
    """The secret a rotation replaced, still signing until `previous_secret_expires_at`."""
    previous_secret_expires_at: dt.datetime | None = None

    def signing_secrets(self, now: dt.datetime) -> tuple[str, ...]:
        """The secrets a delivery at `now` is signed with: the current one first, then the
        replaced one while its grace period lasts."""
        if (
            self.previous_secret is not None
            and self.previous_secret_expires_at is not None
            and now < self.previous_secret_expires_at
        ):
            return (self.secret, self.previous_secret)
        return (self.secret,)


@dataclass(frozen=True, slots=True)
class WebhookMessage:
    id: uuid.UUID
    endpoint_id: uuid.UUID
    pseudonym: str
    version: int
    event_type: str
    changed_fields: tuple[str, ...]
    attempts: int = 0
    status: str = "pending"


@dataclass(frozen=True, slots=True)
class Attempt:
    message_id: uuid.UUID
    endpoint_id: uuid.UUID
    attempt: int
    status_code: int | None
    error: str | None
    duration_ms: float
    outcome: str  # delivered | retry | dead | gone | disabled
    next_retry_at: dt.datetime | None = None  # when a `retry` outcome scheduled the next attempt


@dataclass(frozen=True, slots=True)
class Delivery:
    """One logged attempt with its message, as an endpoint's delivery log shows it."""

    attempt: Attempt
    attempted_at: dt.datetime
    event_type: str


class ViewRepository(abc.ABC):
    @abc.abstractmethod
    async def get(self, pseudonym: str, *, for_update: bool = False) -> CitizenView | None: ...

    @abc.abstractmethod
    async def replace_same_version(self, view: CitizenView) -> bool:
        """Replace the row if it still has `view.version` (consent change, retention sweep)."""

    @abc.abstractmethod
    async def due_for_expiry(self, now: dt.datetime, limit: int) -> Sequence[CitizenView]:
        """Rows with a field or a relationship past its end."""

    @abc.abstractmethod
    async def delete_many(self, pseudonyms: Sequence[str]) -> None:
        """Delete the rows: the agency has no reason left to hold these citizens."""

    @abc.abstractmethod
    async def holding_relationship(
        self, relationship_id: uuid.UUID
    ) -> tuple[str, Relationship] | None:
        """The citizen (pseudonym) whose row holds this relationship, and the relationship."""

    # Batch forms (the stream worker applies many records per transaction). The defaults
    # loop over the single-row methods; the PostgreSQL adapter does each in one round trip.

    async def get_many(
        self, pseudonyms: Iterable[str], *, for_update: bool = False
    ) -> dict[str, CitizenView]:
        found = {}
        for pseudonym in pseudonyms:
            view = await self.get(pseudonym, for_update=for_update)
            if view is not None:
                found[pseudonym] = view
        return found

    @abc.abstractmethod
    async def upsert_newer_many(self, views: Sequence[CitizenView]) -> None:
        """Insert each row, or replace a row with a lower version (the caller already knows
        they are newer)."""

    async def replace_same_version_many(self, views: Sequence[CitizenView]) -> None:
        for view in views:
            await self.replace_same_version(view)


class ConsentRepository(abc.ABC):
    @abc.abstractmethod
    async def get(self, pseudonym: str) -> ConsentSet | None: ...

    @abc.abstractmethod
    async def replace_newer(self, consents: ConsentSet) -> bool:
        """Replace the set if `consents.version` is newer; False for a stale or duplicate set."""

    @abc.abstractmethod
    async def delete(self, pseudonym: str) -> None: ...

    async def get_many(self, pseudonyms: Iterable[str]) -> dict[str, ConsentSet]:
        found = {}
        for pseudonym in pseudonyms:
            consents = await self.get(pseudonym)
            if consents is not None:
                found[pseudonym] = consents
        return found

    async def replace_newer_many(self, sets: Sequence[ConsentSet]) -> None:
        for consents in sets:
            await self.replace_newer(consents)

    async def delete_many(self, pseudonyms: Sequence[str]) -> None:
        for pseudonym in pseudonyms:
            await self.delete(pseudonym)


class ProcessedEvents(abc.ABC):
    @abc.abstractmethod
    async def add(self, consumer: str, event_id: str) -> bool:
        """Record the event as processed; False if it already was."""

    async def add_many(self, consumer: str, event_ids: Sequence[str]) -> set[str]:
        """Record the events as processed; the ids that were not yet recorded."""
        return {event_id for event_id in event_ids if await self.add(consumer, event_id)}


class AccessOutbox(abc.ABC):
    @abc.abstractmethod
    async def add(self, event: AccessRecorded) -> None:
        """Queue the event with the current trace context (`tracing.current_trace()`)."""

    async def add_many(self, events: Sequence[tuple[AccessRecorded, TraceContext | None]]) -> None:
        """Queue each event with the trace context of the record that caused it."""
        for event, trace in events:
            with tracing.bound(trace_context=trace):
                await self.add(event)


@dataclass(frozen=True, slots=True)
class AgencyPublication:
    """One record for the agency topic: the citizen's current view, or a tombstone (None)."""

    event_id: uuid.UUID
    pseudonym: str
    event: AgencyRecordChanged | None
    fingerprint: Fingerprint
    """What the topic says of the citizen once this record is published ({} after a purge)."""
    trace: TraceContext | None = None


class AgencyTopicOutbox(abc.ABC):
    """Records for the agency topic, queued in the transaction that changed the view."""

    @abc.abstractmethod
    async def published(self, pseudonyms: Iterable[str]) -> dict[str, Fingerprint]:
        """What the topic says of each citizen once every queued record is out (absent:
        nothing)."""

    @abc.abstractmethod
    async def add_many(self, publications: Sequence[AgencyPublication]) -> None:
        """Queue the records and remember their fingerprints."""


class WebhookRepository(abc.ABC):
    @abc.abstractmethod
    async def add_endpoint(self, endpoint: Endpoint, created_by: str) -> None: ...

    @abc.abstractmethod
    async def endpoints(self, *, enabled_only: bool = False) -> Sequence[Endpoint]: ...

    async def lock_endpoints(self) -> None:  # noqa: B027 - a store in one process has no race
        """Serialise registrations until the transaction ends."""

    @abc.abstractmethod
    async def endpoint(self, endpoint_id: uuid.UUID) -> Endpoint | None: ...

    @abc.abstractmethod
    async def disable_endpoint(self, endpoint_id: uuid.UUID, reason: str) -> None: ...

    @abc.abstractmethod
    async def rotate_secret(
        self, endpoint_id: uuid.UUID, secret: str, previous_expires_at: dt.datetime | None
    ) -> None:
        """Make `secret` the endpoint's secret; the one it replaces keeps signing until
        `previous_expires_at` (None: it stops at once). Any older replaced secret is dropped."""

    @abc.abstractmethod
    async def endpoint_failed(self, endpoint_id: uuid.UUID, now: dt.datetime) -> dt.datetime:
        """Note a failed attempt; since when the endpoint has failed without a success."""

    @abc.abstractmethod
    async def endpoint_succeeded(self, endpoint_id: uuid.UUID) -> None:
        """Note a delivered attempt: the run of failures is over."""

    @abc.abstractmethod
    async def enqueue(self, message: WebhookMessage) -> None: ...

    @abc.abstractmethod
    async def claim_due(
        self, now: dt.datetime, limit: int, lease: dt.timedelta
    ) -> Sequence[WebhookMessage]:
        """Due pending messages; their next attempt moves `lease` ahead while one is sending."""

    @abc.abstractmethod
    async def message(self, message_id: uuid.UUID) -> WebhookMessage | None: ...

    @abc.abstractmethod
    async def record_attempt(self, attempt: Attempt) -> None: ...

    @abc.abstractmethod
    async def deliveries(self, endpoint_id: uuid.UUID, limit: int) -> Sequence[Delivery]:
        """The endpoint's logged attempts, newest first."""

    @abc.abstractmethod
    async def set_status(
        self,
        message_id: uuid.UUID,
        status: str,
        *,
        attempts: int,
        next_attempt_at: dt.datetime | None = None,
    ) -> None: ...

    @abc.abstractmethod
    async def cancel_pending(self, pseudonym: str) -> int: ...

    async def enqueue_many(self, messages: Sequence[WebhookMessage]) -> None:
        for message in messages:
            await self.enqueue(message)

    async def cancel_pending_many(self, pseudonyms: Sequence[str]) -> int:
        return sum([await self.cancel_pending(pseudonym) for pseudonym in pseudonyms])


class UnitOfWork(abc.ABC):
    views: ViewRepository
    consents: ConsentRepository
    processed: ProcessedEvents
    outbox: AccessOutbox
    webhooks: WebhookRepository
    agency_topic: AgencyTopicOutbox

    @abc.abstractmethod
    async def __aenter__(self) -> Self: ...

    @abc.abstractmethod
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Commit if the block ended normally, roll back if it raised: the only place that does."""

    @abc.abstractmethod
    async def lock_citizen(self, pseudonym: str) -> None:
        """Serialise this transaction with any other touching the same citizen.

        The profile and consent streams are consumed concurrently; without this a profile
        write could project with consents that a concurrent revocation just replaced.
        """

    async def lock_citizens(self, pseudonyms: Iterable[str]) -> None:
        """`lock_citizen` for several citizens, always in the same order (no deadlock between
        two transactions locking overlapping sets)."""
        for pseudonym in sorted(set(pseudonyms)):
            await self.lock_citizen(pseudonym)
