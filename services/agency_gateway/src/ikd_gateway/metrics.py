"""Prometheus metrics of the gateway (requests: ikd_shared.api; lag: ikd_shared.kafka_lag).

The API process serves them on its /metrics; the worker process serves its own (the webhook
counters) on IKD_GATEWAY_WORKER_METRICS_PORT when that is set.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

ACCESS_OUTBOX_BACKLOG = Gauge(
    "ikd_gateway_access_outbox_backlog",
    "Access events in the outbox not yet published to the audit topic (read at scrape time)",
)
WEBHOOK_RETRIES = Counter(
    "ikd_gateway_webhook_retries_total", "Webhook deliveries that failed and were rescheduled"
)
WEBHOOK_DEAD_LETTERS = Counter(
    "ikd_gateway_webhook_dead_letters_total",
    "Webhook messages given up (attempts exhausted or 410 Gone) and sent to the dead letter",
    ["reason"],
)
WEBHOOK_DELIVERED = Counter("ikd_gateway_webhook_delivered_total", "Webhook messages delivered")
THROTTLED_REQUESTS = Counter(
    "ikd_gateway_throttled_requests_total",
    "Prefill requests refused 429 because their client was denied too often",
)
