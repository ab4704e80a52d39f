"""The PostgreSQL unit of work: a clean exit commits, an exception rolls back, nothing else does."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from ikd_identity.adapters.postgres import PgUnitOfWork
from ikd_identity.domain.errors import ConcurrentWrite
from ikd_identity.domain.model import OutboxMessage


class Refused(Exception):
    pass


def _message(key: str) -> OutboxMessage:
    return OutboxMessage(topic="test", key=key, ce_type="test", payload=b"{}")


async def test_clean_exit_commits_and_wakes_the_relay_once(api, db) -> None:
    woken: list[int] = []

    async def wake() -> None:
        woken.append(1)

    async with PgUnitOfWork(api.container.pool, on_outbox=wake) as uow:
        await uow.outbox.add([_message("a"), _message("b")])
        assert woken == []
    assert await db.fetchval("SELECT count(*) FROM outbox") == 2
    assert woken == [1]


async def test_an_exception_rolls_back_and_wakes_nothing(api, db) -> None:
    woken: list[int] = []

    async def wake() -> None:
        woken.append(1)

    async def refused_command() -> None:
        async with PgUnitOfWork(api.container.pool, on_outbox=wake) as uow:
            await uow.outbox.add([_message("a")])
            raise Refused

    with pytest.raises(Refused):
        await refused_command()
    assert await db.fetchval("SELECT count(*) FROM outbox") == 0
    assert woken == []
    # The connection went back to the pool without an open transaction.
    async with PgUnitOfWork(api.container.pool) as uow:
        await uow.outbox.add([_message("c")])
    assert await db.fetchval("SELECT count(*) FROM outbox") == 1


async def test_a_deadlock_victim_is_rolled_back_as_a_retryable_concurrent_write(api, db) -> None:
    pool = api.container.pool
    both_hold_one = asyncio.Barrier(2)

    async def lock_in_order(first: str, second: str) -> None:
        async with PgUnitOfWork(pool) as uow:
            await uow.consents.next_version(first)
            await both_hold_one.wait()
            await uow.consents.next_version(second)

    outcomes = await asyncio.gather(
        lock_in_order("a", "b"), lock_in_order("b", "a"), return_exceptions=True
    )
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(errors) == 1, outcomes
    assert isinstance(errors[0], ConcurrentWrite)
    assert isinstance(errors[0].__cause__, asyncpg.DeadlockDetectedError)
    # The survivor committed both of its rows; the victim left nothing.
    assert await db.fetchval("SELECT sum(version) FROM consent_versions") == 2
