"""Crash test with the real broker: SIGKILL the worker mid-stream, restart it, and compare the
view with a projection recomputed from the topic: nothing lost, nothing applied twice, no stale
overwrite."""

from __future__ import annotations

import datetime as dt
import json
import random
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg

from ikd_gateway.domain.model import project_profile
from ikd_shared.events import decode, to_cloudevent
from ikd_shared.events.envelope import CloudEvent, from_kafka
from ikd_shared.events.profile_v1 import (
    EVENTS,
    TOMBSTONE_TYPE,
    CitizenDied,
    ProfileUpdated,
    ProfileVerified,
)
from ikd_shared.events.topics import ACCESS, PROFILE
from tests.support.gateway import gateway_env, read_topic
from tests.support.gateway_factories import (
    POLICY,
    Tokens,
    profile,
    pseudonym_of,
    related_everywhere,
)
from tests.support.polling import eventually

AGENCY = "polres-cirebon"
CITIZENS = 120
VERSIONS = 12
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
RELATED = related_everywhere(NOW)


def stream(rng: random.Random) -> list[CloudEvent]:
    """Per citizen, versions in order, with re-sent duplicates and late stale versions; some
    citizens die (event + tombstone)."""
    events: list[list[CloudEvent]] = []
    for serial in range(1, CITIZENS + 1):
        pseudonym = pseudonym_of(profile(serial))
        mine: list[CloudEvent] = []
        for version in range(1, VERSIONS + 1):
            changed = profile(serial, street=f"Jl. Versi {version}", occupation=f"Kerja {version}")
            event: ProfileVerified | ProfileUpdated
            if version == 1:
                event = ProfileVerified(
                    pseudonym=pseudonym,
                    version=1,
                    profile=changed,
                    verified_at=NOW,
                    changed_fields=["full_name"],
                    relationships=RELATED,
                )
            else:
                event = ProfileUpdated(
                    pseudonym=pseudonym,
                    version=version,
                    profile=changed,
                    verified_at=NOW,
                    updated_at=NOW,
                    changed_fields=["address.street", "occupation"],
                    relationships=RELATED,
                )
            cloud = to_cloudevent(event, source="/test", key=pseudonym)
            mine.append(cloud)
            if rng.random() < 0.2:
                mine.append(cloud)  # the same event again (a producer retry)
            if version > 2 and rng.random() < 0.2:  # an old version arriving late
                stale = ProfileUpdated(
                    pseudonym=pseudonym,
                    version=version - 2,
                    profile=profile(serial, street="Jl. Basi"),
                    verified_at=NOW,
                    updated_at=NOW,
                    changed_fields=["address.street"],
                    relationships=RELATED,
                )
                mine.append(to_cloudevent(stale, source="/test", key=pseudonym))
        if serial % 10 == 0:
            died = CitizenDied(
                pseudonym=pseudonym, version=VERSIONS + 1, date_of_death=NOW.date(), recorded_at=NOW
            )
            mine.append(to_cloudevent(died, source="/test", key=pseudonym))
            mine.append(
                CloudEvent(
                    type=TOMBSTONE_TYPE,
                    source="/test",
                    data=None,
                    key=pseudonym,
                    id=str(uuid.uuid4()),
                )
            )
        events.append(mine)
    # interleave citizens, keeping each citizen's order
    out: list[CloudEvent] = []
    while any(events):
        queue = rng.choice([e for e in events if e])
        out.append(queue.pop(0))
    return out


def project(records: list[Any]) -> dict[str, dict[str, Any]]:
    """The view recomputed from the topic with the domain's pure functions."""
    agency = POLICY.agency(AGENCY)
    rows: dict[str, dict[str, Any]] = {}
    for record in records:
        event = from_kafka(record.key, record.value, record.headers)
        assert event.key is not None
        current = rows.get(event.key)
        if event.is_tombstone:
            if current:
                rows[event.key] = {"version": current["version"], "data": {}, "erased": True}
            continue
        payload = decode(event, EVENTS)
        if current and current["version"] >= payload.version:
            continue
        if isinstance(payload, ProfileVerified | ProfileUpdated):
            view = project_profile(
                agency=agency,
                pseudonym=event.key,
                version=payload.version,
                profile=payload.profile,
                verified_at=payload.verified_at,
                relationships=payload.relationships,
                consents=(),
                now=dt.datetime.now(dt.UTC),
            )
            assert view is not None, "every citizen of this stream asked for polres's services"
            rows[event.key] = {"version": view.version, "data": dict(view.data), "erased": False}
        else:
            rows[event.key] = {"version": payload.version, "data": {}, "erased": True}
    return rows


async def test_killed_worker_resumes_without_loss_duplicates_or_stale_overwrites(
    gateway_db: Any,
    db: asyncpg.Connection,
    producer: Any,
    topic_prefix: str,
    kafka_bootstrap: str,
    tokens: Tokens,
    tmp_path: Path,
    worker_factory: Any,
) -> None:
    topic = PROFILE.full_name(topic_prefix)
    events = stream(random.Random(20250601))
    for event in events:
        await producer.send(topic, event)
    distinct = len({e.id for e in events})
    print(f"\nproduced {len(events)} records ({distinct} distinct events) for {CITIZENS} citizens")

    env = gateway_env(AGENCY, gateway_db, topic_prefix, tokens, tmp_path)
    first = worker_factory(env)
    first.start()

    async def processed() -> int:
        return int(await db.fetchval("SELECT count(*) FROM processed_events"))

    async def mid_stream() -> bool:
        return await processed() >= distinct // 3

    try:
        await eventually(mid_stream, timeout=90)
    except AssertionError:
        raise AssertionError(first.log()) from None
    first.kill()
    at_kill = await processed()
    print(f"killed the worker (SIGKILL) after {at_kill}/{distinct} events were applied")
    assert at_kill < distinct, "the crash must happen mid-stream"

    second = worker_factory(env)
    started = time.monotonic()
    second.start()

    async def all_done() -> bool:
        return await processed() == distinct

    try:
        await eventually(all_done, timeout=120)
    except AssertionError:
        raise AssertionError(second.log()) from None
    print(f"restarted worker finished in {time.monotonic() - started:.1f}s")

    records = await read_topic(kafka_bootstrap, topic, len(events))
    assert len(records) == len(events)
    expected = project(sorted(records, key=lambda r: (r.partition, r.offset)))
    rows = await db.fetch("SELECT pseudonym, version, data, erased FROM citizen_view")
    actual = {
        r["pseudonym"]: {
            "version": r["version"],
            "data": json.loads(r["data"]),
            "erased": r["erased"],
        }
        for r in rows
    }
    assert actual.keys() == expected.keys()
    for pseudonym, row in expected.items():
        assert actual[pseudonym] == row, pseudonym
    assert sum(row["erased"] for row in actual.values()) == CITIZENS // 10
    assert all(row["data"].get("address.street") != "Jl. Basi" for row in actual.values())

    # nothing applied twice: one VIEW access event per applied event id
    async def relayed() -> list[Any] | None:
        found = await read_topic(
            kafka_bootstrap, ACCESS.full_name(topic_prefix), 10**9, wait_seconds=2
        )
        pending = await db.fetchval("SELECT count(*) FROM access_outbox")
        return found if pending == 0 else None

    access = await eventually(relayed, timeout=30)
    per_event: Counter[str] = Counter()
    ids: dict[str, set[str]] = {}
    for record in access:
        body = json.loads(record.value)
        if body["channel"] != "view":  # agency-topic publications are audited too
            continue
        ids.setdefault(body["correlation_id"], set()).add(body["access_id"])
        per_event[body["correlation_id"]] += 1
    applied = len(ids)
    assert all(len(access_ids) == 1 for access_ids in ids.values()), "an event applied twice"
    expected_applied = len({e.id for e in events if e.type != TOMBSTONE_TYPE}) - sum(
        1 for e in events if e.type == "id.go.mpp.profile.died.v1"
    )
    assert applied <= expected_applied
    print(
        f"{applied} view writes audited, each exactly once "
        f"({sum(per_event.values()) - applied} re-sent by the relay after the crash)"
    )
