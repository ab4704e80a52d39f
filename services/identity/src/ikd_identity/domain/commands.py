"""What callers ask the identity service to do (imperatives; events are past tense)."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any

from ikd_shared.events.profile_v1 import CitizenProfile


@dataclass(frozen=True, slots=True)
class VerifyCredential:
    credential: str
    agency: str  # the counter's agency, recorded as verified_by
    services: tuple[str, ...] | None = None  # what the citizen came for; None: the counter's
    client_id: str | None = None  # the counter's client, recorded with the relationships


@dataclass(frozen=True, slots=True)
class RegisterCitizen:
    """An agency registers a citizen for one of its services under its legal duty."""

    nik: str
    service: str
    legal_reference: str
    agency: str  # the caller's agency (its gateway's token)
    client_id: str


@dataclass(frozen=True, slots=True)
class EndRegistration:
    relationship_id: uuid.UUID
    agency: str
    client_id: str


@dataclass(frozen=True, slots=True)
class UpdateProfile:
    nik: str
    changes: dict[str, Any]


@dataclass(frozen=True, slots=True)
class RecordDeath:
    nik: str
    date_of_death: dt.date


@dataclass(frozen=True, slots=True)
class RevokeCredential:
    nik: str
    reason: str


@dataclass(frozen=True, slots=True)
class LoadProfiles:
    """Dukcapil's bulk feed: create or refresh many profiles at once."""

    profiles: list[CitizenProfile]


@dataclass(frozen=True, slots=True)
class ConsentTerms:
    """What the citizen agrees to; the policy decides whether it may be agreed to at all."""

    agency: str
    service: str
    fields: list[str]
    purpose_code: str
    purpose_text: str
    expires_at: dt.datetime
    starts_at: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class OfficerDesk:
    """An MPP officer's desk (an API client) where the citizen presents their credential.

    The officer is the token's client, never a name from the request; `serves` is the client's
    allow-list of agencies from the clients table.
    """

    client_id: str
    serves: frozenset[str]


@dataclass(frozen=True, slots=True)
class GrantConsent:
    """The citizen consents, proven by a fresh credential for the consent purpose."""

    credential: str
    terms: ConsentTerms
    desk: OfficerDesk | None = None  # None: the citizen on their own (self-service)
    consent_id: uuid.UUID = field(default_factory=uuid.uuid4)


@dataclass(frozen=True, slots=True)
class RevokeConsent:
    """The citizen revokes one of their consents, proven like a grant."""

    credential: str
    consent_id: uuid.UUID
    desk: OfficerDesk | None = None
