"""Inside `serve`: prune long-expired seen credentials now and then (as `ikd-audit prune`), and
console sign-in throttle rows that hold nothing back any more."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
from collections.abc import Awaitable, Callable

from ikd_audit.service_layer.services import AuditLog

log = logging.getLogger("ikd_audit.pruner")


async def run_pruner(
    audit: AuditLog,
    *,
    interval: float,
    grace: dt.timedelta,
    prune_throttle: Callable[[], Awaitable[int]] | None = None,
) -> None:
    while True:
        try:
            pruned = await audit.prune_seen_credentials(grace)
            log.info("seen credentials pruned", extra={"fields": {"pruned": pruned}})
            if prune_throttle is not None:
                throttled = await prune_throttle()
                log.info("sign-in throttle pruned", extra={"fields": {"pruned": throttled}})
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("pruning seen credentials failed; will retry")
        await asyncio.sleep(interval)
