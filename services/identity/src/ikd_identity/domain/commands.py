"""What callers ask the identity service to do (imperatives; events are past tense)."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any

from ikd_shared.events.profile_v1 import CitizenProfile
from ikd_shared.legal import LegalBasis


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
    agency: str
    service: str
    fields: list[str]
    purpose_code: str
    purpose_text: str
    legal_basis: LegalBasis
    expires_at: dt.datetime
    starts_at: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class CitizenProof:
    """A citizen acting for themself, proven by a fresh IKD credential."""

    credential: str


@dataclass(frozen=True, slots=True)
class OfficerActing:
    """An MPP officer acting on a citizen's behalf."""

    officer_id: str
    client_id: str
    nik: str | None = None  # needed to grant; a revocation finds the citizen by consent id


@dataclass(frozen=True, slots=True)
class GrantConsent:
    actor: CitizenProof | OfficerActing
    terms: ConsentTerms
    consent_id: uuid.UUID = field(default_factory=uuid.uuid4)


@dataclass(frozen=True, slots=True)
class RevokeConsent:
    actor: CitizenProof | OfficerActing
    consent_id: uuid.UUID
