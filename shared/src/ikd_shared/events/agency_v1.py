"""Topics ikd.agency.<agency code>.v1: one agency's minimised view, published by its gateway.

Each record carries, for one citizen, everything the agency may hold now: per service the
fields its policy (and the citizen's consent, where the service needs one) grants, exactly what
a prefill answer or a webhook body for that service holds. The topic is compacted by the
citizen's pseudonym, so its latest record is the agency's current view of the citizen. When the
agency may hold nothing any more (consent revoked, retention over, death, revoked credential,
erasure) the gateway publishes a tombstone: same key, null value, no fields.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from ikd_shared.events.profile_v1 import PROFILE_FIELDS
from ikd_shared.legal import AgencyCode, LegalBasis, PurposeCode, ServiceCode
from ikd_shared.pseudonym import Pseudonym

TOPIC_TEMPLATE = "ikd.agency.{agency}.v1"


def source(agency: str) -> str:
    """ce_source of an agency topic's records: the agency's gateway."""
    return f"/ikd/gateway/{agency}"


class ServiceFields(BaseModel):
    """What one of the agency's services may use of the citizen, and on which ground."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    service: ServiceCode
    purpose: PurposeCode
    legal_basis: LegalBasis
    fields: dict[str, Any] = Field(
        description="granted profile fields (dotted names for address parts) and their values"
    )

    @field_validator("fields")
    @classmethod
    def _known_fields(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - set(PROFILE_FIELDS))
        if unknown:
            raise ValueError(f"unknown profile fields: {', '.join(unknown)}")
        return value


class AgencyRecordChanged(BaseModel):
    """The agency's view of a citizen changed: the whole current view, per service."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    event_type: ClassVar[str] = "id.go.mpp.agency.record.changed.v1"

    agency: AgencyCode
    pseudonym: Pseudonym
    version: int = Field(ge=1, description="the citizen's profile version the view comes from")
    verified_at: dt.datetime = Field(description="when the profile was verified")
    changed_fields: list[str] = Field(
        description="fields added, removed or changed since the previous record of this citizen"
    )
    services: list[ServiceFields] = Field(
        min_length=1, description="each service that may use something now, sorted by code"
    )


PURGED_TYPE = "id.go.mpp.agency.record.purged.v1"
"""ce_type of the tombstone (null value): the agency may hold nothing of the citizen any more."""
PURGED_NAME = "AgencyRecordPurged"

EVENTS: tuple[type[AgencyRecordChanged], ...] = (AgencyRecordChanged,)
