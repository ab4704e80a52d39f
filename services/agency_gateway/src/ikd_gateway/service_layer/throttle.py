"""Throttling the API clients this gateway keeps denying (rules: domain/throttle.py).

The counters live in the agency's database, so every API replica sees the same ones. Each
replica remembers for `recheck` that a client was not blocked when it last looked: a busy
backend costs one read per second, not one per request, and a block another replica set
takes effect here within that time (at once on the replica that counted the last denial).
"""

from __future__ import annotations

import abc
import asyncio
import datetime as dt
from collections.abc import Callable
from typing import TypeVar

from ikd_gateway.domain.throttle import (
    DenialCounter,
    Refusal,
    ThrottleRules,
    after_denial,
    after_refusal,
    blocked,
)

T = TypeVar("T")
Change = Callable[[DenialCounter | None], tuple[DenialCounter | None, T]]


class DenialCounters(abc.ABC):
    """Every client's counter, shared by the API replicas."""

    @abc.abstractmethod
    async def get(self, client_id: str) -> DenialCounter | None: ...

    @abc.abstractmethod
    async def update(self, client_id: str, change: Change[T]) -> T:
        """Apply `change` to the client's counter atomically (no other change in between);
        store the counter it returns (None: leave it) and return its result."""


class ClientThrottle:
    def __init__(
        self,
        counters: DenialCounters,
        rules: ThrottleRules,
        clock: Callable[[], dt.datetime],
        *,
        recheck: dt.timedelta = dt.timedelta(seconds=1),
    ) -> None:
        self.counters = counters
        self.rules = rules
        self._clock = clock
        self._recheck = recheck
        # Per client id (only verified tokens get here, so registered clients only).
        self._clear_until: dict[str, dt.datetime] = {}
        self._refusing_until: dict[str, dt.datetime] = {}
        self._looking: dict[str, asyncio.Future[Refusal | None]] = {}

    async def refusal(self, client_id: str) -> Refusal | None:
        """Whether the client's request is refused now, and if so whether it is the block's
        first refusal (the one to audit)."""
        now = self._clock()
        until = self._refusing_until.get(client_id)
        if until is not None and now < until:
            # This replica already refused during this block: the first refusal is past.
            return Refusal(until, first=False)
        clear = self._clear_until.get(client_id)
        if clear is not None and now < clear:
            return None
        # One look per client at a time: when the recheck time ends, the requests already in
        # flight wait for that one read instead of each reading the counter.
        looking = self._looking.get(client_id)
        if looking is not None:
            seen = await asyncio.shield(looking)
            return None if seen is None else Refusal(seen.until, first=False)
        looking = asyncio.ensure_future(self._look(client_id, now))
        self._looking[client_id] = looking
        looking.add_done_callback(lambda _: self._looking.pop(client_id, None))
        return await asyncio.shield(looking)

    async def _look(self, client_id: str, now: dt.datetime) -> Refusal | None:
        counter = await self.counters.get(client_id)
        if blocked(counter, now):
            refusal = await self.counters.update(client_id, lambda c: _refuse(c, now))
            if refusal is not None:
                self._refusing_until[client_id] = refusal.until
                return refusal
        self._refusing_until.pop(client_id, None)
        self._clear_until[client_id] = now + self._recheck
        return None

    def now(self) -> dt.datetime:
        return self._clock()

    async def denied(self, client_id: str) -> None:
        """Count a denial of the client's request (it may block the client)."""
        now = self._clock()

        def count(counter: DenialCounter | None) -> tuple[DenialCounter, DenialCounter]:
            after = after_denial(counter, now, self.rules)
            return after, after

        if blocked(await self.counters.update(client_id, count), now):
            self._clear_until.pop(client_id, None)


def _refuse(
    counter: DenialCounter | None, now: dt.datetime
) -> tuple[DenialCounter | None, Refusal | None]:
    if counter is None or not blocked(counter, now):
        return None, None  # the block ended meanwhile
    return after_refusal(counter, now)
