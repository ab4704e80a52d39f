"""The demo, end to end, with every service a separate process on the real broker and server.

A citizen verified at one counter reaches three agencies minimised to their policies; every
access is in the audit log with a proof that verifies; a revoked consent is purged.
"""

from __future__ import annotations

import json
import os
import time

import asyncpg
from aiokafka import TopicPartition

from ikd_gateway.entrypoints.agency_consumer import AgencyMirror, consume
from ikd_ops.demo import CONSENT_SERVICE, PUBLIC_TASK_SERVICES, Walkthrough
from ikd_ops.platform import Platform
from ikd_shared.events.envelope import from_kafka
from ikd_shared.events.profile_v1 import PROFILE_FIELDS
from ikd_shared.events.topics import ACCESS, agency_topic
from ikd_shared.policy import DEFAULT_POLICY, load_policy
from tests.e2e.platform.conftest import AGENCIES, CLIENT_SECRET, Stack
from tests.support.kafka import kafka_connection

POLICY = load_policy(DEFAULT_POLICY)


async def fetch_column(dsn: str, query: str, *args: object) -> list[object]:
    connection = await asyncpg.connect(dsn)
    try:
        return [row[0] for row in await connection.fetch(query, *args)]
    finally:
        await connection.close()


async def published_access_ids(stack: Stack, pseudonym: str) -> set[str]:
    """Ids of the access events for the citizen on the audit topic, read to its end."""
    topic = ACCESS.full_name(stack.topic_prefix)
    kafka = kafka_connection(os.environ["IKD_KAFKA_BOOTSTRAP_SERVERS"])
    consumer = kafka.consumer(topic, group=None, auto_offset_reset="earliest")
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(ACCESS.partitions)]
        ends = await consumer.end_offsets(partitions)
        ids: set[str] = set()
        while [tp for tp in partitions if await consumer.position(tp) < ends[tp]]:
            batches = await consumer.getmany(timeout_ms=1000)
            for records in batches.values():
                for record in records:
                    event = from_kafka(record.key, record.value, record.headers)
                    if event.key == pseudonym:
                        ids.add(event.id)
        return ids
    finally:
        await consumer.stop()


async def agency_topic_mirror(
    stack: Stack, agency: str, pseudonym: str, *, purged: bool, seconds: float = 30.0
) -> tuple[AgencyMirror, list[str]]:
    """The example agency consumer on the agency's topic until the citizen is in its mirror
    (or, with `purged`, purged from it again). It reads as the test's observer: reading as
    the agency's own principal is onboarding's test (tests/integration/gateway)."""
    kafka = kafka_connection(os.environ["IKD_KAFKA_BOOTSTRAP_SERVERS"])
    mirror, lines = AgencyMirror(), list[str]()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await consume(
            kafka,
            agency_topic(agency).full_name(stack.topic_prefix),
            group=f"{stack.topic_prefix}agency-{agency}",
            mirror=mirror,
            idle_exit=1.0,
            out=lines.append,
        )
        was_purged = any(line.startswith(f"purged   {pseudonym[:16]}") for line in lines)
        if was_purged if purged else pseudonym in mirror.citizens:
            break
    return mirror, lines


async def stored_fields(stack: Stack, agency: str, pseudonym: str) -> list[set[str]]:
    """The field names in the agency's view rows for the citizen (one set per row)."""
    rows = await fetch_column(
        stack.gateway_dbs[agency].superuser_dsn,
        "SELECT data::text FROM citizen_view WHERE pseudonym = $1",
        pseudonym,
    )
    return [set(json.loads(str(data))) for data in rows]


async def test_demo_walkthrough_minimises_audits_and_purges(stack: Stack) -> None:
    lines: list[str] = []
    with Platform(stack.endpoints, CLIENT_SECRET) as platform:
        walk = Walkthrough(platform, stack.keys, lines.append, index=11)
        result = walk.run()
        print("\n".join(lines))
        # Minimised: each prefill answer holds exactly its service's policy fields.
        for agency, service in PUBLIC_TASK_SERVICES:
            answer = walk.prefill(agency, service).json()
            service_policy = POLICY.agency(agency).service(service)
            assert service_policy is not None
            assert set(answer["fields"]) == set(service_policy.fields)
            assert answer["fields"]["nik"] == walk.profile.nik
    pseudonym = result["pseudonym"]

    # Each view keeps only what its agency's policy grants, never the whole profile.
    for agency in AGENCIES:
        allowed = POLICY.agency(agency).policy_fields
        for fields in await stored_fields(stack, agency, pseudonym):
            assert fields <= allowed, f"{agency} stores {fields - allowed}"
            assert fields != set(PROFILE_FIELDS)
    assert await stored_fields(stack, "polres-cirebon", pseudonym), "polres has no view row"

    # The revoked consent is purged: every bank-bjb service needs consent, so nothing is left.
    assert all(not fields for fields in await stored_fields(stack, CONSENT_SERVICE[0], pseudonym))
    print(f"consent revocation purged after {result['revocation_purge_seconds'] * 1000:.0f} ms")

    # Every access the gateways published for this citizen is in the audit log ...
    published = await published_access_ids(stack, pseudonym)
    logged = {
        str(access_id)
        for access_id in await fetch_column(
            stack.audit_db.superuser_dsn,
            "SELECT access_id FROM log_entry WHERE pseudonym = $1",
            pseudonym,
        )
    }
    assert published, "the gateways published no access event"
    assert published <= logged, f"{len(published - logged)} accesses missing from the audit log"
    for agency in AGENCIES:  # ... and none is still waiting in a gateway's outbox
        assert not await fetch_column(
            stack.gateway_dbs[agency].superuser_dsn, "SELECT access_id FROM access_outbox"
        )

    # ... and the citizen's own trail proves each entry against a signed tree head.
    trail = result["trail"]
    assert result["proofs_verified"] == len(trail["accesses"]) > 0
    assert {access["entry"]["agency"] for access in trail["accesses"]} == set(AGENCIES)

    # Each agency topic carries exactly what the agency's policy grants for each service; the
    # revoked consent's data was purged from bank-bjb's.
    for agency, demo_service in PUBLIC_TASK_SERVICES:
        mirror, _ = await agency_topic_mirror(stack, agency, pseudonym, purged=False)
        granted = mirror.citizens.get(pseudonym)
        assert granted, f"{agency}'s backend received nothing for the citizen"
        for service, values in granted.items():
            service_policy = POLICY.agency(agency).service(service)
            assert service_policy is not None
            assert set(values) == set(service_policy.fields), f"{agency}/{service}"
        assert granted[demo_service]["nik"] == walk.profile.nik
    bank, _ = CONSENT_SERVICE
    mirror, _ = await agency_topic_mirror(stack, bank, pseudonym, purged=True)
    assert pseudonym not in mirror.citizens
