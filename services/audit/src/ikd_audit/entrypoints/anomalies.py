"""Inside `serve`: look for unusual access patterns now and then; each alert is a log entry."""

from __future__ import annotations

import asyncio
import logging

from ikd_audit.domain.patterns import AnomalyKind
from ikd_audit.entrypoints.observability import ANOMALIES, ANOMALY_CHECKS
from ikd_audit.service_layer.patterns import AccessPatterns

log = logging.getLogger("ikd_audit.anomalies")

for _kind in AnomalyKind:  # every kind exported from the start, at zero
    ANOMALIES.labels(kind=_kind.value)


async def check_once(patterns: AccessPatterns) -> int:
    """One run of the detectors; the alerts it appended are logged and counted."""
    alerts = await patterns.detect()
    for alert in alerts:
        ANOMALIES.labels(kind=alert.kind.value).inc()
        log.warning(
            "access-pattern alert",
            extra={
                "fields": {
                    "kind": alert.kind.value,
                    "agency": alert.agency,
                    "window_start": alert.start.isoformat(),
                    "observed": alert.observed,
                    "limit": alert.limit,
                }
            },
        )
    return len(alerts)


async def run_detector(patterns: AccessPatterns, *, interval: float) -> None:
    while True:
        # First wait: a process that starts and stops at once raises nothing.
        await asyncio.sleep(interval)
        try:
            await check_once(patterns)
            ANOMALY_CHECKS.labels(result="ok").inc()
        except asyncio.CancelledError:
            raise
        except Exception:
            ANOMALY_CHECKS.labels(result="error").inc()
            log.exception("looking for access-pattern anomalies failed; will retry")
