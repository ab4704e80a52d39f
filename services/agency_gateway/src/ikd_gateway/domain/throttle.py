"""When a client that keeps being denied is throttled: pure rules over one client's counter.

A fixed window per client: a denial more than `window` after the window started opens a new
one. The `limit`-th denial of a window blocks the client for `block`; while blocked its
requests are refused (429) before anything else is looked at, so they neither reach a citizen
nor count as denials, and only the first of them is audited (`first` below): the log shows
that and when the client was throttled, and cannot be flooded by a client that keeps asking.
Storage (shared by the API replicas) applies these functions under a row lock.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class ThrottleRules:
    limit: int
    """denials in one window that block the client"""
    window: dt.timedelta
    block: dt.timedelta


@dataclass(frozen=True, slots=True)
class DenialCounter:
    """One client's state: its current window, and its block if any."""

    window_started_at: dt.datetime
    denials: int
    blocked_until: dt.datetime | None = None
    block_audited: bool = False
    """the first refusal of the current block was audited"""


@dataclass(frozen=True, slots=True)
class Refusal:
    until: dt.datetime
    """when the block ends"""
    first: bool
    """the first refusal of this block: the one that is audited"""

    def retry_after(self, now: dt.datetime) -> int:
        """Whole seconds until the block ends, at least 1 (for Retry-After)."""
        return max(1, math.ceil((self.until - now).total_seconds()))


def blocked(counter: DenialCounter | None, now: dt.datetime) -> bool:
    return counter is not None and counter.blocked_until is not None and now < counter.blocked_until


def after_denial(
    counter: DenialCounter | None, now: dt.datetime, rules: ThrottleRules
) -> DenialCounter:
    """The counter once a denial at `now` is counted."""
    if counter is None or now >= counter.window_started_at + rules.window:
        counter = DenialCounter(
            window_started_at=now,
            denials=0,
            blocked_until=counter.blocked_until if counter else None,
            block_audited=counter.block_audited if counter else False,
        )
    if blocked(counter, now):
        # A request that passed the check just before the block began: counted, no longer.
        return replace(counter, denials=counter.denials + 1)
    if counter.denials + 1 >= rules.limit:
        return DenialCounter(
            window_started_at=now, denials=0, blocked_until=now + rules.block, block_audited=False
        )
    return replace(counter, denials=counter.denials + 1)


def after_refusal(counter: DenialCounter, now: dt.datetime) -> tuple[DenialCounter, Refusal]:
    """A blocked client's request at `now` is refused: the counter after it, and the refusal."""
    if counter.blocked_until is None or now >= counter.blocked_until:
        raise ValueError("the client is not blocked")
    return (
        replace(counter, block_audited=True),
        Refusal(until=counter.blocked_until, first=not counter.block_audited),
    )
