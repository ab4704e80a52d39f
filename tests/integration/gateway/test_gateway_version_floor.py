"""The version floor in PostgreSQL: a citizen no longer held leaves a row with the pseudonym, the
last version and an end, and no personal data; it refuses older versions delivered again, the
retention sweep deletes it once its time is up, and the table refuses a floor holding data."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from ikd_gateway.adapters.postgres import PgUnitOfWork
from ikd_gateway.domain.model import SourcePosition
from ikd_gateway.service_layer.stream import ProfileRecord, apply_profiles, sweep_retention
from ikd_gateway.service_layer.unit_of_work import Endpoint
from ikd_shared.db import create_pool
from ikd_shared.events.profile_v1 import RelationshipsChanged
from tests.support.gateway import MIGRATIONS
from tests.support.gateway_factories import NOW, context, profile, relationship, verified

AGENCY = "polres-cirebon"


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
async def pool(database_factory: Any) -> AsyncIterator[asyncpg.Pool]:
    database = await database_factory("gateway", MIGRATIONS)
    pool = await create_pool(database.app_dsn, max_size=2)
    yield pool
    await pool.close()


def suffix(serial: int) -> list[ProfileRecord]:
    """v1 and v2 relate the citizen to the agency's skck service; v3 only to another agency."""
    first = verified(profile(serial), relationships=[relationship(AGENCY, "skck")])
    events = [first]
    for version, agency, service in (
        (2, AGENCY, "skck"),
        (3, "dinsos-cirebon", "social-assistance"),
    ):
        events.append(
            RelationshipsChanged(
                pseudonym=first.pseudonym,
                version=version,
                profile=profile(serial, street=f"Jl. Versi {version}"),
                verified_at=NOW,
                changed_at=NOW,
                relationships=[relationship(agency, service)],
            )
        )
    return [
        ProfileRecord(str(uuid.uuid4()), first.pseudonym, event, SourcePosition(0, offset))
        for offset, event in enumerate(events)
    ]


async def written(pool: asyncpg.Pool) -> dict[str, int]:
    """How many rows each table that serves or announces a citizen has."""
    tables = ("access_outbox", "agency_outbox", "webhook_messages")
    return {table: await pool.fetchval(f"SELECT count(*) FROM {table}") for table in tables}


async def test_a_purge_leaves_only_a_floor_that_refuses_a_suffix_sent_again(
    pool: asyncpg.Pool,
) -> None:
    clock = Clock()
    ctx = context(AGENCY, clock=clock)
    async with PgUnitOfWork(pool) as uow:
        endpoint = Endpoint(uuid.uuid4(), "https://polres.example/hook", "skck", "whsec_x", True)
        await uow.webhooks.add_endpoint(endpoint, "test")
    records = suffix(21)
    pseudonym = records[0].pseudonym
    for record in records:
        await apply_profiles(PgUnitOfWork(pool), ctx, [record])

    row = await pool.fetchrow("SELECT * FROM citizen_view")
    assert row is not None
    assert {name: value for name, value in row.items() if name != "updated_at"} == {
        "pseudonym": pseudonym,
        "version": 3,
        "data": {},
        "expires": {},
        "next_expiry": NOW + ctx.version_floor,
        "verified_at": None,
        "erased": False,
        "source_partition": None,
        "source_offset": None,
        "relationships": [],
    }, "the pseudonym, the last version and the floor's end: nothing else"
    async with PgUnitOfWork(pool) as uow:
        floor = await uow.views.get(pseudonym)
    assert floor is not None
    assert (floor.is_floor, floor.floor_until) == (True, NOW + ctx.version_floor)
    before = await written(pool)

    # identity's relay sends the suffix again after a takeover: new offsets, new ids.
    again = [
        ProfileRecord(str(uuid.uuid4()), pseudonym, r.event, SourcePosition(0, 3 + i))
        for i, r in enumerate(records)
    ]
    results = await apply_profiles(PgUnitOfWork(pool), ctx, again)
    assert [r.reason for r in results] == ["stale", "stale", "stale"]
    results = [(await apply_profiles(PgUnitOfWork(pool), ctx, [r]))[0] for r in again[:2]]
    assert [r.reason for r in results] == ["duplicate", "duplicate"]
    assert await pool.fetchval("SELECT version FROM citizen_view") == 3
    assert await pool.fetchval("SELECT count(*) FROM citizen_view WHERE data <> '{}'") == 0
    assert await written(pool) == before, "nothing stored, audited, published or pushed"

    # A newer version that does not relate the citizen raises the floor, keeping its end.
    clock.now = NOW + dt.timedelta(days=1)
    newer = RelationshipsChanged.model_validate(records[2].event.model_dump() | {"version": 5})
    await apply_profiles(PgUnitOfWork(pool), ctx, [ProfileRecord("v5", pseudonym, newer)])
    raised = await pool.fetchrow("SELECT version, next_expiry FROM citizen_view")
    assert tuple(raised) == (5, NOW + ctx.version_floor)
    assert await written(pool) == before

    clock.now = NOW + ctx.version_floor - dt.timedelta(seconds=1)
    assert await sweep_retention(PgUnitOfWork(pool), ctx) == 0
    clock.now = NOW + ctx.version_floor
    assert await sweep_retention(PgUnitOfWork(pool), ctx) == 1
    assert await pool.fetchval("SELECT count(*) FROM citizen_view") == 0, "its time is up"
    assert await written(pool) == before, "the purge was published when the floor was left"


async def test_the_retention_sweep_leaves_a_floor_when_the_last_relationship_runs_out(
    pool: asyncpg.Pool,
) -> None:
    clock = Clock()
    ctx = context(AGENCY, clock=clock)
    short = relationship(AGENCY, "skck", expires_at=NOW + dt.timedelta(days=1))
    event = verified(profile(22), relationships=[short])
    record = ProfileRecord("v1", event.pseudonym, event, SourcePosition(0, 0))
    await apply_profiles(PgUnitOfWork(pool), ctx, [record])
    clock.now = NOW + dt.timedelta(days=2)
    assert await sweep_retention(PgUnitOfWork(pool), ctx) == 1
    row = await pool.fetchrow("SELECT version, data, verified_at, next_expiry FROM citizen_view")
    assert row is not None
    assert dict(row) == {
        "version": 1,
        "data": {},
        "verified_at": None,
        "next_expiry": clock.now + ctx.version_floor,
    }


@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("data", """'{"full_name": "Warga 1"}'"""),
        ("expires", """'{"full_name": "2025-06-08T09:00:00+00:00"}'"""),
        ("relationships", """'[{"agency": "polres-cirebon"}]'"""),
        ("source_partition", "0"),
        ("source_offset", "7"),
    ],
)
async def test_the_table_refuses_a_row_without_verification_that_holds_anything(
    pool: asyncpg.Pool, column: str, value: str
) -> None:
    values = {"pseudonym": "'p'", "version": "1", "data": "'{}'", "expires": "'{}'"}
    values |= {"next_expiry": "now()", column: value}
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute(
            f"INSERT INTO citizen_view ({', '.join(values)}) VALUES ({', '.join(values.values())})"
        )


async def test_the_table_refuses_a_floor_without_an_end(pool: asyncpg.Pool) -> None:
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute(
            """INSERT INTO citizen_view (pseudonym, version, data, expires)
               VALUES ('p', 1, '{}', '{}')"""
        )
    await pool.execute(
        """INSERT INTO citizen_view (pseudonym, version, data, expires, erased)
           VALUES ('p', 1, '{}', '{}', true)"""
    )  # an erased row is kept without an end, as before
