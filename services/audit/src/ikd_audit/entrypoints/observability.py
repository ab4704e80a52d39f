"""Prometheus metrics of the audit service (logs: ikd_shared.logs; requests: ikd_shared.api)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ENTRIES_APPENDED = Counter("ikd_audit_entries_appended_total", "Log entries appended")
DUPLICATES_SKIPPED = Counter(
    "ikd_audit_duplicate_events_total", "Redelivered access events that made no new entry"
)
DEAD_LETTERED = Counter("ikd_audit_dead_lettered_total", "Malformed events sent to dead letter")
BATCH_SECONDS = Histogram("ikd_audit_batch_seconds", "Time to make one consumed batch durable")
TREE_SIZE = Gauge("ikd_audit_tree_size", "Entries in the log")
TREE_HEADS_SIGNED = Counter("ikd_audit_tree_heads_signed_total", "Signed tree heads written")
SIGNED_TREE_SIZE = Gauge("ikd_audit_signed_tree_size", "Entries covered by the latest tree head")
TREE_HEAD_AGE = Gauge(
    "ikd_audit_tree_head_age_seconds", "Seconds since the latest signed tree head was signed"
)
ANOMALIES = Counter(
    "ikd_audit_anomalies_total",
    "Access-pattern alerts appended to the log, by kind",
    ["kind"],
)
ANOMALY_CHECKS = Counter(
    "ikd_audit_anomaly_checks_total", "Runs of the access-pattern detectors, by result", ["result"]
)
