"""Dukcapil's feed, the bulk feed, consents and OAuth2 client credentials."""

from __future__ import annotations

import datetime as dt
import uuid

import asyncpg
import jwt

from ikd_dev.synthetic import generate_citizens
from ikd_identity.adapters.postgres import PgClients
from ikd_identity.adapters.secrets import Argon2Hasher
from ikd_identity.domain.clients import Client
from ikd_shared.auth import TokenVerifier
from ikd_shared.events.consent_v1 import ConsentGranted, ConsentRevoked
from ikd_shared.events.profile_v1 import (
    TOMBSTONE_TYPE,
    CitizenDied,
    CredentialRevoked,
    ProfileUpdated,
)
from tests.support.identity import COUNTER_SERVICES, counts, person, register_client

NOW = dt.datetime.now(dt.UTC)


def _ago(**delta: float) -> dt.datetime:
    """Relative to the request, not to NOW: a long session must not expire the credential."""
    return dt.datetime.now(dt.UTC) - dt.timedelta(**delta)


async def _verify(api, issuer, profile, **mint) -> dict:
    response = await api.client.post(
        "/v1/verifications",
        json={"credential": issuer.mint(profile, **mint), "services": COUNTER_SERVICES},
        headers=api.auth("identity:verify"),
    )
    assert response.status_code == 200, response.text
    return response.json()


async def _outbox(db) -> list[asyncpg.Record]:
    return await db.fetch("SELECT ce_type, key, payload FROM outbox ORDER BY position")


async def test_feed_field_update_death_and_revocation(api, issuer, db) -> None:
    feed = api.auth("identity:feed")
    alive, dying, revoked = person(30), person(31), person(32)
    for profile in (alive, dying, revoked):
        await _verify(api, issuer, profile)

    update = {
        "kind": "profile_update",
        "nik": alive.nik,
        "changes": {"marital_status": "cerai_hidup", "address": {"rt": "009"}},
    }
    response = await api.client.post("/v1/feed/updates", json=update, headers=feed)
    assert response.status_code == 200, response.text
    assert response.json()["version"] == 2
    assert response.json()["changed_fields"] == ["address.rt", "marital_status"]
    again = await api.client.post("/v1/feed/updates", json=update, headers=feed)
    assert again.json()["changed"] is False

    death = {"kind": "death", "nik": dying.nik, "date_of_death": str(NOW.date())}
    assert (await api.client.post("/v1/feed/updates", json=death, headers=feed)).status_code == 200
    revocation = {"kind": "credential_revocation", "nik": revoked.nik, "reason": "kartu hilang"}
    response = await api.client.post("/v1/feed/updates", json=revocation, headers=feed)
    assert response.json()["status"] == "revoked"

    rows = await _outbox(db)
    types = [row["ce_type"] for row in rows]
    assert types[3:] == [
        ProfileUpdated.event_type,
        CitizenDied.event_type,
        TOMBSTONE_TYPE,
        CredentialRevoked.event_type,
        TOMBSTONE_TYPE,
    ]
    assert rows[5]["payload"] is None
    assert rows[7]["payload"] is None
    assert rows[4]["key"] == rows[5]["key"]
    updated = ProfileUpdated.model_validate_json(rows[3]["payload"])
    assert updated.profile.address.rt == "009"

    # A deceased citizen is not verified again; a revoked credential is refused, a newer one
    # (issued after the revocation) reactivates the profile.
    dead = await api.client.post(
        "/v1/verifications",
        json={"credential": issuer.mint(dying), "services": COUNTER_SERVICES},
        headers=api.auth("identity:verify"),
    )
    assert (dead.status_code, dead.json()["code"]) == (409, "citizen_inactive")
    old = await api.client.post(
        "/v1/verifications",
        json={
            "credential": issuer.mint(revoked, issued_at=_ago(minutes=5)),
            "services": COUNTER_SERVICES,
        },
        headers=api.auth("identity:verify"),
    )
    assert (old.status_code, old.json()["code"]) == (403, "credential_revoked")
    body = await _verify(
        api, issuer, revoked, issued_at=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    )
    assert (body["status"], body["version"]) == ("active", 3)

    # Feed errors: unknown citizen, an update contradicting the NIK, an impossible death date.
    unknown = {"kind": "death", "nik": person(99).nik, "date_of_death": str(NOW.date())}
    response = await api.client.post("/v1/feed/updates", json=unknown, headers=feed)
    assert (response.status_code, response.json()["code"]) == (404, "citizen_not_found")
    too_early = {"kind": "death", "nik": alive.nik, "date_of_death": "1900-01-01"}
    response = await api.client.post("/v1/feed/updates", json=too_early, headers=feed)
    assert (response.status_code, response.json()["code"]) == (400, "invalid_update")
    response = await api.client.post(
        "/v1/feed/updates", json=update, headers=api.auth("identity:verify")
    )
    assert response.status_code == 403


async def test_bulk_feed_writes_profiles_and_outbox_in_batches(api, db) -> None:
    profiles = [p.model_dump(mode="json") for p in generate_citizens(50, seed=33)]
    feed = api.auth("identity:feed")
    response = await api.client.post("/v1/feed/profiles", json={"profiles": profiles}, headers=feed)
    assert response.status_code == 200, response.text
    assert response.json()["created"] == 50
    assert (await counts(db))["profiles"] == 50
    assert (await counts(db))["outbox"] == 50
    assert await db.fetchval("SELECT count(DISTINCT xmin::text) FROM outbox") == 1

    profiles[0]["occupation"] = "Guru"
    response = await api.client.post("/v1/feed/profiles", json={"profiles": profiles}, headers=feed)
    assert response.json() == {"created": 0, "updated": 1, "unchanged": 49, "skipped_inactive": 0}
    assert (await counts(db))["outbox"] == 51

    too_many = {"profiles": profiles * 21}
    response = await api.client.post("/v1/feed/profiles", json=too_many, headers=feed)
    assert response.status_code in (413, 422)
    assert (await counts(db))["outbox"] == 51


def _terms(**changes) -> dict:
    terms = {
        "agency": "bank-bjb",
        "service": "bjb-savings-account",
        "fields": ["full_name", "address.street", "date_of_birth"],
        "purpose_code": "account-opening",
        "purpose_text": "Pembukaan rekening tabungan",
        "expires_at": (NOW + dt.timedelta(days=30)).isoformat(),
    }
    terms.update(changes)
    return terms


async def _officer(api, identity_db) -> dict[str, str]:
    await register_client(
        identity_db.owner_dsn, "mpp-officer", {"identity:consent"}, serves={"bank-bjb"}
    )
    return api.auth_as("mpp-officer", "identity:consent", agency="dpmptsp-cirebon")


async def test_consents_by_officer_and_by_citizen(api, issuer, db, identity_db) -> None:
    citizen = person(40)
    await _verify(api, issuer, citizen)
    officer = await _officer(api, identity_db)

    response = await api.client.post(
        "/v1/consents", json={**_terms(), "credential": issuer.consent(citizen)}, headers=officer
    )
    assert response.status_code == 201, response.text
    by_officer = response.json()["consent"]
    assert by_officer["granted_by"] == "officer"
    assert by_officer["officer_id"] == "mpp-officer"  # the token's client, not a body field

    response = await api.client.post(
        "/v1/citizen/consents",
        json={
            **_terms(service="bjb-kur-loan", purpose_code="micro-loan-assessment"),
            "credential": issuer.consent(citizen),
        },
    )
    assert response.status_code == 201, response.text
    by_citizen = response.json()["consent"]
    assert by_citizen["granted_by"] == "citizen"

    response = await api.client.post(
        f"/v1/citizen/consents/{by_officer['consent_id']}/revoke",
        json={"credential": issuer.consent(citizen)},
    )
    assert response.status_code == 200, response.text
    assert response.json()["consent"]["status"] == "revoked"

    consent_types = {ConsentGranted.event_type, ConsentRevoked.event_type}
    rows = [r for r in await _outbox(db) if r["ce_type"] in consent_types]
    events = [
        ConsentGranted.model_validate_json(rows[0]["payload"]),
        ConsentGranted.model_validate_json(rows[1]["payload"]),
        ConsentRevoked.model_validate_json(rows[2]["payload"]),
    ]
    assert [e.consents_version for e in events] == [1, 2, 3]
    assert [len(e.active_consents) for e in events] == [1, 2, 1]
    assert str(events[2].active_consents[0].consent_id) == by_citizen["consent_id"]
    assert {r["key"] for r in rows} == {events[0].pseudonym}
    recorded = await db.fetch("SELECT consent_id::text, recorded_by, revoked_by FROM consents")
    who = {r["consent_id"]: (r["recorded_by"], r["revoked_by"]) for r in recorded}
    # The officer's grant is recorded with the officer's client, its revocation by the citizen.
    assert who == {
        by_officer["consent_id"]: ("mpp-officer", "citizen"),
        by_citizen["consent_id"]: ("citizen", None),
    }


async def test_consent_rejections_write_nothing(api, issuer, db, identity_db) -> None:
    citizen, stranger = person(41), person(42)
    await _verify(api, issuer, citizen)
    await _verify(api, issuer, stranger)
    before = await counts(db)
    officer = await _officer(api, identity_db)
    cases = [
        (
            api.client.post(
                "/v1/consents",
                json={**_terms(fields=["salary"]), "credential": issuer.consent(citizen)},
                headers=officer,
            ),
            400,
            "fields_not_in_policy",
        ),
        (
            api.client.post(
                "/v1/consents",
                json={
                    **_terms(expires_at=(NOW - dt.timedelta(days=1)).isoformat()),
                    "credential": issuer.consent(citizen),
                },
                headers=officer,
            ),
            400,
            "invalid_consent",
        ),
        (
            api.client.post(
                "/v1/consents",
                json={**_terms(), "credential": issuer.consent(citizen)},
                headers=api.auth("identity:verify"),
            ),
            403,
            "insufficient_scope",
        ),
        (
            api.client.post(
                "/v1/citizen/consents",
                json={
                    **_terms(),
                    # Stale but unexpired, however slowly the run reaches this request.
                    "credential": issuer.consent(
                        citizen, issued_at=_ago(minutes=9), lifetime=dt.timedelta(hours=1)
                    ),
                },
            ),
            403,
            "credential_not_fresh",
        ),
        (
            api.client.post(
                f"/v1/citizen/consents/{uuid.uuid4()}/revoke",
                json={"credential": issuer.consent(citizen)},
            ),
            404,
            "consent_not_found",
        ),
        (
            api.client.post("/v1/citizen/consents", json={**_terms(), "credential": "x.y.z"}),
            400,
            "malformed_credential",
        ),
    ]
    for call, status, code in cases:
        response = await call
        assert (response.status_code, response.json()["code"]) == (status, code), response.text
    assert await counts(db) == before

    # A citizen cannot revoke someone else's consent.
    granted = await api.client.post(
        "/v1/consents", json={**_terms(), "credential": issuer.consent(stranger)}, headers=officer
    )
    consent_id = granted.json()["consent"]["consent_id"]
    response = await api.client.post(
        f"/v1/citizen/consents/{consent_id}/revoke", json={"credential": issuer.consent(citizen)}
    )
    assert (response.status_code, response.json()["code"]) == (404, "consent_not_found")
    response = await api.client.post(
        f"/v1/consents/{consent_id}/revoke",
        json={"credential": issuer.consent(stranger)},
        headers=officer,
    )
    assert response.status_code == 200
    response = await api.client.post(
        f"/v1/consents/{consent_id}/revoke",
        json={"credential": issuer.consent(stranger)},
        headers=officer,
    )
    assert (response.status_code, response.json()["code"]) == (409, "consent_not_active")


async def test_oauth_client_credentials(api, identity_db) -> None:
    hasher = Argon2Hasher()
    connection = await asyncpg.connect(identity_db.owner_dsn)
    try:
        await PgClients(connection).put(
            Client(
                client_id="counter-bpjs",
                secret_hash=hasher.hash("s3cret-value"),
                scopes=frozenset({"identity:verify", "gateway:prefill"}),
                agency="bpjs-kesehatan",
            )
        )
    finally:
        await connection.close()

    form = {
        "grant_type": "client_credentials",
        "client_id": "counter-bpjs",
        "client_secret": "s3cret-value",
    }
    response = await api.client.post("/oauth/token", data=form)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["scope"] == "gateway:prefill identity:verify"
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert sorted(claims["aud"]) == ["ikd-gateway", "ikd-identity"]
    assert claims["agency"] == "bpjs-kesehatan"

    jwks = (await api.client.get("/.well-known/jwks.json")).json()
    principal = TokenVerifier(jwks, issuer="ikd-identity", audience="ikd-gateway").verify(
        body["access_token"]
    )
    assert principal.agency == "bpjs-kesehatan"

    narrowed = await api.client.post("/oauth/token", data={**form, "scope": "identity:verify"})
    assert narrowed.json()["scope"] == "identity:verify"
    basic = await api.client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=("counter-bpjs", "s3cret-value"),
    )
    assert basic.status_code == 200

    failures = [
        ({**form, "client_secret": "wrong"}, 401, "invalid_client"),
        ({**form, "client_id": "nobody"}, 401, "invalid_client"),
        ({**form, "scope": "audit:read"}, 400, "invalid_scope"),
        ({**form, "grant_type": "password"}, 400, "unsupported_grant_type"),
        ({"grant_type": "client_credentials"}, 401, "invalid_client"),
    ]
    for data, status, code in failures:
        response = await api.client.post("/oauth/token", data=data)
        assert (response.status_code, response.json()["code"]) == (status, code)
        assert response.json()["error"] == code

    token = body["access_token"]
    response = await api.client.post(
        "/v1/feed/updates", json={}, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 422 or response.json()["code"] == "insufficient_scope"


async def test_app_role_has_least_privilege(identity_db) -> None:
    connection = await asyncpg.connect(identity_db.app_dsn)
    try:
        for statement in (
            "DELETE FROM outbox",
            "DELETE FROM profiles",
            "UPDATE outbox SET payload = NULL",
            "INSERT INTO clients (client_id, secret_hash, scopes) VALUES ('x1', 'h', '{}')",
            "DELETE FROM relationships",
            "UPDATE relationships SET kind = 'registration'",
            "UPDATE relationships SET agency = 'bank-bjb', service = 'bjb-kur-loan'",
            "UPDATE relationships SET recorded_by = 'someone-else'",
        ):
            try:
                await connection.execute(statement)
            except asyncpg.InsufficientPrivilegeError:
                continue
            raise AssertionError(f"the app role may run: {statement}")
        assert await connection.fetchval("SELECT count(*) FROM clients") == 0
    finally:
        await connection.close()
