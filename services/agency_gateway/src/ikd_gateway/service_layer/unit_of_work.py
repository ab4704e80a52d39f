"""The unit of work: one transaction over the view, consents, outbox and webhook tables.

Handlers commit in exactly one place (`commit()`); leaving the block without it rolls back,
so a view write, its idempotency record and its access event stand or fall together.
"""

from __future__ import annotations

import abc
import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from ikd_gateway.domain.model import CitizenView, ConsentSet
from ikd_shared.events.access_v1 import AccessRecorded


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
    outcome: str  # delivered | retry | dead | gone


class ViewRepository(abc.ABC):
    @abc.abstractmethod
    async def get(self, pseudonym: str, *, for_update: bool = False) -> CitizenView | None: ...

    @abc.abstractmethod
    async def upsert_newer(self, view: CitizenView) -> bool:
        """Insert, or replace a row with a lower version; False if the row is as new or newer."""

    @abc.abstractmethod
    async def replace_same_version(self, view: CitizenView) -> bool:
        """Replace the row if it still has `view.version` (consent change, retention sweep)."""

    @abc.abstractmethod
    async def due_for_expiry(self, now: dt.datetime, limit: int) -> Sequence[CitizenView]:
        """Rows with a field past its purge time."""


class ConsentRepository(abc.ABC):
    @abc.abstractmethod
    async def get(self, pseudonym: str) -> ConsentSet | None: ...

    @abc.abstractmethod
    async def replace_newer(self, consents: ConsentSet) -> bool:
        """Replace the set if `consents.version` is newer; False for a stale or duplicate set."""

    @abc.abstractmethod
    async def delete(self, pseudonym: str) -> None: ...


class ProcessedEvents(abc.ABC):
    @abc.abstractmethod
    async def add(self, consumer: str, event_id: str) -> bool:
        """Record the event as processed; False if it already was."""


class AccessOutbox(abc.ABC):
    @abc.abstractmethod
    async def add(self, event: AccessRecorded) -> None: ...


class WebhookRepository(abc.ABC):
    @abc.abstractmethod
    async def add_endpoint(self, endpoint: Endpoint, created_by: str) -> None: ...

    @abc.abstractmethod
    async def endpoints(self, *, enabled_only: bool = False) -> Sequence[Endpoint]: ...

    @abc.abstractmethod
    async def endpoint(self, endpoint_id: uuid.UUID) -> Endpoint | None: ...

    @abc.abstractmethod
    async def disable_endpoint(self, endpoint_id: uuid.UUID, reason: str) -> None: ...

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


class UnitOfWork(abc.ABC):
    views: ViewRepository
    consents: ConsentRepository
    processed: ProcessedEvents
    outbox: AccessOutbox
    webhooks: WebhookRepository

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.rollback()

    @abc.abstractmethod
    async def lock_citizen(self, pseudonym: str) -> None:
        """Serialise this transaction with any other touching the same citizen.

        The profile and consent streams are consumed concurrently; without this a profile
        write could project with consents that a concurrent revocation just replaced.
        """

    @abc.abstractmethod
    async def commit(self) -> None: ...

    @abc.abstractmethod
    async def rollback(self) -> None: ...
