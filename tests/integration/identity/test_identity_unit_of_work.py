"""The PostgreSQL unit of work: a clean exit commits, an exception rolls back, nothing else does."""

from __future__ import annotations

import pytest

from ikd_identity.adapters.postgres import PgUnitOfWork
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
