"""What the bench databases' sessions wait on during a measurement (pg_stat_activity samples).

Every SAMPLE_INTERVAL the sampler counts the non-idle sessions of each bench database by
state and wait event; the result is the average number of sessions in each (average active
sessions). "running" is an active session without a wait event (on the CPU or runnable);
"idle in transaction" is a session whose transaction waits for the application.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from typing import Any

import asyncpg

SAMPLE_INTERVAL = 0.1


def _database(name: str) -> str:
    return name.removeprefix("ikd_").removeprefix("gateway_bench_").removeprefix("bench_")


class WaitSampler:
    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._counts: Counter[tuple[str, str]] = Counter()
        self._samples = 0
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> WaitSampler:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *_: object) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        connection = await asyncpg.connect(self._dsn)
        try:
            while True:
                rows = await connection.fetch(
                    """SELECT datname, state, wait_event_type, wait_event FROM pg_stat_activity
                       WHERE datname LIKE '%bench%' AND state <> 'idle' AND pid <> pg_backend_pid()
                         AND backend_type = 'client backend'"""
                )
                self._samples += 1
                for row in rows:
                    if row["state"] == "active":
                        what = (
                            f"{row['wait_event_type']}:{row['wait_event']}"
                            if row["wait_event_type"]
                            else "running"
                        )
                    else:
                        what = str(row["state"])
                    self._counts[(_database(row["datname"]), what)] += 1
                await asyncio.sleep(SAMPLE_INTERVAL)
        finally:
            await connection.close()

    def result(self) -> dict[str, Any]:
        """{database: {state or wait: average sessions}}, largest first, tiny ones left out."""
        if not self._samples:
            return {}
        out: dict[str, dict[str, float]] = {}
        for (database, what), n in self._counts.most_common():
            average = n / self._samples
            if average >= 0.05:
                out.setdefault(database, {})[what] = round(average, 2)
        return {"samples": self._samples, "average_sessions": out}
