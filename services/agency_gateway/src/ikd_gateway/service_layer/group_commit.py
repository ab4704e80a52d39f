"""Group commit of access events: concurrent prefill answers share one transaction.

An answer leaves only once its access event is committed. One transaction per request costs a
commit (a WAL flush) each; here (ikd_shared.group_commit) the events queued while one commit
runs all go into the next, up to `max_batch`. Nothing waits for a timer: a request waits at most
for the commit in flight and then its own, and under load one commit serves many requests. A
failed commit fails every request in it (`AccessNotRecorded`), so none of them is answered as
served.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from ikd_gateway.service_layer.context import UnitOfWorkFactory
from ikd_shared import tracing
from ikd_shared.events.access_v1 import AccessRecorded
from ikd_shared.group_commit import GroupCommit
from ikd_shared.tracing import TraceContext

Traced = tuple[AccessRecorded, TraceContext | None]
StoreBatch = Callable[[Sequence[Traced]], Awaitable[None]]
"""Writes the events in one transaction and returns once it committed, or raises."""

DEFAULT_MAX_BATCH = 256


class AccessNotRecorded(Exception):
    """The commit of this request's access event failed: the answer must not leave."""


class AccessCommitter:
    def __init__(self, store: StoreBatch, *, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        async def run(events: list[Traced]) -> list[None]:
            await store(events)
            return [None] * len(events)

        # Events never conflict (each its own key); one commit at a time, the next gathering.
        self._group: GroupCommit[Traced, None] = GroupCommit(
            run, key=id, max_batch=max_batch, max_in_flight=1, same_turn=True
        )
        self.max_batch = max_batch

    @property
    def commits(self) -> int:
        """Batches committed so far (for metrics and tests)."""
        return self._group.commits

    async def commit(self, event: AccessRecorded) -> None:
        """Return once `event` is committed, with the current trace context; raise
        AccessNotRecorded if the commit of its group failed."""
        try:
            await self._group.submit((event, tracing.current_trace()))
        except Exception as error:
            raise AccessNotRecorded(f"access events not committed: {error!r}") from error

    async def close(self) -> None:
        """Wait for the events already queued to be committed (or failed)."""
        await self._group.close()


def outbox_store(uow: UnitOfWorkFactory) -> StoreBatch:
    """Each batch into the access outbox, in one unit of work."""

    async def store(events: Sequence[Traced]) -> None:
        async with uow() as work:
            await work.outbox.add_many(events)

    return store
