"""Relationships on the real database and broker: what a verification, a registration, a consent
and a death publish, read back from Kafka; and what a refusal leaves (nothing)."""

from __future__ import annotations

import asyncio
import datetime as dt
import uuid
from typing import Any

from ikd_identity.bootstrap import build_relay
from ikd_shared.events import decode
from ikd_shared.events.envelope import from_kafka
from ikd_shared.events.profile_v1 import (
    EVENTS,
    TOMBSTONE_TYPE,
    CitizenDied,
    ProfileUpdated,
    ProfileVerified,
    RelationshipKind,
    RelationshipsChanged,
)
from ikd_shared.events.topics import PROFILE
from ikd_shared.pseudonym import pseudonymize
from tests.support.identity import COUNTER_SERVICES, Record, counts, person, read_topic

FRONT_DESK = "mpp-kabupaten-cirebon"
THREE_AGENCIES = ["skck", "social-assistance", "bjb-savings-account"]
REFERENCE = "Permensos 3/2021 Pasal 12"


async def _published(api: Any, bootstrap: str, prefix: str, expect: int) -> list[Record]:
    """Run the relay until `expect` records are on the profile topic; return them in order."""
    stop = asyncio.Event()
    task = asyncio.create_task(build_relay(api.settings).run(stop))
    try:
        records = await read_topic(bootstrap, PROFILE.full_name(prefix), expect=expect)
    finally:
        stop.set()
        await task
    assert len(records) == expect, "more records were published than expected"
    return sorted(records, key=lambda r: (r.partition, r.offset))


def _event(record: Record) -> Any:
    return decode(from_kafka(record.key, record.value, list(record.headers.items())), EVENTS)


def _pseudonym(api: Any, nik: str) -> str:
    return pseudonymize(nik, api.settings.pseudonym_key.get_secret_value().encode())


async def _verify(api, issuer, profile, *, agency=FRONT_DESK, services=THREE_AGENCIES):
    body: dict[str, Any] = {"credential": issuer.mint(profile)}
    if services is not None:
        body["services"] = services
    return await api.client.post(
        "/v1/verifications", json=body, headers=api.auth("identity:verify", agency=agency)
    )


def _registrar(api, agency: str = "dinsos-cirebon") -> dict[str, str]:
    return api.auth("identity:register", agency=agency)


async def test_front_desk_verification_for_three_agencies_publishes_one_record(
    api, issuer, db, topic_prefix, kafka_bootstrap
) -> None:
    # Refused first: an unknown service, or no services at the front desk or at a counter of
    # two services. Nothing is stored, and the credential is not used up.
    refused_profile = person(60)
    credential = issuer.mint(refused_profile)
    for agency, services, code in [
        (FRONT_DESK, ["skck", "no-such-service"], "unknown_service"),
        (FRONT_DESK, None, "services_required"),
        ("polres-cirebon", None, "services_required"),
    ]:
        body: dict[str, Any] = {"credential": credential}
        if services:
            body["services"] = services
        response = await api.client.post(
            "/v1/verifications", json=body, headers=api.auth("identity:verify", agency=agency)
        )
        assert (response.status_code, response.json()["code"]) == (400, code), response.text
    assert response.json()["services"] == ["skck", "sim-driving-licence"]
    assert set((await counts(db)).values()) == {0}

    profile = person(61)
    response = await _verify(api, issuer, profile)
    assert response.status_code == 200, response.text
    answered = response.json()["relationships"]
    assert sorted(r["service"] for r in answered) == sorted(THREE_AGENCIES)
    assert await db.fetchval("SELECT count(*) FROM relationships") == 3
    assert await db.fetchval("SELECT count(DISTINCT recorded_by) FROM relationships") == 1

    (record,) = await _published(api, kafka_bootstrap, topic_prefix, expect=1)
    event = _event(record)
    assert isinstance(event, ProfileVerified)
    assert event.pseudonym == _pseudonym(api, profile.nik)
    assert event.verified_by == FRONT_DESK
    assert {(r.agency, r.service, r.kind) for r in event.relationships} == {
        ("polres-cirebon", "skck", RelationshipKind.SERVICE_REQUEST),
        ("dinsos-cirebon", "social-assistance", RelationshipKind.SERVICE_REQUEST),
        ("bank-bjb", "bjb-savings-account", RelationshipKind.SERVICE_REQUEST),
    }
    for relationship in event.relationships:
        assert relationship.expires_at - relationship.starts_at == dt.timedelta(days=1825)
    assert [r.model_dump(mode="json") for r in event.relationships] == sorted(
        answered, key=lambda r: (r["agency"], r["service"])
    )


async def test_registration_allowed_refused_ended_and_ended_by_death(
    api, issuer, db, topic_prefix, kafka_bootstrap
) -> None:
    profile, stranger, dead = person(70), person(71), person(72)
    for someone in (profile, dead):
        response = await _verify(api, issuer, someone, services=["skck"])
        assert response.status_code == 200, response.text
    before = await counts(db)

    refusals = [
        ("dinsos-cirebon", profile.nik, "skck", 403, "service_not_of_agency"),
        ("dinsos-cirebon", profile.nik, "no-such-service", 403, "service_not_of_agency"),
        ("kemenag-cirebon", profile.nik, "marriage-registration", 403, "service_not_registrable"),
        ("polres-cirebon", profile.nik, "skck", 403, "service_not_registrable"),
        ("dinsos-cirebon", stranger.nik, "social-assistance", 404, "citizen_not_found"),
    ]
    for agency, nik, service, status, code in refusals:
        response = await api.client.post(
            "/v1/registrations",
            json={"nik": nik, "service": service, "legal_reference": REFERENCE},
            headers=_registrar(api, agency),
        )
        assert (response.status_code, response.json()["code"]) == (status, code), response.text
    for headers, status, code in [
        (api.auth("identity:verify", agency="dinsos-cirebon"), 403, "insufficient_scope"),
        (api.auth("identity:register", agency=None), 403, "agency_required"),
        ({}, 401, "missing_token"),
    ]:
        response = await api.client.post(
            "/v1/registrations",
            json={"nik": profile.nik, "service": "social-assistance", "legal_reference": "x"},
            headers=headers,
        )
        assert (response.status_code, response.json()["code"]) == (status, code), response.text
    assert await counts(db) == before

    response = await api.client.post(
        "/v1/registrations",
        json={"nik": profile.nik, "service": "social-assistance", "legal_reference": REFERENCE},
        headers=_registrar(api),
    )
    assert response.status_code == 201, response.text
    registered = response.json()["relationship"]
    assert (registered["kind"], registered["legal_basis"], registered["legal_reference"]) == (
        "registration",
        "public_task",
        REFERENCE,
    )
    assert (
        await db.fetchval(
            "SELECT recorded_by FROM relationships WHERE relationship_id = $1",
            uuid.UUID(registered["relationship_id"]),
        )
        == "test-client"
    )
    # Only the registering agency ends it; an unknown id looks the same.
    for agency, relationship_id in [
        ("kemenag-cirebon", registered["relationship_id"]),
        ("dinsos-cirebon", str(uuid.uuid4())),
    ]:
        response = await api.client.post(
            f"/v1/registrations/{relationship_id}/end", headers=_registrar(api, agency)
        )
        assert (response.status_code, response.json()["code"]) == (404, "registration_not_found")
    end = f"/v1/registrations/{registered['relationship_id']}/end"
    response = await api.client.post(end, headers=_registrar(api))
    assert response.status_code == 200, response.text
    assert response.json()["relationship"] == registered
    response = await api.client.post(end, headers=_registrar(api))
    assert (response.status_code, response.json()["code"]) == (409, "registration_not_active")

    # The deceased citizen's registration and request end with the tombstone, and a
    # registration after the death is refused like an unknown citizen.
    body = {"nik": dead.nik, "service": "hajj-registration", "legal_reference": REFERENCE}
    response = await api.client.post(
        "/v1/registrations", json=body, headers=_registrar(api, "kemenag-cirebon")
    )
    assert response.status_code == 201, response.text
    death = {"kind": "death", "nik": dead.nik, "date_of_death": str(dt.date.today())}
    response = await api.client.post(
        "/v1/feed/updates", json=death, headers=api.auth("identity:feed")
    )
    assert response.status_code == 200, response.text
    ended = await db.fetch(
        "SELECT ended_at, xmin::text AS tx FROM relationships WHERE pseudonym = $1",
        _pseudonym(api, dead.nik),
    )
    died_tx = await db.fetchval(
        "SELECT xmin::text FROM outbox WHERE ce_type = $1", CitizenDied.event_type
    )
    assert len(ended) == 2
    assert all(row["ended_at"] is not None and row["tx"] == died_tx for row in ended)
    response = await api.client.post(
        "/v1/registrations", json=body, headers=_registrar(api, "kemenag-cirebon")
    )
    assert (response.status_code, response.json()["code"]) == (404, "citizen_not_found")

    records = await _published(api, kafka_bootstrap, topic_prefix, expect=7)
    mine = [r for r in records if r.key == _pseudonym(api, profile.nik).encode()]
    verified, started, stopped = (_event(r) for r in mine)
    assert isinstance(verified, ProfileVerified)
    assert isinstance(started, RelationshipsChanged)
    assert isinstance(stopped, RelationshipsChanged)
    assert [str(r.relationship_id) for r in started.started] == [registered["relationship_id"]]
    assert sorted(r.service for r in started.relationships) == ["skck", "social-assistance"]
    assert [str(r.relationship_id) for r in stopped.ended] == [registered["relationship_id"]]
    assert [r.service for r in stopped.relationships] == ["skck"]
    assert [e.version for e in (verified, started, stopped)] == [1, 2, 3]
    assert started.profile == stopped.profile == profile
    others = [r for r in records if r.key == _pseudonym(api, dead.nik).encode()]
    assert [r.headers["ce_type"].decode() for r in others] == [
        ProfileVerified.event_type,
        RelationshipsChanged.event_type,
        CitizenDied.event_type,
        TOMBSTONE_TYPE,
    ]


async def test_consents_and_feed_updates_carry_the_relationships(api, issuer, db) -> None:
    profile = person(80)
    response = await _verify(api, issuer, profile, agency="disdukcapil-cirebon", services=None)
    assert (response.status_code, response.json()["code"]) == (400, "services_required")
    response = await _verify(
        api, issuer, profile, agency="disdukcapil-cirebon", services=COUNTER_SERVICES
    )
    assert response.status_code == 200, response.text
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
    response = await api.client.post(
        "/v1/citizen/consents",
        json={
            "agency": "bank-bjb",
            "service": "bjb-savings-account",
            "fields": ["full_name"],
            "purpose_code": "account-opening",
            "purpose_text": "Pembukaan rekening tabungan",
            "expires_at": expires.isoformat(),
            "credential": issuer.consent(profile),
        },
    )
    assert response.status_code == 201, response.text
    consent = response.json()["consent"]
    update = {"kind": "profile_update", "nik": profile.nik, "changes": {"occupation": "Guru"}}
    response = await api.client.post(
        "/v1/feed/updates", json=update, headers=api.auth("identity:feed")
    )
    assert response.status_code == 200, response.text
    bulk = profile.model_copy(update={"occupation": "Petani"}).model_dump(mode="json")
    response = await api.client.post(
        "/v1/feed/profiles",
        json={"profiles": [bulk, person(81).model_dump(mode="json")]},
        headers=api.auth("identity:feed"),
    )
    assert response.json() == {"created": 1, "updated": 1, "unchanged": 0, "skipped_inactive": 0}

    rows = await db.fetch(
        "SELECT ce_type, payload FROM outbox WHERE topic = $1 AND key = $2 ORDER BY position",
        PROFILE.name,
        _pseudonym(api, profile.nik),
    )
    events = [_model(row["ce_type"]).model_validate_json(row["payload"]) for row in rows]
    assert [type(e) for e in events] == [
        ProfileVerified,
        RelationshipsChanged,
        ProfileUpdated,
        ProfileUpdated,
    ]
    granted = events[1]
    (mirrored,) = granted.started
    assert str(mirrored.relationship_id) == consent["consent_id"]
    assert (mirrored.kind, mirrored.legal_basis.value) == (RelationshipKind.CONSENT, "consent")
    assert mirrored.expires_at == dt.datetime.fromisoformat(consent["expires_at"])
    for event in events[1:]:
        assert sorted(r.kind.value for r in event.relationships) == [
            "consent",
            "service_request",
        ]


def _model(ce_type: str) -> Any:
    return next(model for model in EVENTS if model.event_type == ce_type)
