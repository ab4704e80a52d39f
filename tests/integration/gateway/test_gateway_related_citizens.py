"""Relationships decide whom an agency holds, on the real broker and database (issue probe 1).

polres-cirebon's worker reads the profile topic as in production. A citizen who was only
bulk-fed from Dukcapil is never stored and their prefill is the same not-found denial as for a
NIK nobody knows; a citizen who asked for an SKCK is stored with SKCK's fields only; when that
relationship ends, by a new version or by time passing, the row is purged and the agency topic
says so.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from ikd_gateway.entrypoints.api import create_app
from ikd_shared.events import to_cloudevent
from ikd_shared.events.envelope import from_kafka
from ikd_shared.events.topics import ACCESS, PROFILE, agency_topic
from tests.support.gateway import (
    gateway_env,
    only_a_floor,
    prefill_by_nik,
    read_topic,
    running_gateway,
    view_row,
)
from tests.support.gateway_factories import (
    POLICY,
    Tokens,
    bulk_fed,
    profile,
    relationship,
    relationships_changed,
    verified,
)
from tests.support.polling import eventually

AGENCY = "polres-cirebon"
SKCK = POLICY.agency(AGENCY).service("skck")
assert SKCK is not None


async def processed(db: asyncpg.Connection, event_id: str) -> bool:
    found = await db.fetchval("SELECT 1 FROM processed_events WHERE event_id = $1", event_id)
    return found is not None


async def agency_records(bootstrap: str, prefix: str, pseudonym: str) -> list[Any]:
    """What polres-cirebon's topic said of the citizen, in order (None: a tombstone)."""
    records = await read_topic(
        bootstrap, agency_topic(AGENCY).full_name(prefix), 100, wait_seconds=3
    )
    return [r.value and json.loads(r.value) for r in records if r.key == pseudonym.encode()]


async def test_only_a_citizen_related_to_the_agency_is_held_and_only_while_related(
    gateway_db: Any,
    db: asyncpg.Connection,
    producer: Any,
    topic_prefix: str,
    kafka_bootstrap: str,
    tokens: Tokens,
    tmp_path: Path,
    worker_factory: Any,
) -> None:
    now = dt.datetime.now(dt.UTC)
    profiles = PROFILE.full_name(topic_prefix)
    only_fed, asked, stranger = profile(71), profile(72), profile(73)
    fed = bulk_fed(only_fed, 1, now)
    skck = relationship(AGENCY, "skck", starts_at=now)
    dinsos = relationship("dinsos-cirebon", "social-assistance", starts_at=now)
    came = verified(asked, 1, now, relationships=[skck, dinsos])
    fed_event, came_event = (to_cloudevent(e, source="/test", key=e.pseudonym) for e in (fed, came))
    await producer.send(profiles, fed_event)
    await producer.send(profiles, came_event)

    worker = worker_factory(gateway_env(AGENCY, gateway_db, topic_prefix, tokens, tmp_path))
    worker.start()
    try:
        await eventually(lambda: processed(db, fed_event.id), timeout=60)
        row = await eventually(lambda: view_row(db, came.pseudonym), timeout=20)
    except AssertionError:
        raise AssertionError(worker.log()) from None

    # The bulk-fed citizen: no row, nothing published or audited of them.
    assert await view_row(db, fed.pseudonym) is None
    assert await db.fetchval("SELECT count(*) FROM citizen_view") == 1
    assert (
        await db.fetchval(
            "SELECT count(*) FROM agency_disclosed WHERE pseudonym = $1", fed.pseudonym
        )
        == 0
    )
    # The citizen who asked for an SKCK: SKCK's fields, not the driving licence's, and only
    # polres's own relationship on record (not the one with dinsos).
    assert set(row["data"]) == set(SKCK.fields)
    assert "blood_type" not in row["data"]
    assert [r["relationship_id"] for r in row["relationships"]] == [str(skck.relationship_id)]

    headers = {"authorization": f"Bearer {tokens.for_agency(AGENCY)}"}
    async with (
        running_gateway(AGENCY, gateway_db, topic_prefix, tokens, tmp_path) as gateway,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(gateway.settings, runtime=gateway)),
            base_url="http://gw",
        ) as client,
    ):
        denied = await prefill_by_nik(client, "skck", only_fed.nik, headers)
        unknown = await prefill_by_nik(client, "skck", stranger.nik, headers)
        served = await prefill_by_nik(client, "skck", asked.nik, headers)
    assert (denied.status_code, denied.json()["code"]) == (404, "citizen_not_found")
    assert (denied.status_code, denied.json()) == (unknown.status_code, unknown.json())
    assert served.status_code == 200
    assert set(served.json()["fields"]) == set(SKCK.fields)

    # The relationship ends (a new version without it): the row is purged, the topic says so.
    ended = relationships_changed(asked, 2, [dinsos], at=now, ended=[skck])
    sent = time.perf_counter()
    await producer.send(profiles, to_cloudevent(ended, source="/test", key=ended.pseudonym))

    async def purged() -> bool:
        return await only_a_floor(db, came.pseudonym)

    try:
        await eventually(purged, timeout=20)
    except AssertionError:
        raise AssertionError(worker.log()) from None
    print(f"\nrelationship ended: row purged {1000 * (time.perf_counter() - sent):.0f} ms later")

    async def tombstoned() -> list[Any] | None:
        said = await agency_records(kafka_bootstrap, topic_prefix, came.pseudonym)
        return said if said and said[-1] is None else None

    said = await eventually(tombstoned, timeout=20)
    assert set(said[0]["services"][0]["fields"]) == set(SKCK.fields)
    assert await agency_records(kafka_bootstrap, topic_prefix, fed.pseudonym) == []

    # The audit trail: the bulk-fed citizen appears once, as the refused prefill.
    async def audited() -> list[dict[str, Any]] | None:
        records = await read_topic(
            kafka_bootstrap, ACCESS.full_name(topic_prefix), 100, wait_seconds=2
        )
        events = [json.loads(r.value) for r in records]
        mine = [e for e in events if e["pseudonym"] == fed.pseudonym]
        return mine or None

    about_fed = await eventually(audited, timeout=30)
    assert [(e["channel"], e["outcome"], e["reason"]) for e in about_fed] == [
        ("prefill", "denied", "citizen_not_found")
    ]


async def test_a_relationship_running_out_purges_the_row_in_the_retention_loop(
    gateway_db: Any,
    db: asyncpg.Connection,
    producer: Any,
    topic_prefix: str,
    kafka_bootstrap: str,
    tokens: Tokens,
    tmp_path: Path,
    worker_factory: Any,
) -> None:
    env = gateway_env(
        AGENCY,
        gateway_db,
        topic_prefix,
        tokens,
        tmp_path,
        IKD_GATEWAY_RETENTION_CHECK_SECONDS="0.2",
    )
    worker = worker_factory(env)
    worker.start()

    async def send(event: Any) -> None:
        await producer.send(
            PROFILE.full_name(topic_prefix),
            to_cloudevent(event, source="/test", key=event.pseudonym),
        )

    # The short relationship starts once the worker consumes, so a slow start-up on a loaded
    # machine cannot let it run out before the worker ever sees it.
    started = dt.datetime.now(dt.UTC)
    lasting = relationship(AGENCY, "skck", starts_at=started)
    warm_up = verified(profile(75), 1, started, relationships=[lasting])
    await send(warm_up)
    try:
        await eventually(lambda: view_row(db, warm_up.pseudonym), timeout=120)
    except AssertionError:
        raise AssertionError(worker.log()) from None
    now = dt.datetime.now(dt.UTC)
    short = relationship(AGENCY, "skck", starts_at=now, expires_at=now + dt.timedelta(seconds=5))
    event = verified(profile(74), 1, now, relationships=[short])
    await send(event)
    try:
        row = await eventually(lambda: view_row(db, event.pseudonym), timeout=60)
        assert set(row["data"]) == set(SKCK.fields)

        async def purged() -> bool:
            return await only_a_floor(db, event.pseudonym)

        await eventually(purged, timeout=60)
    except AssertionError:
        raise AssertionError(worker.log()) from None
    late = dt.datetime.now(dt.UTC) - short.expires_at
    print(f"\nrelationship expired: row purged within {late.total_seconds() * 1000:.0f} ms")
    records = await read_topic(
        kafka_bootstrap, agency_topic(AGENCY).full_name(topic_prefix), 3, wait_seconds=20
    )
    mine = [r for r in records if r.key == event.pseudonym.encode()]
    assert [from_kafka(r.key, r.value, r.headers).is_tombstone for r in mine] == [False, True]
