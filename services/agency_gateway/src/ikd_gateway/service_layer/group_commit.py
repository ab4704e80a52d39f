"""Group commit of access events: concurrent prefill answers share one transaction.

An answer leaves only once its access event is committed. One transaction per request costs a
commit (a WAL flush) each; here the events queued while one commit runs all go into the next,
up to `max_batch`. Nothing waits for a timer: a request waits at most for the commit in flight
and then its own, and under load one commit serves many requests. A failed commit fails every
request in it (`AccessNotRecorded`), so none of them is answered as served.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable, Sequence

from ikd_gateway.service_layer.context import UnitOfWorkFactory
from ikd_shared import tracing
from ikd_shared.events.access_v1 import AccessRecorded
from ikd_shared.tracing import TraceContext

Traced = tuple[AccessRecorded, TraceContext | None]
StoreBatch = Callable[[Sequence[Traced]], Awaitable[None]]
"""Writes the events in one transaction and returns once it committed, or raises."""

DEFAULT_MAX_BATCH = 256


class AccessNotRecorded(Exception):
    """The commit of this request's access event failed: the answer must not leave."""


class AccessCommitter:
    def __init__(self, store: StoreBatch, *, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._store = store
        self.max_batch = max_batch
        self._queue: deque[tuple[Traced, asyncio.Future[None]]] = deque()
        self._flusher: asyncio.Task[None] | None = None
        self.commits = 0
        """Batches committed so far (for metrics and tests)."""

    async def commit(self, event: AccessRecorded) -> None:
        """Return once `event` is committed, with the current trace context; raise
        AccessNotRecorded if the commit of its group failed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append(((event, tracing.current_trace()), future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="access-group-commit")
        await future

    async def _flush(self) -> None:
        batch: list[tuple[Traced, asyncio.Future[None]]] = []
        try:
            while self._queue:
                batch = self._take()
                if not batch:
                    continue
                try:
                    await self._store([event for event, _ in batch])
                except Exception as error:
                    _settle(batch, f"access events not committed: {error!r}", error)
                else:
                    self.commits += 1
                    _settle(batch)
                batch = []
        finally:
            # Cancelled (shutdown) mid-commit: whether it committed is unknown, so no answer.
            _settle(batch, "access event commit interrupted")

    def _take(self) -> list[tuple[Traced, asyncio.Future[None]]]:
        batch: list[tuple[Traced, asyncio.Future[None]]] = []
        while self._queue and len(batch) < self.max_batch:
            entry = self._queue.popleft()
            if not entry[1].cancelled():  # its request is gone: it is never answered
                batch.append(entry)
        return batch

    async def close(self) -> None:
        """Wait for the events already queued to be committed (or failed)."""
        if self._flusher is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(self._flusher)


def _settle(
    batch: Sequence[tuple[Traced, asyncio.Future[None]]],
    failure: str | None = None,
    cause: BaseException | None = None,
) -> None:
    for _, future in batch:
        if future.done():
            continue
        if failure is None:
            future.set_result(None)
        else:
            # One exception each: several requests raising the same object would share its
            # traceback.
            error = AccessNotRecorded(failure)
            error.__cause__ = cause
            future.set_exception(error)


def outbox_store(uow: UnitOfWorkFactory) -> StoreBatch:
    """Each batch into the access outbox, in one unit of work."""

    async def store(events: Sequence[Traced]) -> None:
        async with uow() as work:
            await work.outbox.add_many(events)

    return store
