"""The project's Kafka topics: declared here, created idempotently by `ensure_topics`."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

from pydantic import BaseModel

from ikd_shared.events import access_v1, agency_v1, consent_v1, profile_v1


class CleanupPolicy(StrEnum):
    COMPACT = "compact"
    DELETE = "delete"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    name: str
    partitions: int
    cleanup_policy: CleanupPolicy
    description: str
    event_types: tuple[type[BaseModel], ...] = ()
    config: dict[str, str] = field(default_factory=dict)

    def full_name(self, prefix: str = "") -> str:
        return f"{prefix}{self.name}"

    def topic_config(self) -> dict[str, str]:
        return {"cleanup.policy": self.cleanup_policy.value, **self.config}


PROFILE = TopicSpec(
    name="ikd.citizen.profile.v1",
    partitions=6,
    cleanup_policy=CleanupPolicy.COMPACT,
    description="Canonical citizen profiles, keyed by pseudonym; tombstone on death or revocation",
    event_types=profile_v1.EVENTS,
    config={"min.compaction.lag.ms": "60000", "delete.retention.ms": "86400000"},
)
CONSENT = TopicSpec(
    name="ikd.citizen.consent.v1",
    partitions=6,
    cleanup_policy=CleanupPolicy.COMPACT,
    description="Consent grants and revocations, keyed by pseudonym, each with the active set",
    event_types=consent_v1.EVENTS,
    config={"min.compaction.lag.ms": "60000"},
)
ACCESS = TopicSpec(
    name="ikd.audit.access.v1",
    partitions=6,
    cleanup_policy=CleanupPolicy.DELETE,
    description="Every read, push or denial of citizen data, keyed by pseudonym",
    event_types=access_v1.EVENTS,
    config={"retention.ms": str(30 * 24 * 3600 * 1000)},
)
GATEWAY_DEAD_LETTER = TopicSpec(
    name="ikd.gateway.deadletter.v1",
    partitions=1,
    cleanup_policy=CleanupPolicy.DELETE,
    description="Records a gateway could not process, with the reason in dlq_* headers",
)
WEBHOOK_DEAD_LETTER = TopicSpec(
    name="ikd.webhook.deadletter.v1",
    partitions=1,
    cleanup_policy=CleanupPolicy.DELETE,
    description="Webhook deliveries that failed their last attempt",
)
AUDIT_DEAD_LETTER = TopicSpec(
    name="ikd.audit.deadletter.v1",
    partitions=1,
    cleanup_policy=CleanupPolicy.DELETE,
    description="Access events the audit service could not record, with the reason",
)

AGENCY = TopicSpec(
    name=agency_v1.TOPIC_TEMPLATE,
    partitions=3,
    cleanup_policy=CleanupPolicy.COMPACT,
    description="One agency's minimised view, keyed by pseudonym; tombstone when it may hold "
    "nothing of the citizen any more",
    event_types=agency_v1.EVENTS,
    config={"min.compaction.lag.ms": "60000", "delete.retention.ms": "86400000"},
)
"""A template: one topic per agency (`agency_topic`), created when the agency is onboarded."""


def agency_topic(agency: str) -> TopicSpec:
    """The agency topic of one agency (`ikd.agency.<code>.v1`)."""
    return replace(AGENCY, name=AGENCY.name.format(agency=agency))


ALL_TOPICS: tuple[TopicSpec, ...] = (
    PROFILE,
    CONSENT,
    ACCESS,
    GATEWAY_DEAD_LETTER,
    WEBHOOK_DEAD_LETTER,
    AUDIT_DEAD_LETTER,
)
"""The core topics, each created once per deployment by `ensure_topics`."""
