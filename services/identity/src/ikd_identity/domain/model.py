"""Profiles, consents and outbox messages: the identity service's domain rules."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel

from ikd_shared.events import event_type_of
from ikd_shared.events.consent_v1 import Consent, ConsentStatus
from ikd_shared.events.profile_v1 import SOURCE, TOMBSTONE_TYPE, CitizenProfile, flatten
from ikd_shared.events.topics import PROFILE, TopicSpec
from ikd_shared.tracing import TraceContext


class ProfileStatus(StrEnum):
    ACTIVE = "active"
    DECEASED = "deceased"
    REVOKED = "revoked"  # Dukcapil revoked the citizen's credential; a newer one reactivates


@dataclass(frozen=True, slots=True)
class ProfileRecord:
    pseudonym: str
    version: int
    profile: CitizenProfile
    status: ProfileStatus
    verified_at: dt.datetime
    updated_at: dt.datetime
    revoked_at: dt.datetime | None = None

    @property
    def nik(self) -> str:
        return self.profile.nik


def changed_fields(old: CitizenProfile | None, new: CitizenProfile) -> list[str]:
    """Flat names of the fields that differ (all of them for a new profile)."""
    new_flat = flatten(new)
    if old is None:
        return sorted(new_flat)
    old_flat = flatten(old)
    return sorted(name for name, value in new_flat.items() if old_flat.get(name) != value)


def merge_changes(profile: CitizenProfile, changes: dict[str, Any]) -> dict[str, Any]:
    """The profile as a dict with `changes` applied (the address merged part by part)."""
    data = profile.model_dump(mode="json")
    for name, value in changes.items():
        if name == "address" and isinstance(value, dict):
            data["address"] = {**data["address"], **value}
        else:
            data[name] = value
    return data


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """One event waiting in the outbox; `event_id` becomes the CloudEvent id on Kafka."""

    topic: str  # the logical topic name; the relay adds the deployment's prefix
    key: str  # the citizen pseudonym
    ce_type: str
    payload: bytes | None  # None for a tombstone
    event_id: uuid.UUID = field(default_factory=uuid.uuid4)
    ce_source: str = SOURCE
    dataschema: str | None = None
    # the W3C trace context of the request that caused it (None: the writer's current one)
    trace: TraceContext | None = None


def event_message(
    event: BaseModel, *, topic: TopicSpec, key: str, trace: TraceContext | None = None
) -> OutboxMessage:
    ce_type = event_type_of(type(event))
    return OutboxMessage(
        topic=topic.name,
        key=key,
        ce_type=ce_type,
        payload=event.model_dump_json().encode(),
        dataschema=f"urn:ikd:schema:{ce_type}",
        trace=trace,
    )


def tombstone_message(key: str) -> OutboxMessage:
    return OutboxMessage(topic=PROFILE.name, key=key, ce_type=TOMBSTONE_TYPE, payload=None)


def active_consents(consents: list[Consent], at: dt.datetime) -> list[Consent]:
    """The consents in force at `at`, oldest first (also those that start later)."""
    return sorted(
        (c for c in consents if c.status is ConsentStatus.ACTIVE and c.expires_at > at),
        key=lambda c: (c.starts_at, str(c.consent_id)),
    )
