"""Topic ikd.audit.access.v1: one event for every read, push or denial of citizen data.

Records hold field *names*, never values.
"""

from __future__ import annotations

import datetime as dt
import uuid
from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ikd_shared.legal import AgencyCode, LegalBasis, PurposeCode, ServiceCode
from ikd_shared.pseudonym import Pseudonym


class Channel(StrEnum):
    PREFILL = "prefill"  # the agency backend asked the gateway's prefill API
    WEBHOOK = "webhook"  # the gateway pushed a change to the agency backend
    VIEW = "view"  # the gateway stored data in the agency's minimised view
    AGENCY_TOPIC = "agency_topic"  # the gateway published a change to the agency's topic
    REGISTRATION = "registration"  # the agency registered a citizen (or ended it) via its gateway


class Outcome(StrEnum):
    SERVED = "served"
    DENIED = "denied"
    FAILED = "failed"


class AccessRecorded(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    event_type: ClassVar[str] = "id.go.mpp.access.recorded.v1"

    access_id: uuid.UUID = Field(description="equals the CloudEvent id; audit deduplicates by it")
    occurred_at: dt.datetime
    agency: AgencyCode
    service: ServiceCode | None = Field(default=None, description="None when none was named")
    pseudonym: Pseudonym | None = Field(default=None, description="None if unresolvable")
    fields: list[str] = Field(default_factory=list, max_length=64)
    purpose: PurposeCode | None = None
    legal_basis: LegalBasis | None = None
    channel: Channel
    outcome: Outcome
    reason: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        default=None, description="error code of a denial or failure"
    )
    correlation_id: Annotated[str, StringConstraints(max_length=64)] | None = None


EVENTS: tuple[type[AccessRecorded], ...] = (AccessRecorded,)
