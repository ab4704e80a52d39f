"""The pruner inside `serve` prunes with the configured grace and survives a failing round."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

from ikd_audit.entrypoints.pruner import run_pruner


class FakeAuditLog:
    def __init__(self) -> None:
        self.calls: list[dt.timedelta] = []
        self.done = asyncio.Event()

    async def prune_seen_credentials(self, grace: dt.timedelta) -> int:
        self.calls.append(grace)
        if len(self.calls) == 1:
            raise OSError("database unreachable")
        if len(self.calls) == 3:
            self.done.set()
        return 1


async def test_pruner_runs_periodically_and_retries_after_a_failure() -> None:
    audit = FakeAuditLog()
    fake: Any = audit
    task = asyncio.create_task(run_pruner(fake, interval=0.001, grace=dt.timedelta(hours=2)))
    try:
        await asyncio.wait_for(audit.done.wait(), timeout=10)
    finally:
        task.cancel()
    assert audit.calls[:3] == [dt.timedelta(hours=2)] * 3
