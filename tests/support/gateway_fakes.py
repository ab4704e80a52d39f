"""In-memory stand-ins for the gateway's PostgreSQL unit of work (unit tests only)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import replace
from types import TracebackType
from typing import TypeVar

from ikd_gateway.domain.model import CitizenView, ConsentSet, Fingerprint
from ikd_gateway.domain.throttle import DenialCounter
from ikd_gateway.service_layer import unit_of_work as u
from ikd_gateway.service_layer.throttle import Change, DenialCounters
from ikd_shared.events.access_v1 import AccessRecorded
from ikd_shared.events.profile_v1 import Relationship

T = TypeVar("T")


class Store:
    """The 'database': committed state shared by every unit of work."""

    def __init__(self) -> None:
        self.views: dict[str, CitizenView] = {}
        self.consents: dict[str, ConsentSet] = {}
        self.processed: set[tuple[str, str]] = set()
        self.outbox: list[AccessRecorded] = []
        self.endpoints: dict[uuid.UUID, u.Endpoint] = {}
        self.messages: dict[uuid.UUID, u.WebhookMessage] = {}
        self.next_attempt: dict[uuid.UUID, dt.datetime] = {}
        self.attempts: list[u.Attempt] = []
        self.attempted_at: list[dt.datetime] = []
        self.agency_records: list[u.AgencyPublication] = []
        self.disclosed: dict[str, Fingerprint] = {}

    def snapshot(self) -> Store:
        return _clone(self)


def _clone(store: Store) -> Store:
    new = Store()
    new.views = dict(store.views)
    new.consents = dict(store.consents)
    new.processed = set(store.processed)
    new.outbox = list(store.outbox)
    new.endpoints = dict(store.endpoints)
    new.messages = dict(store.messages)
    new.next_attempt = dict(store.next_attempt)
    new.attempts = list(store.attempts)
    new.attempted_at = list(store.attempted_at)
    new.agency_records = list(store.agency_records)
    new.disclosed = dict(store.disclosed)
    return new


def assert_only_a_floor(row: CitizenView | None) -> None:
    """What may remain of a citizen no longer held: a version floor with the pseudonym, the last
    version and its end, and no personal data."""
    assert row is not None, "a version floor"
    assert row.is_floor, "a version floor"
    assert (dict(row.data), dict(row.expires), row.verified_at) == ({}, {}, None)
    assert (row.relationships, row.source, row.erased) == ((), None, False)
    assert row.next_expiry == row.floor_until, "it ends"


class FakeViews(u.ViewRepository):
    def __init__(self, s: Store) -> None:
        self.s = s

    async def get(self, pseudonym: str, *, for_update: bool = False) -> CitizenView | None:
        return self.s.views.get(pseudonym)

    async def upsert_newer_many(self, views: Sequence[CitizenView]) -> None:
        for view in views:
            current = self.s.views.get(view.pseudonym)
            if current is None or current.version < view.version:
                self.s.views[view.pseudonym] = view

    async def replace_same_version(self, view: CitizenView) -> bool:
        current = self.s.views.get(view.pseudonym)
        if current is None or current.version != view.version:
            return False
        self.s.views[view.pseudonym] = view
        return True

    async def due_for_expiry(self, now: dt.datetime, limit: int) -> Sequence[CitizenView]:
        due = [v for v in self.s.views.values() if v.next_expiry and v.next_expiry <= now]
        return due[:limit]

    async def delete_many(self, pseudonyms: Sequence[str]) -> None:
        for pseudonym in pseudonyms:
            self.s.views.pop(pseudonym, None)

    async def holding_relationship(
        self, relationship_id: uuid.UUID
    ) -> tuple[str, Relationship] | None:
        for view in self.s.views.values():
            for relationship in view.relationships:
                if relationship.relationship_id == relationship_id:
                    return view.pseudonym, relationship
        return None


class FakeConsents(u.ConsentRepository):
    def __init__(self, s: Store) -> None:
        self.s = s

    async def get(self, pseudonym: str) -> ConsentSet | None:
        return self.s.consents.get(pseudonym)

    async def replace_newer(self, consents: ConsentSet) -> bool:
        current = self.s.consents.get(consents.pseudonym)
        if current is not None and current.version >= consents.version:
            return False
        self.s.consents[consents.pseudonym] = consents
        return True

    async def delete(self, pseudonym: str) -> None:
        self.s.consents.pop(pseudonym, None)


class FakeProcessed(u.ProcessedEvents):
    def __init__(self, s: Store) -> None:
        self.s = s

    async def add(self, consumer: str, event_id: str) -> bool:
        if (consumer, event_id) in self.s.processed:
            return False
        self.s.processed.add((consumer, event_id))
        return True


class FakeOutbox(u.AccessOutbox):
    def __init__(self, s: Store) -> None:
        self.s = s

    async def add(self, event: AccessRecorded) -> None:
        self.s.outbox.append(event)


class FakeDenialCounters(DenialCounters):
    """The API clients' denial counters (separate from the store: not transactional)."""

    def __init__(self) -> None:
        self.counters: dict[str, DenialCounter] = {}

    async def get(self, client_id: str) -> DenialCounter | None:
        return self.counters.get(client_id)

    async def update(self, client_id: str, change: Change[T]) -> T:
        after, result = change(self.counters.get(client_id))
        if after is not None:
            self.counters[client_id] = after
        return result


class FakeAgencyTopic(u.AgencyTopicOutbox):
    def __init__(self, s: Store) -> None:
        self.s = s

    async def published(self, pseudonyms: Iterable[str]) -> dict[str, Fingerprint]:
        return {p: self.s.disclosed[p] for p in pseudonyms if p in self.s.disclosed}

    async def add_many(self, publications: Sequence[u.AgencyPublication]) -> None:
        for publication in publications:
            self.s.agency_records.append(publication)
            if publication.fingerprint:
                self.s.disclosed[publication.pseudonym] = publication.fingerprint
            else:
                self.s.disclosed.pop(publication.pseudonym, None)


class FakeWebhooks(u.WebhookRepository):
    def __init__(self, s: Store) -> None:
        self.s = s

    async def add_endpoint(self, endpoint: u.Endpoint, created_by: str) -> None:
        self.s.endpoints[endpoint.id] = endpoint

    async def endpoints(self, *, enabled_only: bool = False) -> Sequence[u.Endpoint]:
        return [e for e in self.s.endpoints.values() if e.enabled or not enabled_only]

    async def endpoint(self, endpoint_id: uuid.UUID) -> u.Endpoint | None:
        return self.s.endpoints.get(endpoint_id)

    async def disable_endpoint(self, endpoint_id: uuid.UUID, reason: str) -> None:
        self.s.endpoints[endpoint_id] = replace(
            self.s.endpoints[endpoint_id], enabled=False, disabled_reason=reason
        )

    async def rotate_secret(
        self, endpoint_id: uuid.UUID, secret: str, previous_expires_at: dt.datetime | None
    ) -> None:
        endpoint = self.s.endpoints[endpoint_id]
        self.s.endpoints[endpoint_id] = replace(
            endpoint,
            secret=secret,
            previous_secret=endpoint.secret if previous_expires_at else None,
            previous_secret_expires_at=previous_expires_at,
        )

    async def endpoint_failed(self, endpoint_id: uuid.UUID, now: dt.datetime) -> dt.datetime:
        endpoint = self.s.endpoints[endpoint_id]
        since = endpoint.failing_since or now
        self.s.endpoints[endpoint_id] = replace(endpoint, failing_since=since)
        return since

    async def endpoint_succeeded(self, endpoint_id: uuid.UUID) -> None:
        self.s.endpoints[endpoint_id] = replace(self.s.endpoints[endpoint_id], failing_since=None)

    async def enqueue(self, message: u.WebhookMessage) -> None:
        self.s.messages[message.id] = message
        self.s.next_attempt[message.id] = dt.datetime.min.replace(tzinfo=dt.UTC)

    async def claim_due(
        self, now: dt.datetime, limit: int, lease: dt.timedelta
    ) -> Sequence[u.WebhookMessage]:
        due = [
            m
            for m in self.s.messages.values()
            if m.status == "pending" and self.s.next_attempt[m.id] <= now
        ][:limit]
        for m in due:
            self.s.next_attempt[m.id] = now + lease
        return due

    async def message(self, message_id: uuid.UUID) -> u.WebhookMessage | None:
        return self.s.messages.get(message_id)

    async def record_attempt(self, attempt: u.Attempt) -> None:
        self.s.attempts.append(attempt)
        self.s.attempted_at.append(dt.datetime.now(dt.UTC))

    async def deliveries(self, endpoint_id: uuid.UUID, limit: int) -> Sequence[u.Delivery]:
        logged = [
            u.Delivery(a, at, self.s.messages[a.message_id].event_type)
            for a, at in zip(self.s.attempts, self.s.attempted_at, strict=True)
            if a.endpoint_id == endpoint_id
        ]
        return logged[::-1][:limit]

    async def set_status(
        self,
        message_id: uuid.UUID,
        status: str,
        *,
        attempts: int,
        next_attempt_at: dt.datetime | None = None,
    ) -> None:
        self.s.messages[message_id] = replace(
            self.s.messages[message_id], status=status, attempts=attempts
        )
        if next_attempt_at is not None:
            self.s.next_attempt[message_id] = next_attempt_at

    async def cancel_pending(self, pseudonym: str) -> int:
        hits = [
            m
            for m in self.s.messages.values()
            if m.pseudonym == pseudonym and m.status == "pending"
        ]
        for m in hits:
            self.s.messages[m.id] = replace(m, status="cancelled")
        return len(hits)


class FakeUnitOfWork(u.UnitOfWork):
    """Works on a copy of the store; a clean exit publishes it, an exception discards it."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.commits = 0

    async def __aenter__(self) -> FakeUnitOfWork:
        self._work = _clone(self.store)
        self.views = FakeViews(self._work)
        self.consents = FakeConsents(self._work)
        self.processed = FakeProcessed(self._work)
        self.outbox = FakeOutbox(self._work)
        self.webhooks = FakeWebhooks(self._work)
        self.agency_topic = FakeAgencyTopic(self._work)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.store.__dict__.update(self._work.__dict__)
            self.commits += 1

    async def lock_citizen(self, pseudonym: str) -> None:
        return None


class FakeRelay:
    """The access relay's surface the API uses; the outbox rows stay in the store."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.woken = 0

    def wake(self) -> None:
        self.woken += 1

    async def backlog(self) -> int:
        return 0

    async def publish_batch(self) -> int:
        return 0

    async def run(self) -> None:
        return None
