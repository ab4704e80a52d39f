"""Group commit of prefill access events against the real PostgreSQL: concurrent requests
each get their access row, in fewer transactions than requests, and a failed group commit
answers none of them and leaves none of their rows."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Sequence
from typing import Any

from ikd_gateway.adapters.postgres import PgReadOnlyWork, PgUnitOfWork
from ikd_gateway.domain.model import SourcePosition
from ikd_gateway.service_layer.group_commit import (
    AccessCommitter,
    AccessNotRecorded,
    Traced,
    outbox_store,
)
from ikd_gateway.service_layer.prefill import prefill
from ikd_gateway.service_layer.stream import ProfileRecord, apply_profiles
from ikd_shared.db import create_pool
from tests.support.gateway import MIGRATIONS
from tests.support.gateway_factories import context, profile, verified

AGENCY, SERVICE = "polres-cirebon", "skck"  # served on a legal obligation: no consent needed
CITIZENS = 12


async def test_concurrent_prefills_share_commits_and_a_failed_commit_answers_none(
    database_factory: Any,
) -> None:
    database = await database_factory("gateway", MIGRATIONS)
    pool = await create_pool(database.app_dsn, max_size=4)
    try:
        ctx = context(AGENCY, clock=lambda: dt.datetime.now(dt.UTC))
        citizens = [
            verified(profile(300 + n), verified_at=dt.datetime.now(dt.UTC)) for n in range(CITIZENS)
        ]
        await apply_profiles(
            PgUnitOfWork(pool),
            ctx,
            [
                ProfileRecord(f"p-{n}", c.pseudonym, c, SourcePosition(0, n))
                for n, c in enumerate(citizens)
            ],
        )
        store = outbox_store(lambda: PgUnitOfWork(pool))
        # Applying the views wrote access events of their own.
        before = await pool.fetchval("SELECT count(*) FROM access_outbox")

        async def ask(committer: AccessCommitter, n: int, run: str) -> Any:
            return await prefill(
                PgReadOnlyWork(pool),  # as the API reads: no transaction of its own
                ctx,
                service_code=SERVICE,
                nik=None,
                pseudonym=citizens[n].pseudonym,
                correlation_id=f"{run}-{n}",
                committer=committer,
            )

        committer = AccessCommitter(store)
        answers = await asyncio.gather(*(ask(committer, n, "ok") for n in range(CITIZENS)))
        assert [a.pseudonym for a in answers] == [c.pseudonym for c in citizens]
        assert 1 <= committer.commits < CITIZENS, "requests shared commits"
        rows = await pool.fetch(
            "SELECT payload->>'correlation_id' AS correlation, payload->>'pseudonym' AS who,"
            " payload->>'outcome' AS outcome FROM access_outbox"
            " WHERE payload->>'channel' = 'prefill'"
        )
        assert sorted((r["correlation"], r["who"], r["outcome"]) for r in rows) == sorted(
            (f"ok-{n}", citizens[n].pseudonym, "served") for n in range(CITIZENS)
        )

        # The database refuses the group's transaction (a duplicate access id): every request
        # in it fails, and none of its rows stays.
        async def refused(events: Sequence[Traced]) -> None:
            await store([*events, events[0]])

        failing = AccessCommitter(refused)
        results = await asyncio.gather(
            *(ask(failing, n, "failed") for n in range(CITIZENS)), return_exceptions=True
        )
        assert all(isinstance(r, AccessNotRecorded) for r in results), results
        assert failing.commits == 0
        left = "SELECT count(*) FROM access_outbox WHERE payload->>'correlation_id' LIKE $1"
        assert await pool.fetchval(left, "failed-%") == 0
        assert await pool.fetchval("SELECT count(*) FROM access_outbox") == before + CITIZENS
    finally:
        await pool.close()
