"""The set-based PostgreSQL batch writes leave what applying the records one by one leaves."""

from __future__ import annotations

import random
import uuid
from typing import Any

import asyncpg

from ikd_gateway.adapters.postgres import PgUnitOfWork
from ikd_gateway.domain.model import SourcePosition
from ikd_gateway.service_layer.stream import (
    ConsentRecord,
    ProfileRecord,
    apply_consent_batch,
    apply_profiles,
)
from ikd_shared.db import create_pool
from ikd_shared.events.profile_v1 import CitizenDied, ProfileUpdated
from tests.support.gateway import MIGRATIONS
from tests.support.gateway_factories import (
    NOW,
    POLICY,
    consent,
    consent_event,
    context,
    profile,
    pseudonym_of,
    related_everywhere,
)

AGENCY = "bank-bjb"
CITIZENS = [pseudonym_of(profile(serial)) for serial in range(1, 9)]
RELATED = related_everywhere()


def profile_stream(rng: random.Random) -> list[ProfileRecord]:
    records: list[ProfileRecord] = []
    for offset in range(160):
        who = rng.randrange(len(CITIZENS))
        pseudonym, version = CITIZENS[who], rng.randint(1, 12)
        roll = rng.random()
        event: Any
        if roll < 0.1 and records:
            records.append(rng.choice(records))  # redelivered
            continue
        if roll < 0.15 and who >= 2:  # the first two citizens keep their consents
            event = None
        elif roll < 0.22 and who >= 2:
            event = CitizenDied(
                pseudonym=pseudonym, version=version, date_of_death=NOW.date(), recorded_at=NOW
            )
        else:  # some versions name none of the agency's services: the row goes
            event = ProfileUpdated(
                pseudonym=pseudonym,
                version=version,
                profile=profile(who + 1, street=f"Jl. Versi {version}"),
                verified_at=NOW,
                updated_at=NOW,
                changed_fields=["address.street"],
                relationships=[] if roll > 0.9 else RELATED,
            )
        records.append(
            ProfileRecord(str(uuid.uuid4()), pseudonym, event, SourcePosition(0, offset))
        )
    return records


def consent_stream() -> list[ConsentRecord]:
    service = POLICY.agency(AGENCY).services[0]
    records = []
    for pseudonym in CITIZENS[:4]:
        grant = consent(pseudonym, AGENCY, service.code, sorted(service.fields))
        for version, active in ((1, [grant]), (2, []), (3, [grant])):
            event = consent_event(pseudonym, version, active, revoked=None if active else grant)
            records.append(ConsentRecord(str(uuid.uuid4()), pseudonym, event))
    return records


async def state(dsn: str) -> dict[str, Any]:
    conn = await asyncpg.connect(dsn)
    try:
        return {
            "views": sorted(
                tuple(r)
                for r in await conn.fetch(
                    "SELECT pseudonym, version, data::text, expires::text, erased, "
                    "source_offset, relationships::text FROM citizen_view"
                )
            ),
            "consents": sorted(
                tuple(r)
                for r in await conn.fetch(
                    "SELECT pseudonym, consents_version, consents::text FROM citizen_consents"
                )
            ),
            "processed": await conn.fetchval("SELECT count(*) FROM processed_events"),
            "unaudited rows with data": await conn.fetchval(
                """SELECT count(*) FROM citizen_view v WHERE v.data <> '{}' AND NOT EXISTS (
                     SELECT FROM access_outbox o WHERE o.payload->>'pseudonym' = v.pseudonym
                       AND (o.payload->>'correlation_id') IS NOT NULL)"""
            ),
        }
    finally:
        await conn.close()


async def test_batched_writes_equal_record_by_record_writes(database_factory: Any) -> None:
    ctx = context(AGENCY)
    consents, profiles = consent_stream(), profile_stream(random.Random(7))
    results = {}
    for name, size in (("one by one", 1), ("batched", 37)):
        database = await database_factory("gateway", MIGRATIONS)
        pool = await create_pool(database.app_dsn, max_size=2)
        try:
            for start in range(0, len(consents), size):
                await apply_consent_batch(PgUnitOfWork(pool), ctx, consents[start : start + size])
            for start in range(0, len(profiles), size):
                await apply_profiles(PgUnitOfWork(pool), ctx, profiles[start : start + size])
        finally:
            await pool.close()
        results[name] = await state(database.app_dsn)
    one_by_one, batched = results["one by one"], results["batched"]
    print(
        f"\n{len(profiles)} profile records: {len(one_by_one['views'])} rows, "
        f"{sum(row[4] for row in one_by_one['views'])} erased"
    )
    assert batched == one_by_one
    assert batched["unaudited rows with data"] == 0
    assert any(row[2] != "{}" for row in batched["views"]), "some rows hold consented fields"
