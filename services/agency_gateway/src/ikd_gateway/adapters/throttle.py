"""The denial counters of the API's clients in the agency's database (asyncpg)."""

from __future__ import annotations

from typing import Any, TypeVar

import asyncpg

from ikd_gateway.domain.throttle import DenialCounter
from ikd_gateway.service_layer.throttle import Change, DenialCounters

T = TypeVar("T")

_SELECT = """SELECT window_started_at, denials, blocked_until, block_audited
    FROM client_denials WHERE client_id = $1"""
# A row to lock before the first denial of a client: two replicas counting it at once would
# otherwise both find none and one count would be lost. An empty window long past is the same
# as no counter (domain/throttle.py opens a new window).
_ENSURE = """INSERT INTO client_denials (client_id, window_started_at, denials)
    VALUES ($1, 'epoch', 0) ON CONFLICT (client_id) DO NOTHING"""
_STORE = """UPDATE client_denials SET window_started_at = $2, denials = $3, blocked_until = $4,
    block_audited = $5, updated_at = now() WHERE client_id = $1"""


def _counter(row: asyncpg.Record | None) -> DenialCounter | None:
    if row is None:
        return None
    return DenialCounter(
        window_started_at=row["window_started_at"],
        denials=row["denials"],
        blocked_until=row["blocked_until"],
        block_audited=row["block_audited"],
    )


class PgDenialCounters(DenialCounters):
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def get(self, client_id: str) -> DenialCounter | None:
        return _counter(await self._pool.fetchrow(_SELECT, client_id))

    async def update(self, client_id: str, change: Change[T]) -> T:
        connection: Any
        async with self._pool.acquire() as connection, connection.transaction():
            await connection.execute(_ENSURE, client_id)
            row = await connection.fetchrow(_SELECT + " FOR UPDATE", client_id)
            after, result = change(_counter(row))
            if after is not None:
                await connection.execute(
                    _STORE,
                    client_id,
                    after.window_started_at,
                    after.denials,
                    after.blocked_until,
                    after.block_audited,
                )
            return result
