"""Prometheus metrics of the identity service."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

VERIFICATIONS = Counter(
    "ikd_identity_verifications_total", "IKD credential verifications by outcome", ["outcome"]
)
FEED_UPDATES = Counter("ikd_identity_feed_updates_total", "Dukcapil feed updates", ["kind"])
RELATIONSHIPS = Counter(
    "ikd_identity_relationship_changes_total",
    "Relationships started or renewed (service_request, registration) and ended",
    ["change"],
)
CONSENT_CHANGES = Counter("ikd_identity_consent_changes_total", "Consent changes", ["change"])
OUTBOX_PUBLISHED = Counter("ikd_identity_outbox_published_total", "Outbox rows published")
RELAY_ACTIVE = Gauge("ikd_identity_relay_active", "1 while this process holds the relay lock")
OUTBOX_BACKLOG = Gauge(
    "ikd_identity_outbox_backlog", "Outbox rows not yet published (read at scrape time)"
)
