"""In-memory fakes of the identity service's unit of work (committed on success only)."""

from __future__ import annotations

import copy
import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from types import TracebackType
from typing import Self

from ikd_identity.domain.clients import Client
from ikd_identity.domain.model import OutboxMessage, ProfileRecord
from ikd_identity.domain.relationships import RelationshipRecord, of_consent
from ikd_shared.events.consent_v1 import Consent, ConsentStatus


@dataclass
class FakeState:
    profiles: dict[str, ProfileRecord] = field(default_factory=dict)
    jtis: set[str] = field(default_factory=set)
    consents: dict[uuid.UUID, tuple[Consent, str]] = field(default_factory=dict)
    consent_versions: dict[str, int] = field(default_factory=dict)
    relationships: dict[uuid.UUID, RelationshipRecord] = field(default_factory=dict)
    outbox: list[OutboxMessage] = field(default_factory=list)
    commits: int = 0


class FakeProfiles:
    def __init__(self, state: FakeState) -> None:
        self.state = state

    async def get_for_update(self, pseudonym: str) -> ProfileRecord | None:
        return self.state.profiles.get(pseudonym)

    async def get_many_for_update(self, pseudonyms: Sequence[str]) -> dict[str, ProfileRecord]:
        return {p: self.state.profiles[p] for p in pseudonyms if p in self.state.profiles}

    async def lock_for_credential(
        self, pseudonym: str, jti: str, expires_at: dt.datetime
    ) -> tuple[bool, ProfileRecord | None]:
        first_use = jti not in self.state.jtis
        self.state.jtis.add(jti)
        return first_use, self.state.profiles.get(pseudonym)

    async def save(self, record: ProfileRecord, events: Sequence[OutboxMessage] = ()) -> None:
        self.state.profiles[record.pseudonym] = record
        self.state.outbox.extend(events)

    async def save_many(self, records: Sequence[ProfileRecord]) -> None:
        for record in records:
            await self.save(record)


class FakeSeenCredentials:
    def __init__(self, state: FakeState) -> None:
        self.state = state

    async def record(self, jti: str, pseudonym: str, expires_at: dt.datetime) -> bool:
        if jti in self.state.jtis:
            return False
        self.state.jtis.add(jti)
        return True

    async def record_many(self, entries: Sequence[tuple[str, str, dt.datetime]]) -> set[str]:
        return {
            jti
            for jti, pseudonym, expires_at in entries
            if await self.record(jti, pseudonym, expires_at)
        }

    async def seen(self, jtis: Sequence[str]) -> set[str]:
        return set(jtis) & self.state.jtis


class FakeConsents:
    def __init__(self, state: FakeState) -> None:
        self.state = state

    async def get_for_update(self, consent_id: uuid.UUID) -> Consent | None:
        found = self.state.consents.get(consent_id)
        return found[0] if found else None

    async def for_citizen(self, pseudonym: str) -> list[Consent]:
        return [c for c, _ in self.state.consents.values() if c.pseudonym == pseudonym]

    async def save(self, consent: Consent, *, recorded_by: str) -> None:
        self.state.consents[consent.consent_id] = (consent, recorded_by)

    async def next_version(self, pseudonym: str) -> int:
        version = self.state.consent_versions.get(pseudonym, 0) + 1
        self.state.consent_versions[pseudonym] = version
        return version


class FakeRelationships:
    """Requests and registrations as stored, consents mirrored as the adapter's query does."""

    def __init__(self, state: FakeState) -> None:
        self.state = state

    async def current(
        self, pseudonyms: Sequence[str], at: dt.datetime
    ) -> dict[str, list[RelationshipRecord]]:
        wanted = set(pseudonyms)
        found: dict[str, list[RelationshipRecord]] = {}
        for record in self.state.relationships.values():
            if record.pseudonym in wanted and _open(record, at):
                found.setdefault(record.pseudonym, []).append(record)
        for consent, recorded_by in self.state.consents.values():
            active = consent.status is ConsentStatus.ACTIVE and consent.expires_at > at
            if consent.pseudonym in wanted and active:
                mirrored = RelationshipRecord(consent.pseudonym, of_consent(consent), recorded_by)
                found.setdefault(consent.pseudonym, []).append(mirrored)
        return found

    async def get(self, relationship_id: uuid.UUID) -> RelationshipRecord | None:
        return self.state.relationships.get(relationship_id)

    async def save(self, records: Sequence[RelationshipRecord]) -> None:
        for record in records:
            assert record.pseudonym in self.state.profiles, "a relationship needs a profile"
            self.state.relationships[record.relationship_id] = record

    async def end_all(self, pseudonym: str, at: dt.datetime) -> None:
        for key, record in self.state.relationships.items():
            if record.pseudonym == pseudonym and _open(record, at):
                self.state.relationships[key] = replace(record, ended_at=at)


def _open(record: RelationshipRecord, at: dt.datetime) -> bool:
    """Neither ended nor expired (what the adapter's queries select)."""
    return record.ended_at is None and record.relationship.expires_at > at


class FakeOutbox:
    def __init__(self, state: FakeState) -> None:
        self.state = state

    async def add(self, messages: Sequence[OutboxMessage]) -> None:
        self.state.outbox.extend(messages)


class FakeUnitOfWork:
    """Works on a copy of the committed state; only a successful block replaces it."""

    def __init__(self, committed: FakeState) -> None:
        self.committed = committed

    async def __aenter__(self) -> Self:
        self.pending = copy.deepcopy(self.committed)
        self.profiles = FakeProfiles(self.pending)
        self.credentials = FakeSeenCredentials(self.pending)
        self.consents = FakeConsents(self.pending)
        self.relationships = FakeRelationships(self.pending)
        self.outbox = FakeOutbox(self.pending)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.pending.commits = self.committed.commits + 1
            self.committed.__dict__.update(self.pending.__dict__)


class FakeClients:
    def __init__(self, *clients: Client) -> None:
        self.clients = {c.client_id: c for c in clients}

    async def get(self, client_id: str) -> Client | None:
        return self.clients.get(client_id)
