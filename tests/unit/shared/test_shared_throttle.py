"""Failed sign-in throttling: per (principal, address) and per address, never per principal alone.

The same rule runs in PostgreSQL (tests/integration/shared/test_shared_throttle_store.py runs
these scenarios on the real database too).
"""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ikd_shared.throttle import (
    FailureThrottle,
    Limit,
    MemoryThrottleStore,
    Throttled,
    address_key,
)

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
WINDOW = dt.timedelta(minutes=15)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


def throttle(clock: Clock, per_principal: int = 3, per_address: int = 10) -> FailureThrottle:
    return FailureThrottle(
        MemoryThrottleStore(),
        per_principal=Limit(per_principal, WINDOW),
        per_address=Limit(per_address, WINDOW),
        clock=clock,
    )


async def fail(t: FailureThrottle, principal: str, address: str, times: int = 1) -> None:
    for _ in range(times):
        await t.begin(principal, address)  # never `succeeded`: a wrong secret


async def test_a_pair_is_throttled_after_its_limit_and_then_trickles() -> None:
    clock = Clock()
    t = throttle(clock)
    await fail(t, "alice", "10.0.0.1", times=3)
    with pytest.raises(Throttled) as throttled:
        await t.begin("alice", "10.0.0.1")
    assert throttled.value.retry_after_seconds == 300  # one more per 15 min / 3
    clock.advance(299)
    with pytest.raises(Throttled):
        await t.begin("alice", "10.0.0.1")
    clock.advance(1)
    await t.begin("alice", "10.0.0.1")  # exactly one more fits
    with pytest.raises(Throttled):
        await t.begin("alice", "10.0.0.1")


async def test_failing_with_an_id_never_locks_that_id_out_elsewhere() -> None:
    clock = Clock()
    t = throttle(clock)
    await fail(t, "alice", "203.0.113.9", times=3)
    with pytest.raises(Throttled):
        await t.begin("alice", "203.0.113.9")
    # the real alice, from her own address, with the right secret
    await t.succeeded(await t.begin("alice", "198.51.100.7"))


async def test_an_address_is_limited_whatever_ids_it_tries() -> None:
    t = throttle(Clock())
    for n in range(10):
        await t.begin(f"guess-{n}", "10.0.0.1")
    with pytest.raises(Throttled):
        await t.begin("never-tried", "10.0.0.1")
    await t.begin("never-tried", "10.0.0.2")


async def test_a_success_clears_its_pair_but_not_what_others_did_from_the_address() -> None:
    t = throttle(Clock(), per_principal=3, per_address=4)
    await fail(t, "mallory", "10.0.0.1", times=3)  # someone behind the same NAT
    await fail(t, "alice", "10.0.0.1", times=1)  # alice's typo: the address is full now
    with pytest.raises(Throttled):
        await t.begin("alice", "10.0.0.1")
    t2 = throttle(Clock(), per_principal=3, per_address=5)
    await fail(t2, "mallory", "10.0.0.1", times=3)
    await fail(t2, "alice", "10.0.0.1", times=1)
    await t2.succeeded(await t2.begin("alice", "10.0.0.1"))
    # alice's own failure is cleared with her pair; mallory's three still fill the address
    await fail(t2, "alice", "10.0.0.1", times=1)
    with pytest.raises(Throttled):
        await t2.begin("mallory", "10.0.0.1")
    with pytest.raises(Throttled):
        await t2.begin("alice", "10.0.0.1")


async def test_a_success_resets_the_pair() -> None:
    t = throttle(Clock())
    for _ in range(3):
        await fail(t, "alice", "10.0.0.1", times=2)
        await t.succeeded(await t.begin("alice", "10.0.0.1"))


async def test_a_throttled_attempt_is_not_counted() -> None:
    clock = Clock()
    t = throttle(clock, per_principal=2, per_address=100)
    await fail(t, "alice", "10.0.0.1", times=2)
    for _ in range(50):
        with pytest.raises(Throttled):
            await t.begin("alice", "10.0.0.1")
    clock.advance(WINDOW.total_seconds() / 2)
    await t.begin("alice", "10.0.0.1")


def test_addresses_count_per_ipv4_address_and_per_ipv6_64() -> None:
    assert address_key("192.0.2.1") == "192.0.2.1"
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::9")
    assert address_key("2001:db8:1:2::1") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") != address_key("2001:db8:1:2::1")
    assert address_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert address_key(None) == "unknown"
    assert address_key("testclient") == "testclient"
    assert len(address_key("x" * 5000)) == 128


@settings(max_examples=60, deadline=None)
@given(
    limit=st.integers(1, 6),
    gaps=st.lists(st.integers(0, 400), min_size=1, max_size=40),
)
async def test_never_more_failures_than_the_limit_allows_in_any_window(
    limit: int, gaps: list[int]
) -> None:
    """GCRA's bound: in any span of length s, at most limit + s / cost failures get through."""
    clock = Clock()
    t = throttle(clock, per_principal=limit, per_address=1000)
    cost = WINDOW.total_seconds() / limit
    allowed: list[dt.datetime] = []
    for gap in gaps:
        clock.advance(gap)
        try:
            await t.begin("alice", "10.0.0.1")
        except Throttled:
            continue
        allowed.append(clock.now)
    for i, first in enumerate(allowed):
        for j in range(i, len(allowed)):
            span = (allowed[j] - first).total_seconds()
            assert j - i + 1 <= limit + span / cost + 1e-9
