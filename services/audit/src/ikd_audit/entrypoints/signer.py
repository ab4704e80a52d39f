"""Signs a tree head every N seconds, or as soon as M entries are unsigned."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from ikd_audit.entrypoints.observability import TREE_HEADS_SIGNED, TREE_SIZE
from ikd_audit.service_layer.services import AuditLog

log = logging.getLogger("ikd_audit.signer")


async def run_signer(audit: AuditLog, *, interval: float, max_entries: int) -> None:
    loop = asyncio.get_running_loop()
    last_signed = loop.time()
    while True:
        try:
            unsigned = await audit.unsigned_entries()
            due = loop.time() - last_signed >= interval
            if unsigned > 0 and (due or unsigned >= max_entries):
                head = await audit.sign_tree_head()
                last_signed = loop.time()
                TREE_HEADS_SIGNED.inc()
                TREE_SIZE.set(head.tree_size)
                log.info(
                    "tree head signed",
                    extra={
                        "fields": {"tree_size": head.tree_size, "root_hash": head.root_hash.hex()}
                    },
                )
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("signing a tree head failed; will retry")
        audit.changed.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(audit.changed.wait(), timeout=min(interval, 1.0))
