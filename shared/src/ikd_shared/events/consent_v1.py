"""Topic ikd.citizen.consent.v1: consent grants and revocations, keyed by citizen pseudonym.

The topic is compacted by pseudonym, so each event also carries the citizen's whole set of
active consents after the change, with a per-citizen `consents_version`: the latest record
alone is enough to rebuild that citizen's consents.
"""

from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from ikd_shared.events.profile_v1 import PROFILE_FIELDS
from ikd_shared.legal import AgencyCode, LegalBasis, PurposeCode, ServiceCode
from ikd_shared.pseudonym import Pseudonym

SOURCE = "/ikd/identity"


class ConsentStatus(StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"
    EXPIRED = "expired"


class GrantedBy(StrEnum):
    CITIZEN = "citizen"  # proved with a fresh IKD credential
    OFFICER = "officer"  # at an MPP officer's desk (officer_id: its client), credential too


class Consent(BaseModel):
    """A consent artefact: who allowed which agency to use which fields, why and until when."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    consent_id: uuid.UUID
    pseudonym: Pseudonym
    agency: AgencyCode
    service: ServiceCode
    fields: list[str] = Field(min_length=1, max_length=len(PROFILE_FIELDS))
    purpose_code: PurposeCode
    purpose_text: Annotated[str, StringConstraints(min_length=1, max_length=500)]
    legal_basis: LegalBasis = LegalBasis.CONSENT
    starts_at: dt.datetime
    expires_at: dt.datetime
    status: ConsentStatus
    granted_by: GrantedBy
    officer_id: Annotated[str, StringConstraints(max_length=64)] | None = None
    revoked_at: dt.datetime | None = None

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(PROFILE_FIELDS))
        if unknown:
            raise ValueError(f"unknown profile fields: {', '.join(unknown)}")
        return sorted(set(value))

    def covers(self, at: dt.datetime) -> bool:
        return self.status is ConsentStatus.ACTIVE and self.starts_at <= at < self.expires_at


class ConsentEvent(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    event_type: ClassVar[str]

    pseudonym: Pseudonym
    consents_version: int = Field(ge=1, description="grows by one with every consent change")
    consent: Consent = Field(description="the consent this event is about")
    active_consents: list[Consent] = Field(
        description="all of the citizen's active consents after this change"
    )


class ConsentGranted(ConsentEvent):
    event_type: ClassVar[str] = "id.go.mpp.consent.granted.v1"


class ConsentRevoked(ConsentEvent):
    event_type: ClassVar[str] = "id.go.mpp.consent.revoked.v1"


EVENTS: tuple[type[ConsentEvent], ...] = (ConsentGranted, ConsentRevoked)
