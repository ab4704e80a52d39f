"""The faust worker against the real broker and database: view, poison records, consents."""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path
from typing import Any

import asyncpg

from ikd_gateway.entrypoints.api import create_app
from ikd_shared.events import to_cloudevent
from ikd_shared.events.profile_v1 import ProfileUpdated
from ikd_shared.events.topics import ACCESS, CONSENT, GATEWAY_DEAD_LETTER, PROFILE
from tests.support.gateway import gateway_env, read_topic, running_gateway
from tests.support.gateway_factories import (
    POLICY,
    Tokens,
    consent,
    consent_event,
    profile,
    verified,
)
from tests.support.polling import eventually

NOW = dt.datetime.now(dt.UTC)


async def view_row(db: asyncpg.Connection, pseudonym: str) -> Any:
    row = await db.fetchrow(
        "SELECT version, data, erased FROM citizen_view WHERE pseudonym = $1", pseudonym
    )
    if row is None:
        return None
    return {"version": row["version"], "data": json.loads(row["data"]), "erased": row["erased"]}


async def test_poison_records_go_to_the_dead_letter_topic_and_the_stream_goes_on(
    gateway_db: Any,
    db: asyncpg.Connection,
    producer: Any,
    topic_prefix: str,
    kafka_bootstrap: str,
    tokens: Tokens,
    tmp_path: Path,
    worker_factory: Any,
) -> None:
    profiles = PROFILE.full_name(topic_prefix)
    one, two = profile(1), profile(2)
    v1 = verified(one, 1, NOW)
    first = to_cloudevent(v1, source="/test", key=v1.pseudonym)
    v1_id = first.id
    await producer.send(profiles, first)
    # 1 undecodable: no CloudEvents headers at all
    await producer.send_raw(profiles, v1.pseudonym.encode(), b"\xff\xfe not json", [])
    # 2 unknown event type
    await producer.send_raw(
        profiles,
        v1.pseudonym.encode(),
        b"{}",
        [
            ("ce_specversion", b"1.0"),
            ("ce_id", b"x-1"),
            ("ce_source", b"/test"),
            ("ce_type", b"id.go.mpp.profile.teleported.v1"),
        ],
    )
    # 3 known type, wrong schema
    await producer.send_raw(
        profiles,
        v1.pseudonym.encode(),
        b'{"pseudonym": "nope"}',
        [
            ("ce_specversion", b"1.0"),
            ("ce_id", b"x-2"),
            ("ce_source", b"/test"),
            ("ce_type", b"id.go.mpp.profile.verified.v1"),
        ],
    )
    # 4 the key is a NIK, not a pseudonym
    raw_key = to_cloudevent(v1, source="/test", key=one.nik)
    await producer.send(profiles, raw_key)
    v2 = verified(two, 1, NOW)
    second = to_cloudevent(v2, source="/test", key=v2.pseudonym)
    v2_id = second.id
    await producer.send(profiles, second)
    updated = ProfileUpdated(
        pseudonym=v1.pseudonym,
        version=2,
        profile=profile(1, street="Jl. Baru No. 9"),
        verified_at=NOW,
        updated_at=NOW,
        changed_fields=["address.street"],
    )
    update = to_cloudevent(updated, source="/test", key=v1.pseudonym)
    updated_id = update.id
    await producer.send(profiles, update)
    stale = verified(one, 1, NOW)  # a different event id with an old version
    await producer.send(profiles, to_cloudevent(stale, source="/test", key=v1.pseudonym))

    worker = worker_factory(
        gateway_env("polres-cirebon", gateway_db, topic_prefix, tokens, tmp_path)
    )
    worker.start()
    started = time.monotonic()

    async def settled() -> bool:
        a, b = await view_row(db, v1.pseudonym), await view_row(db, v2.pseudonym)
        return bool(a and b and a["version"] == 2)

    try:
        await eventually(settled, timeout=60)
    except AssertionError:
        raise AssertionError(worker.log()) from None
    print(f"\nworker applied the stream {time.monotonic() - started:.2f}s after start")
    row = await view_row(db, v1.pseudonym)
    assert row["data"]["address.street"] == "Jl. Baru No. 9"
    assert set(row["data"]) <= POLICY.agency("polres-cirebon").policy_fields
    dead = await read_topic(kafka_bootstrap, GATEWAY_DEAD_LETTER.full_name(topic_prefix), 4)
    reasons = [dict(r.headers)["dlq_reason"].decode() for r in dead]
    assert len(dead) == 4, reasons
    for expected in (
        "envelope: missing header ce_",
        "UnknownEventType",
        "InvalidEventData",
        "record key is not a citizen pseudonym",
    ):
        assert sum(expected in reason for reason in reasons) == 1, (expected, reasons)
    assert all(dict(r.headers)["dlq_source_topic"].decode() == profiles for r in dead)

    async def relayed() -> bool:
        return await db.fetchval("SELECT count(*) FROM access_outbox") == 0

    await eventually(relayed, timeout=20)
    access = await read_topic(kafka_bootstrap, ACCESS.full_name(topic_prefix), 6, wait_seconds=3)
    audited = [json.loads(r.value) for r in access]
    assert {v["channel"] for v in audited} == {"view", "agency_topic"}
    views = [v for v in audited if v["channel"] == "view"]
    # Each view write is audited by the event that wrote it; v1 and its update may have been
    # applied in one batch (one write, of the update), the stale copy never.
    written = {(v["pseudonym"], v["correlation_id"]) for v in views}
    assert len(written) == len(views)
    assert (v2.pseudonym, v2_id) in written
    assert (v1.pseudonym, updated_id) in written
    assert written <= {(v1.pseudonym, v1_id), (v1.pseudonym, updated_id), (v2.pseudonym, v2_id)}


async def test_consent_revocation_purges_the_view_and_prefill(
    gateway_db: Any,
    db: asyncpg.Connection,
    producer: Any,
    topic_prefix: str,
    tokens: Tokens,
    tmp_path: Path,
    worker_factory: Any,
) -> None:
    import httpx

    agency, service = "bank-bjb", "bjb-savings-account"
    policy_service = POLICY.agency(agency).service(service)
    assert policy_service is not None
    citizen = profile(31)
    event = verified(citizen, 1, NOW)
    pseudonym = event.pseudonym
    await producer.send(
        PROFILE.full_name(topic_prefix), to_cloudevent(event, source="/test", key=pseudonym)
    )
    worker = worker_factory(gateway_env(agency, gateway_db, topic_prefix, tokens, tmp_path))
    worker.start()
    try:
        row = await eventually(lambda: view_row(db, pseudonym), timeout=60)
    except AssertionError:
        raise AssertionError(worker.log()) from None
    assert row["data"] == {}, "no consent yet: a consent-only agency holds nothing"

    granted = consent(
        pseudonym,
        agency,
        service,
        sorted(policy_service.fields),
        expires_at=NOW + dt.timedelta(days=90),
        starts_at=NOW - dt.timedelta(1),
    )
    consents_topic = CONSENT.full_name(topic_prefix)
    await producer.send(
        consents_topic,
        to_cloudevent(consent_event(pseudonym, 1, [granted]), source="/test", key=pseudonym),
    )

    async def holds_fields() -> Any:
        found = await view_row(db, pseudonym)
        return found if found and set(found["data"]) == set(policy_service.fields) else None

    await eventually(holds_fields, timeout=20)  # re-read from the topic by offset

    headers = {"authorization": f"Bearer {tokens.for_agency(agency)}"}
    async with (
        running_gateway(agency, gateway_db, topic_prefix, tokens, tmp_path) as gateway,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(gateway.settings, runtime=gateway)),
            base_url="http://gw",
        ) as client,
    ):
        response = await client.post(
            f"/v1/prefill/{service}/lookup", json={"nik": citizen.nik}, headers=headers
        )
        assert response.status_code == 200, response.text
        assert set(response.json()["fields"]) == set(policy_service.fields)

        sent = time.perf_counter()
        await producer.send(
            consents_topic,
            to_cloudevent(
                consent_event(pseudonym, 2, [], revoked=granted), source="/test", key=pseudonym
            ),
        )

        async def purged() -> bool:
            found = await view_row(db, pseudonym)
            return found is not None and found["data"] == {}

        await eventually(purged, timeout=20)
        in_view = time.perf_counter() - sent
        response = await client.post(
            f"/v1/prefill/{service}/lookup", json={"nik": citizen.nik}, headers=headers
        )
        in_prefill = time.perf_counter() - sent
        assert (response.status_code, response.json()["code"]) == (403, "consent_required")
    print(
        f"\nconsent revocation: purged from the view in {in_view * 1000:.0f} ms, "
        f"refused by prefill {in_prefill * 1000:.0f} ms after the revocation was published"
    )
