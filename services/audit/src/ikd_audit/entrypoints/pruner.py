"""Inside `serve`: prune long-expired seen credentials now and then (as `ikd-audit prune`)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

from ikd_audit.service_layer.services import AuditLog

log = logging.getLogger("ikd_audit.pruner")


async def run_pruner(audit: AuditLog, *, interval: float, grace: dt.timedelta) -> None:
    while True:
        try:
            pruned = await audit.prune_seen_credentials(grace)
            log.info("seen credentials pruned", extra={"fields": {"pruned": pruned}})
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("pruning seen credentials failed; will retry")
        await asyncio.sleep(interval)
