"""Group commit: concurrent commands share one transaction, each answered after its commit.

A command waits while `max_in_flight` batches are being committed; when one finishes, all the
commands that gathered meanwhile (up to `max_batch`) go together. Nothing waits for a timer;
with `same_turn`, the first batch also waits for the commands submitted in the same turn of
the event loop (one commit for requests that arrived together, instead of the first alone).
Under load that turns many short transactions (each a BEGIN, its statements and a COMMIT, with
the session idle in transaction whenever this process is busy elsewhere) into a few
set-based ones; alone, a command goes at once in a batch of one.

`run` gets a batch and returns one outcome per command, a result or the exception that
rejects only that command; if `run` raises (a failed commit, a lost connection), every
command of the batch gets that exception: none is answered as done unless its batch committed.
Commands with the same `key` never share a batch (they would write the same rows).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


class GroupCommit(Generic[Item, Result]):
    def __init__(
        self,
        run: Callable[[list[Item]], Awaitable[Sequence[Result | Exception]]],
        *,
        key: Callable[[Item], Hashable],
        max_batch: int = 64,
        max_in_flight: int = 2,
        same_turn: bool = False,
    ) -> None:
        if max_batch < 1 or max_in_flight < 1:
            raise ValueError("max_batch and max_in_flight must be at least 1")
        self._run = run
        self._key = key
        self.max_batch = max_batch
        self.max_in_flight = max_in_flight
        self._pending: list[tuple[Item, asyncio.Future[Result]]] = []
        self._in_flight = 0
        self._same_turn = same_turn
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self.commits = 0
        """Batches committed so far (for metrics and tests)."""

    async def submit(self, item: Item) -> Result:
        """The command's own outcome, once its batch committed (or failed)."""
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        if not self._same_turn:
            self._start_batches()
        elif not self._scheduled:
            # After the commands already due in this turn of the loop, so they join the batch.
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._start_batches)
        return await future

    async def close(self) -> None:
        """Wait for the batches in flight to be committed (or failed)."""
        while self._tasks:
            await asyncio.wait(list(self._tasks))

    def _start_batches(self) -> None:
        self._scheduled = False
        while self._pending and self._in_flight < self.max_in_flight:
            batch: list[tuple[Item, asyncio.Future[Result]]] = []
            rest: list[tuple[Item, asyncio.Future[Result]]] = []
            keys: set[Hashable] = set()
            for entry in self._pending:
                key = self._key(entry[0])
                if entry[1].cancelled() or len(batch) >= self.max_batch or key in keys:
                    if not entry[1].cancelled():
                        rest.append(entry)
                    continue
                keys.add(key)
                batch.append(entry)
            self._pending = rest
            if not batch:
                return
            self._in_flight += 1
            task = asyncio.create_task(self._commit(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _commit(self, batch: list[tuple[Item, asyncio.Future[Result]]]) -> None:
        try:
            outcomes = await self._run([item for item, _ in batch])
        except BaseException as error:  # includes cancellation: nobody may wait forever
            for _, future in batch:
                if future.done():
                    continue
                if isinstance(error, asyncio.CancelledError):
                    future.cancel()
                else:
                    future.set_exception(error)
            if not isinstance(error, Exception):
                raise
        else:
            self.commits += 1
            for (_, future), outcome in zip(batch, outcomes, strict=True):
                if future.done():  # the caller went away; its command is committed anyway
                    continue
                if isinstance(outcome, Exception):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
        finally:
            self._in_flight -= 1
            self._start_batches()
