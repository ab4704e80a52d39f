"""Topic ikd.citizen.profile.v1: the canonical citizen profile, one record per change.

Each event carries the whole profile, its version and the citizen's relationships in force
(event-carried state), so the compacted topic always holds each citizen's latest state;
consumers ignore versions they already have. An agency may hold a citizen only while one of
those relationships names one of its services (UU PDP purpose limitation); a relationship
starting or ending is a new version of the citizen's record. Death and credential revocation
are followed by a tombstone (a record with no value).
"""

from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from ikd_shared.legal import AgencyCode, LegalBasis, ServiceCode
from ikd_shared.nik import Nik, Sex, parse_nik
from ikd_shared.pseudonym import Pseudonym

SOURCE = "/ikd/identity"


class BloodType(StrEnum):
    A = "A"
    B = "B"
    AB = "AB"
    O = "O"  # noqa: E741
    UNKNOWN = "unknown"


class Religion(StrEnum):
    ISLAM = "islam"
    KRISTEN = "kristen"
    KATOLIK = "katolik"
    HINDU = "hindu"
    BUDDHA = "buddha"
    KONGHUCU = "konghucu"
    KEPERCAYAAN = "kepercayaan"


class MaritalStatus(StrEnum):
    BELUM_KAWIN = "belum_kawin"
    KAWIN = "kawin"
    CERAI_HIDUP = "cerai_hidup"
    CERAI_MATI = "cerai_mati"


class Nationality(StrEnum):
    WNI = "WNI"
    WNA = "WNA"


Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=120)]
LongText = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
NeighbourhoodNo = Annotated[str, StringConstraints(pattern=r"^[0-9]{3}$")]
PostalCode = Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]{4}$")]
FamilyCardNumber = Annotated[str, StringConstraints(pattern=r"^[0-9]{16}$")]


class Address(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    street: LongText
    rt: NeighbourhoodNo
    rw: NeighbourhoodNo
    village: Text
    district: Text
    regency: Text
    province: Text
    postal_code: PostalCode


class CitizenProfile(BaseModel):
    """The profile an IKD credential carries; birth date and sex always agree with the NIK."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    nik: Nik
    full_name: Text
    place_of_birth: Text
    date_of_birth: dt.date
    sex: Sex
    blood_type: BloodType
    address: Address
    religion: Religion
    marital_status: MaritalStatus
    occupation: Text
    nationality: Nationality
    family_card_number: FamilyCardNumber

    @model_validator(mode="after")
    def _agrees_with_nik(self) -> CitizenProfile:
        problems = nik_contradictions(self.nik, self.date_of_birth, self.sex)
        if problems:
            raise ValueError("; ".join(problems))
        return self


def nik_contradictions(nik: str, date_of_birth: dt.date, sex: Sex) -> list[str]:
    """What in the claimed birth date and sex contradicts the NIK."""
    info = parse_nik(nik)
    problems = []
    if info.birth_date != date_of_birth:
        problems.append("date_of_birth contradicts the birth date encoded in the NIK")
    if info.sex != sex:
        problems.append("sex contradicts the sex encoded in the NIK")
    return problems


ADDRESS_FIELDS = tuple(f"address.{name}" for name in Address.model_fields)
PROFILE_FIELDS: tuple[str, ...] = (
    tuple(name for name in CitizenProfile.model_fields if name != "address") + ADDRESS_FIELDS
)
"""Every field name a policy or consent may grant; the address is granted part by part."""


def flatten(profile: CitizenProfile) -> dict[str, Any]:
    """The profile as JSON-ready {field name: value}, address parts as `address.<part>`."""
    data = profile.model_dump(mode="json")
    address = data.pop("address")
    data.update({f"address.{part}": value for part, value in address.items()})
    return data


def select_fields(flat: dict[str, Any], granted: frozenset[str] | set[str]) -> dict[str, Any]:
    """Only the granted fields of a flattened profile."""
    return {name: value for name, value in flat.items() if name in granted}


class RelationshipKind(StrEnum):
    """Why an agency may hold a citizen: the reasons UU PDP accepts for processing."""

    SERVICE_REQUEST = "service_request"  # the citizen asked for the service at a counter
    REGISTRATION = "registration"  # the agency registered the citizen under its legal duty
    CONSENT = "consent"  # the citizen consented; the consent topic says to which fields


class Relationship(BaseModel):
    """One reason one agency's service may hold the citizen, from `starts_at` to `expires_at`."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    relationship_id: uuid.UUID = Field(description="for a consent: the consent's id")
    kind: RelationshipKind
    agency: AgencyCode
    service: ServiceCode
    legal_basis: LegalBasis
    legal_reference: LongText | None = Field(
        default=None, description="the statute a registration rests on"
    )
    starts_at: dt.datetime
    expires_at: dt.datetime

    def covers(self, at: dt.datetime) -> bool:
        return self.starts_at <= at < self.expires_at


RELATIONSHIPS_DESCRIPTION = (
    "the citizen's relationships in force after this change; an agency holds the citizen only "
    "while one names one of its services"
)


class ProfileEvent(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    event_type: ClassVar[str]

    pseudonym: Pseudonym
    version: int = Field(ge=1, description="grows by one with every change of this citizen")


class ProfileVerified(ProfileEvent):
    """A citizen's IKD credential was verified and the profile is new or changed."""

    event_type: ClassVar[str] = "id.go.mpp.profile.verified.v1"

    profile: CitizenProfile
    verified_at: dt.datetime
    verified_by: AgencyCode | None = Field(
        default=None, description="agency whose counter submitted the credential"
    )
    changed_fields: list[str] = Field(description="fields that differ from the previous version")
    relationships: list[Relationship] = Field(
        default_factory=list, description=RELATIONSHIPS_DESCRIPTION
    )


class ProfileUpdated(ProfileEvent):
    """Dukcapil's update feed changed profile fields (address, marital status, ...)."""

    event_type: ClassVar[str] = "id.go.mpp.profile.updated.v1"

    profile: CitizenProfile
    verified_at: dt.datetime = Field(description="when the profile was last verified")
    updated_at: dt.datetime
    changed_fields: list[str]
    relationships: list[Relationship] = Field(
        default_factory=list, description=RELATIONSHIPS_DESCRIPTION
    )


class RelationshipsChanged(ProfileEvent):
    """A relationship started or ended (a service request, a registration, a consent).

    The profile is unchanged but carried whole, so that this record alone, the latest of the
    citizen on the compacted topic, still says everything.
    """

    event_type: ClassVar[str] = "id.go.mpp.profile.relationships.v1"

    profile: CitizenProfile
    verified_at: dt.datetime = Field(description="when the profile was last verified")
    changed_at: dt.datetime
    started: list[Relationship] = Field(default_factory=list)
    ended: list[Relationship] = Field(default_factory=list)
    relationships: list[Relationship] = Field(
        default_factory=list, description=RELATIONSHIPS_DESCRIPTION
    )


class CitizenDied(ProfileEvent):
    """Dukcapil recorded a death; a tombstone follows."""

    event_type: ClassVar[str] = "id.go.mpp.profile.died.v1"

    date_of_death: dt.date
    recorded_at: dt.datetime


class CredentialRevoked(ProfileEvent):
    """Dukcapil revoked the citizen's IKD credential; a tombstone follows."""

    event_type: ClassVar[str] = "id.go.mpp.profile.revoked.v1"

    reason: Text
    revoked_at: dt.datetime


TOMBSTONE_TYPE = "id.go.mpp.profile.erased.v1"
"""ce_type of the tombstone (null value) that ends a citizen's record on the compacted topic."""

EVENTS: tuple[type[ProfileEvent], ...] = (
    ProfileVerified,
    ProfileUpdated,
    RelationshipsChanged,
    CitizenDied,
    CredentialRevoked,
)
