"""Console sign-in throttling: lock a client id, or a client address, after repeated failures.

State is kept in memory and is per process: a restart forgets it, and several processes
behind one name would each count on their own (the audit service runs as one process).

An attempt counts as a failure when it starts (`begin`) and is forgiven when it succeeds
(`succeeded`), so concurrent attempts cannot slip past the limit while a secret is being
hashed. Unknown ids are counted exactly like known ones, so a lockout reveals nothing about
which ids exist. Each lockout of the same key lasts twice as long as the previous one, up to
`max_lockout`; a key's state is dropped once it has been quiet for `forget_after`.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable
from dataclasses import dataclass

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True)
class Limit:
    max_failures: int
    window: dt.timedelta


@dataclass
class _State:
    window_start: dt.datetime
    last_seen: dt.datetime
    failures: int = 0
    lockouts: int = 0
    locked_until: dt.datetime | None = None


class LoginLocked(Exception):
    def __init__(self, retry_after: dt.timedelta) -> None:
        super().__init__(f"locked for {retry_after}")
        self.retry_after = retry_after

    @property
    def retry_after_seconds(self) -> int:
        return max(1, math.ceil(self.retry_after.total_seconds()))


@dataclass(frozen=True)
class Attempt:
    client_id: str
    address: str
    locked: frozenset[tuple[str, str]]


class LoginThrottle:
    MAX_KEYS = 100_000

    def __init__(
        self,
        *,
        per_id: Limit,
        per_address: Limit,
        lockout: dt.timedelta,
        max_lockout: dt.timedelta,
        clock: Clock = utc_now,
    ) -> None:
        self.per_id = per_id
        self.per_address = per_address
        self.lockout = lockout
        self.max_lockout = max_lockout
        self.forget_after = max(max_lockout, per_id.window, per_address.window) * 2
        self.clock = clock
        self._states: dict[tuple[str, str], _State] = {}

    def _keys(self, client_id: str, address: str) -> list[tuple[tuple[str, str], Limit]]:
        return [(("id", client_id), self.per_id), (("address", address), self.per_address)]

    def begin(self, client_id: str, address: str) -> Attempt:
        """Count an attempt as failed until `succeeded`; LoginLocked if either key is locked."""
        now = self.clock()
        self._forget_stale(now)
        keys = self._keys(client_id, address)
        waits = [
            state.locked_until - now
            for key, _ in keys
            if (state := self._states.get(key)) is not None
            and state.locked_until is not None
            and state.locked_until > now
        ]
        if waits:
            raise LoginLocked(max(waits))
        locked: set[tuple[str, str]] = set()
        for key, limit in keys:
            state = self._states.setdefault(key, _State(window_start=now, last_seen=now))
            state.last_seen = now
            if now - state.window_start > limit.window:
                state.window_start, state.failures = now, 0
            state.failures += 1
            if state.failures >= limit.max_failures:
                state.lockouts += 1
                growth = self.lockout * 2 ** min(state.lockouts - 1, 30)
                state.locked_until = now + min(growth, self.max_lockout)
                state.window_start, state.failures = now, 0
                locked.add(key)
        return Attempt(client_id, address, frozenset(locked))

    def succeeded(self, attempt: Attempt) -> None:
        """A right secret: forget the id's failures, and take this attempt off the address."""
        self._states.pop(("id", attempt.client_id), None)
        key = ("address", attempt.address)
        state = self._states.get(key)
        if state is None:
            return
        if key in attempt.locked:  # this very attempt locked the address: undo that
            state.locked_until = None
            state.lockouts -= 1
            state.failures = self.per_address.max_failures - 1
        elif state.failures > 0:
            state.failures -= 1

    def _forget_stale(self, now: dt.datetime) -> None:
        if len(self._states) < self.MAX_KEYS:
            return
        stale = [k for k, s in self._states.items() if now - s.last_seen > self.forget_after]
        for key in stale:
            del self._states[key]
        if len(self._states) >= self.MAX_KEYS:  # a flood of fresh keys: drop the oldest half
            by_age = sorted(self._states, key=lambda k: self._states[k].last_seen)
            for key in by_age[: len(by_age) // 2]:
                del self._states[key]
