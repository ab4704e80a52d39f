"""The outbox relay skeleton: publish committed outbox rows, then mark them sent.

A service writes its events into an outbox table in the same transaction as its state; a relay
publishes them and marks them sent only after the broker acknowledged them. A crash between
the acknowledgement and the mark republishes the rows with the same event ids (at least once;
consumers drop duplicates by id). Two strategies, sharing the wait/wake/retry skeleton:

- `OrderedRelay`: one active relay per outbox (a session-level advisory lock on a dedicated
  connection; others stand by and take over when its connection ends), rows published and
  marked in position order, woken by `wake()` in-process, by LISTEN/NOTIFY from other
  processes, and by a fallback poll. For streams whose order matters (identity's profiles).
- `ConcurrentRelay`: any number of relays share the table; each claims a batch with
  FOR UPDATE SKIP LOCKED in a transaction, publishes it and marks it before committing. For
  independent events (the gateway's access events).

All SQL stays in the services' adapters: they implement the small protocols below.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from ikd_shared.supervise import Errors, sleep_unless, supervise

R = TypeVar("R")
log = logging.getLogger(__name__)

Publish = Callable[[Sequence[R]], Awaitable[None]]
"""Publish a batch and return once the broker acknowledged every record of it."""
Publisher = Callable[[], AbstractAsyncContextManager[Publish[R]]]
"""Opens a publisher (a started producer) for one session of the ordered relay."""
Hook = Callable[[Sequence[R]], Awaitable[None]]


class OrderedSession(Protocol[R]):
    """The ordered strategy's view of the outbox, on one dedicated connection."""

    async def try_lock(self) -> bool:
        """Take the relay's session-level lock; False if another session holds it."""
        ...

    async def listen(self, wake: Callable[[], None]) -> None:
        """Call `wake` whenever another process announces new rows (LISTEN)."""
        ...

    async def unsent(self, limit: int) -> Sequence[R]:
        """Up to `limit` unsent rows, oldest first."""
        ...

    async def mark_sent(self, rows: Sequence[R]) -> None: ...

    async def close(self) -> None:
        """End the connection (which releases the lock)."""
        ...


class ClaimedBatch(Protocol[R]):
    """Rows locked by one transaction of the concurrent strategy."""

    rows: Sequence[R]

    async def mark_sent(self) -> None:
        """Mark (or delete) the claimed rows in the claiming transaction."""
        ...


Claim = Callable[[int], AbstractAsyncContextManager[ClaimedBatch[R]]]
"""Claim up to n rows (FOR UPDATE SKIP LOCKED); the transaction commits when the block exits."""


@dataclass(frozen=True, slots=True)
class RelayHooks(Generic[R]):
    """Test seams around the two crash points: before publishing and before marking sent."""

    before_publish: Hook[R] | None = None
    after_publish: Hook[R] | None = None


class _Waker:
    """A wake-up flag: set by `wake()`, waited for with a timeout and a stop event."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def wake(self) -> None:
        self._event.set()

    def clear(self) -> None:
        self._event.clear()

    async def wait(self, stop: asyncio.Event | None, seconds: float) -> None:
        waiters = {asyncio.ensure_future(self._event.wait())}
        if stop is not None:
            waiters.add(asyncio.ensure_future(stop.wait()))
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()


class OrderedRelay(Generic[R]):
    def __init__(
        self,
        connect: Callable[[], Awaitable[OrderedSession[R]]],
        publisher: Publisher[R],
        *,
        outages: Errors,
        batch_size: int = 1000,
        poll_interval: float = 1.0,
        standby_interval: float = 1.0,
        retry_interval: float = 1.0,
        retry_max: float = 10.0,
        hooks: RelayHooks[R] | None = None,
        on_active: Callable[[bool], None] = lambda _: None,
        on_published: Callable[[int], None] = lambda _: None,
        name: str = "relay",
    ) -> None:
        self._connect = connect
        self._publisher = publisher
        self._outages = outages
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._standby_interval = standby_interval
        self._retry_interval = retry_interval
        self._retry_max = retry_max
        self._hooks: RelayHooks[R] = hooks or RelayHooks()
        self._on_active = on_active
        self._on_published = on_published
        self.name = name
        self.active = asyncio.Event()
        self.published = 0
        self._waker = _Waker()

    def wake(self) -> None:
        """New outbox rows were committed (by this process): publish without waiting."""
        self._waker.wake()

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until `stop` is set; outages (`outages`) are retried, anything else raises."""
        await supervise(
            lambda: self._session(stop),
            name=f"outbox relay {self.name}",
            stop=stop,
            retry_on=self._outages,
            initial=self._retry_interval,
            maximum=self._retry_max,
        )

    async def supervise(self, stop: asyncio.Event) -> None:
        """`run`, restarted after any failure (for a relay living inside another process)."""
        await supervise(
            lambda: self.run(stop),
            name=f"outbox relay {self.name} (crashed)",
            stop=stop,
            initial=self._retry_interval,
            maximum=self._retry_max,
            trace=True,
        )

    async def _session(self, stop: asyncio.Event) -> None:
        session = await self._connect()
        try:
            if not await session.try_lock():
                log.info("another relay is active; standing by", extra={"relay": self.name})
                while not await session.try_lock():
                    if await sleep_unless(stop, self._standby_interval):
                        return
            log.info("relay active", extra={"relay": self.name})
            self.active.set()
            self._on_active(True)
            try:
                await self._lead(session, stop)
            finally:
                self.active.clear()
                self._on_active(False)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(session.close(), timeout=5)

    async def _lead(self, session: OrderedSession[R], stop: asyncio.Event) -> None:
        await session.listen(self._waker.wake)
        async with self._publisher() as publish:
            while not stop.is_set():
                self._waker.clear()
                rows = await session.unsent(self._batch_size)
                if rows:
                    await self._publish(session, publish, rows)
                    continue
                await self._waker.wait(stop, self._poll_interval)

    async def _publish(
        self, session: OrderedSession[R], publish: Publish[R], rows: Sequence[R]
    ) -> None:
        if self._hooks.before_publish is not None:
            await self._hooks.before_publish(rows)
        await publish(rows)
        if self._hooks.after_publish is not None:
            await self._hooks.after_publish(rows)
        await session.mark_sent(rows)
        self.published += len(rows)
        self._on_published(len(rows))


class ConcurrentRelay(Generic[R]):
    def __init__(
        self,
        claim: Claim[R],
        publish: Publish[R],
        *,
        interval: float = 0.2,
        batch_size: int = 500,
        retry_max: float = 10.0,
        name: str = "relay",
    ) -> None:
        self._claim = claim
        self._publish = publish
        self.interval = interval
        self.batch_size = batch_size
        self._retry_max = retry_max
        self.name = name
        self.published = 0
        self._waker = _Waker()

    def wake(self) -> None:
        """Called after a commit that added outbox rows, to publish without waiting."""
        self._waker.wake()

    async def publish_batch(self) -> int:
        """Publish one batch of claimed rows; return how many were published."""
        async with self._claim(self.batch_size) as batch:
            rows = batch.rows
            if not rows:
                return 0
            await self._publish(rows)
            await batch.mark_sent()
        self.published += len(rows)
        return len(rows)

    async def drain(self) -> None:
        """Publish batches until one comes back less than full."""
        while await self.publish_batch() == self.batch_size:
            pass

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Publish until `stop` is set (or cancelled); a failed batch is retried with backoff."""
        stopping = stop or asyncio.Event()

        async def round_() -> None:
            self._waker.clear()
            await self.drain()
            await self._waker.wait(stopping, self.interval)

        await supervise(
            round_,
            name=f"outbox relay {self.name}",
            stop=stopping,
            initial=self.interval,
            maximum=self._retry_max,
            trace=True,
        )
