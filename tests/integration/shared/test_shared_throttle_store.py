"""The sign-in throttle's PostgreSQL store: the same answers as the rule in memory, atomic under
concurrency, and the runtime roles of identity and audit may count but not delete."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from ikd_audit.cli import MIGRATIONS as AUDIT_MIGRATIONS
from ikd_identity.cli import MIGRATIONS as IDENTITY_MIGRATIONS
from ikd_shared.db import create_pool
from ikd_shared.throttle import (
    FailureThrottle,
    Limit,
    MemoryThrottleStore,
    PgThrottleStore,
    Throttled,
)

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
WINDOW = dt.timedelta(minutes=10)
SERVICES = {"identity": IDENTITY_MIGRATIONS, "audit": AUDIT_MIGRATIONS}


@pytest.fixture(params=sorted(SERVICES))
async def app_pool(request: pytest.FixtureRequest, database_factory: Any) -> AsyncIterator[Any]:
    database = await database_factory(request.param, Path(SERVICES[request.param]))
    pool = await create_pool(database.app_dsn, min_size=1, max_size=8)
    try:
        yield pool
    finally:
        await pool.close()


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> dt.datetime:
        return self.now


async def outcomes(t: FailureThrottle, clock: Clock) -> list[object]:
    """A fixed script of attempts; what each one got (True: counted, seconds: throttled)."""
    script: list[tuple[float, str, str, bool]] = [
        # (seconds later, principal, address, secret right)
        *[(1, "alice", "203.0.113.9", False)] * 3,
        (1, "alice", "203.0.113.9", True),  # throttled even with the right secret
        (1, "alice", "198.51.100.7", True),  # the real alice elsewhere: fine
        *[(1, f"id-{n}", "192.0.2.1", False) for n in range(6)],
        (1, "new-id", "192.0.2.1", True),  # the address is full
        (200, "alice", "203.0.113.9", False),  # one more trickles through
        (1, "alice", "203.0.113.9", False),
        (1, "bob", "2001:db8::1", False),
        (1, "bob", "2001:db8::2", False),
        (1, "bob", "2001:db8::3", False),
        (1, "bob", "2001:db8::4", True),  # same /64: throttled
        (1, "bob", "2001:db9::4", True),
    ]
    seen: list[object] = []
    for later, principal, address, right in script:
        clock.now += dt.timedelta(seconds=later)
        try:
            attempt = await t.begin(principal, address)
        except Throttled as throttled:
            seen.append(throttled.retry_after_seconds)
            continue
        if right:
            await t.succeeded(attempt)
        seen.append(True)
    return seen


def build(store: Any, clock: Clock) -> FailureThrottle:
    return FailureThrottle(
        store, per_principal=Limit(3, WINDOW), per_address=Limit(6, WINDOW), clock=clock
    )


async def test_postgresql_answers_as_the_rule_in_memory(app_pool: Any) -> None:
    clock = Clock()
    in_postgres = await outcomes(build(PgThrottleStore(app_pool), clock), clock)
    clock = Clock()
    assert in_postgres == await outcomes(build(MemoryThrottleStore(), clock), clock)
    assert in_postgres[:3] == [True] * 3
    assert in_postgres[3] == 197  # 3 per 10 min: 200 s after the first failure, 3 s ago
    assert in_postgres[4] is True
    assert in_postgres[5:11] == [True] * 6
    assert isinstance(in_postgres[11], int)
    assert in_postgres[12] is True
    assert isinstance(in_postgres[13], int)
    assert in_postgres[14:17] == [True] * 3
    assert isinstance(in_postgres[17], int)
    assert in_postgres[18] is True


async def test_concurrent_failures_never_exceed_the_limit(app_pool: Any) -> None:
    t = FailureThrottle(
        PgThrottleStore(app_pool),
        per_principal=Limit(5, WINDOW),
        per_address=Limit(1000, WINDOW),
    )
    results = await asyncio.gather(
        *(t.begin("alice", "203.0.113.9") for _ in range(20)), return_exceptions=True
    )
    counted = [r for r in results if not isinstance(r, BaseException)]
    assert len(counted) == 5
    assert all(isinstance(r, Throttled) for r in results if isinstance(r, BaseException))


async def test_runtime_role_counts_and_prunes_but_cannot_delete(app_pool: Any) -> None:
    store = PgThrottleStore(app_pool)
    t = FailureThrottle(store, per_principal=Limit(3, WINDOW), per_address=Limit(6, WINDOW))
    t.clock = lambda: START  # long past: these rows hold nothing back
    await t.begin("alice", "192.0.2.1")
    t.clock = lambda: dt.datetime.now(dt.UTC)
    await t.begin("bob", "192.0.2.2")
    async with app_pool.acquire() as connection:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await connection.execute("DELETE FROM auth_throttle")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await connection.execute("TRUNCATE auth_throttle")
    assert await store.prune() == 2  # alice's pair and her address
    async with app_pool.acquire() as connection:
        left = await connection.fetch("SELECT address, principal FROM auth_throttle ORDER BY 2")
    assert [(r["address"], r["principal"]) for r in left] == [
        ("192.0.2.2", ""),
        ("192.0.2.2", "bob"),
    ]
