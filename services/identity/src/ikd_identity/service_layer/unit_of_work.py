"""The unit of work: one transaction per command; it commits or rolls back in one place.

Repositories are protocols here; adapters/postgres.py implements them with asyncpg and the
unit tests with in-memory fakes.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Protocol, Self

from ikd_identity.domain.model import OutboxMessage, ProfileRecord
from ikd_identity.domain.relationships import RelationshipRecord
from ikd_shared.events.consent_v1 import Consent


class Profiles(Protocol):
    async def get_for_update(self, pseudonym: str) -> ProfileRecord | None: ...

    async def get_many_for_update(self, pseudonyms: Sequence[str]) -> dict[str, ProfileRecord]: ...

    async def save(self, record: ProfileRecord, events: Sequence[OutboxMessage] = ()) -> None:
        """Insert or update one profile; `events` go to the outbox with it (one round trip)."""
        ...

    async def save_many(self, records: Sequence[ProfileRecord]) -> None: ...


class SeenCredentials(Protocol):
    async def record(self, jti: str, pseudonym: str, expires_at: dt.datetime) -> bool:
        """Remember a credential id; False if it was seen before."""
        ...

    async def record_many(self, entries: Sequence[tuple[str, str, dt.datetime]]) -> set[str]:
        """Remember (jti, pseudonym, expires_at) entries in one statement; the ids new here."""
        ...

    async def seen(self, jtis: Sequence[str]) -> set[str]:
        """Those of the credential ids recorded before."""
        ...


class Consents(Protocol):
    async def get_for_update(self, consent_id: uuid.UUID) -> Consent | None: ...

    async def for_citizen(self, pseudonym: str) -> list[Consent]: ...

    async def save(self, consent: Consent, *, recorded_by: str) -> None: ...

    async def next_version(self, pseudonym: str) -> int:
        """Lock the citizen's consent set and return its next consents_version."""
        ...


class Relationships(Protocol):
    async def current(
        self, pseudonyms: Sequence[str], at: dt.datetime
    ) -> dict[str, list[RelationshipRecord]]:
        """Each citizen's relationships not ended nor expired at `at`, in one query.

        Active consents are included, mirrored as relationships of kind consent. Callers
        decide what is in force with the domain's rules (a consent may start later).
        """
        ...

    async def get(self, relationship_id: uuid.UUID) -> RelationshipRecord | None:
        """A stored request or registration, ended or not (consents are not stored here)."""
        ...

    async def save(self, records: Sequence[RelationshipRecord]) -> None:
        """Insert new relationships; of known ones, update the expiry, reference and end."""
        ...

    async def end_all(self, pseudonym: str, at: dt.datetime) -> None:
        """End every relationship of the citizen still in force (a death, a revocation)."""
        ...


class Outbox(Protocol):
    async def add(self, messages: Sequence[OutboxMessage]) -> None: ...


class UnitOfWork(Protocol):
    # Read-only members, so an implementation may hold its own concrete repositories.
    @property
    def profiles(self) -> Profiles: ...

    @property
    def credentials(self) -> SeenCredentials: ...

    @property
    def consents(self) -> Consents: ...

    @property
    def relationships(self) -> Relationships: ...

    @property
    def outbox(self) -> Outbox: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Commit if the block succeeded, roll back otherwise: the only place that does."""
        ...


UnitOfWorkFactory = Callable[[], UnitOfWork]
