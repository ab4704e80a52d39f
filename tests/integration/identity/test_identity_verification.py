"""Verification at a counter: one transaction for profile + outbox, and the event on Kafka."""

from __future__ import annotations

import asyncio

from cloudevents.v1.kafka import KafkaMessage, from_binary

from ikd_identity.bootstrap import build_relay
from ikd_shared.events import decode
from ikd_shared.events.envelope import from_kafka
from ikd_shared.events.profile_v1 import EVENTS, PROFILE_FIELDS, ProfileVerified
from ikd_shared.events.topics import PROFILE
from ikd_shared.pseudonym import pseudonymize
from tests.support.identity import COUNTER_SERVICES, counts, person, read_topic


async def test_verification_commits_profile_and_outbox_together_and_publishes(
    api, issuer, db, topic_prefix, kafka_bootstrap
) -> None:
    profile = person(0)
    response = await api.client.post(
        "/v1/verifications",
        json={"credential": issuer.mint(profile), "services": COUNTER_SERVICES},
        headers=api.auth("identity:verify", agency="disdukcapil-cirebon"),
    )
    assert response.status_code == 200, response.text
    body = response.json()
    pseudonym = pseudonymize(profile.nik, api.settings.pseudonym_key.get_secret_value().encode())
    assert body["pseudonym"] == pseudonym
    assert body["version"] == 1
    assert body["changed"] is True

    # The profile, the seen jti and the outbox row were written by one transaction (same xmin).
    profile_tx = await db.fetchval("SELECT xmin::text FROM profiles")
    outbox_tx = await db.fetchval("SELECT xmin::text FROM outbox")
    jti_tx = await db.fetchval("SELECT xmin::text FROM seen_credentials")
    relationship_tx = await db.fetchval("SELECT xmin::text FROM relationships")
    assert profile_tx == outbox_tx == jti_tx == relationship_tx
    row = await db.fetchrow("SELECT event_id, key, sent_at FROM outbox")
    assert row["key"] == pseudonym
    assert row["sent_at"] is None

    stop = asyncio.Event()
    relay = build_relay(api.settings)
    task = asyncio.create_task(relay.run(stop))
    try:
        (record,) = await read_topic(kafka_bootstrap, PROFILE.full_name(topic_prefix), expect=1)
    finally:
        stop.set()
        await task

    assert record.key == pseudonym.encode()
    for name in ("ce_specversion", "ce_id", "ce_source", "ce_type", "ce_time"):
        assert name in record.headers
    assert record.headers["ce_id"].decode() == str(row["event_id"])
    assert record.headers["ce_type"].decode() == ProfileVerified.event_type
    nik = profile.nik.encode()
    assert nik not in record.key
    assert all(nik not in value for value in record.headers.values())
    assert all(nik not in name.encode() for name in record.headers)

    # Any CloudEvents SDK reads it: the reference Python SDK's Kafka binary binding.
    sdk_event = from_binary(
        KafkaMessage(headers=record.headers, key=record.key, value=record.value)
    )
    assert sdk_event["id"] == str(row["event_id"])
    assert sdk_event["type"] == ProfileVerified.event_type
    event = decode(from_kafka(record.key, record.value, list(record.headers.items())), EVENTS)
    assert isinstance(event, ProfileVerified)
    assert event.profile == profile
    assert event.version == 1
    assert event.verified_by == "disdukcapil-cirebon"
    assert sorted(event.changed_fields) == sorted(PROFILE_FIELDS)
    (relationship,) = event.relationships
    assert (relationship.agency, relationship.service) == (
        "disdukcapil-cirebon",
        "family-card-update",
    )
    assert [relationship.model_dump(mode="json")] == body["relationships"]
    assert await db.fetchval("SELECT sent_at IS NOT NULL FROM outbox")


async def test_unchanged_profile_renews_the_service_request_in_a_new_version(
    api, issuer, db
) -> None:
    profile = person(1)
    headers = api.auth("identity:verify")
    body = {"credential": issuer.mint(profile), "services": COUNTER_SERVICES}
    first = await api.client.post("/v1/verifications", json=body, headers=headers)
    assert first.status_code == 200
    (started,) = first.json()["relationships"]

    body = {"credential": issuer.mint(profile), "services": COUNTER_SERVICES}
    again = await api.client.post("/v1/verifications", json=body, headers=headers)
    assert again.status_code == 200
    assert (again.json()["changed"], again.json()["changed_fields"]) == (False, [])
    assert again.json()["version"] == 2
    (renewed,) = again.json()["relationships"]
    assert renewed["relationship_id"] == started["relationship_id"]
    assert renewed["expires_at"] > started["expires_at"]
    assert await db.fetchval("SELECT count(*) FROM relationships") == 1
    payload = await db.fetchval("SELECT payload FROM outbox ORDER BY position DESC LIMIT 1")
    event = ProfileVerified.model_validate_json(payload)
    assert (event.version, event.changed_fields, event.profile) == (2, [], profile)
    assert [str(r.relationship_id) for r in event.relationships] == [started["relationship_id"]]


async def test_changed_profile_gets_next_version_and_event(api, issuer, db) -> None:
    profile = person(2)
    headers = api.auth("identity:verify")
    await api.client.post(
        "/v1/verifications",
        json={"credential": issuer.mint(profile), "services": COUNTER_SERVICES},
        headers=headers,
    )
    moved = profile.model_copy(
        update={"address": profile.address.model_copy(update={"street": "Jl. Baru No. 1"})}
    )
    response = await api.client.post(
        "/v1/verifications",
        json={"credential": issuer.mint(moved), "services": COUNTER_SERVICES},
        headers=headers,
    )
    assert response.status_code == 200
    assert response.json()["version"] == 2
    assert response.json()["changed_fields"] == ["address.street"]
    assert await db.fetchval("SELECT version FROM profiles") == 2
    assert (await counts(db))["outbox"] == 2
    payload = await db.fetchval("SELECT payload FROM outbox ORDER BY position DESC LIMIT 1")
    event = ProfileVerified.model_validate_json(payload)
    assert event.version == 2
    assert event.profile.address.street == "Jl. Baru No. 1"


async def test_es256_issuer_is_accepted(api, es256_issuer) -> None:
    response = await api.client.post(
        "/v1/verifications",
        json={"credential": es256_issuer.mint(person(3)), "services": COUNTER_SERVICES},
        headers=api.auth("identity:verify"),
    )
    assert response.status_code == 200, response.text
