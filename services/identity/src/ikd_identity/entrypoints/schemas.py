"""Request and response bodies of the HTTP API."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints

from ikd_shared.events.consent_v1 import Consent
from ikd_shared.events.profile_v1 import (
    PROFILE_FIELDS,
    BloodType,
    CitizenProfile,
    FamilyCardNumber,
    LongText,
    MaritalStatus,
    Nationality,
    NeighbourhoodNo,
    PostalCode,
    Relationship,
    Religion,
    Text,
)
from ikd_shared.legal import AgencyCode, PurposeCode, ServiceCode
from ikd_shared.nik import Nik

MAX_BULK_PROFILES = 1000


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


MAX_SERVICES = 64


class VerificationRequest(Body):
    credential: str = Field(description="the IKD credential: a compact JWS signed by Dukcapil")
    services: list[ServiceCode] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_SERVICES,
        description="the services the citizen came for, at any agencies of the MPP's policy; "
        "omitted at an agency counter: its only service (a counter of several services, or "
        "the MPP's front desk, must name them)",
    )


class ProfileStatusOut(Body):
    pseudonym: str
    version: int
    changed: bool = Field(description="false when the profile was already on record unchanged")
    changed_fields: list[str]
    status: str


class VerificationOut(ProfileStatusOut):
    relationships: list[Relationship] = Field(
        description="the service requests this verification started or renewed, now in force "
        "(the citizen's other relationships are not shown to the counter)"
    )


class RegistrationRequest(Body):
    nik: Nik
    service: ServiceCode = Field(description="a service of the caller's agency that allows it")
    legal_reference: LongText = Field(
        description="the statute or decision the registration rests on"
    )


class RelationshipOut(Body):
    relationship: Relationship


class AddressChanges(Body):
    street: LongText | None = None
    rt: NeighbourhoodNo | None = None
    rw: NeighbourhoodNo | None = None
    village: Text | None = None
    district: Text | None = None
    regency: Text | None = None
    province: Text | None = None
    postal_code: PostalCode | None = None


class ProfileChanges(Body):
    """Fields Dukcapil may change; the NIK, birth date and sex never change."""

    full_name: Text | None = None
    place_of_birth: Text | None = None
    blood_type: BloodType | None = None
    address: AddressChanges | None = None
    religion: Religion | None = None
    marital_status: MaritalStatus | None = None
    occupation: Text | None = None
    nationality: Nationality | None = None
    family_card_number: FamilyCardNumber | None = None


class FieldUpdate(Body):
    kind: Literal["profile_update"]
    nik: Nik
    changes: ProfileChanges


class DeathRecord(Body):
    kind: Literal["death"]
    nik: Nik
    date_of_death: dt.date


class CredentialRevocation(Body):
    kind: Literal["credential_revocation"]
    nik: Nik
    reason: Text


FeedUpdate = Annotated[
    FieldUpdate | DeathRecord | CredentialRevocation, Field(discriminator="kind")
]


class BulkProfiles(Body):
    profiles: list[CitizenProfile] = Field(min_length=1, max_length=MAX_BULK_PROFILES)


class BulkResultOut(Body):
    created: int
    updated: int
    unchanged: int
    skipped_inactive: int


class ConsentTermsIn(Body):
    agency: AgencyCode
    service: ServiceCode = Field(description="a service of the agency whose legal basis is consent")
    fields: list[str] = Field(
        min_length=1,
        max_length=len(PROFILE_FIELDS),
        description="a subset of the service's policy fields",
    )
    purpose_code: PurposeCode = Field(description="the service's purpose code in the policy")
    purpose_text: Annotated[str, StringConstraints(min_length=1, max_length=500)]
    legal_basis: Literal["consent"] = Field(
        default="consent", description="always consent: the basis of consent-based services"
    )
    starts_at: AwareDatetime | None = None
    expires_at: AwareDatetime = Field(
        description="at most the service's consent_max_days (default retention_days) from now"
    )


class ConsentGrant(ConsentTermsIn):
    credential: str = Field(
        description="the citizen's freshly issued IKD credential for the consent purpose"
    )


class ConsentRevoke(Body):
    credential: str = Field(
        description="the citizen's freshly issued IKD credential for the consent purpose"
    )


class ConsentOut(Body):
    consent: Consent


class TokenOut(Body):
    access_token: str
    token_type: Literal["Bearer"] = "Bearer"  # noqa: S105
    expires_in: int
    scope: str
