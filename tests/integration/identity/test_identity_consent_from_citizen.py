"""Consent comes from the citizen (issue 11, probe 2), on the real database.

Once the MPP officer's token alone granted bank-bjb a consent for any NIK, any fields, until
2099, revoked a consent the citizen had given, named the officer from a body field, and told
whether a NIK exists. Now every grant and revocation needs the citizen's fresh credential for
the consent purpose, the desk acts only for the agencies its client serves, the policy bounds
the terms, and nothing is stored or published for a refused request.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import pytest

from ikd_shared.credentials import Purpose
from ikd_shared.events.consent_v1 import ConsentRevoked
from tests.support.identity import COUNTER_SERVICES, counts, person, register_client

OFFICER = "mpp-officer"


def _terms(**changes: Any) -> dict[str, Any]:
    terms = {
        "agency": "bank-bjb",
        "service": "bjb-savings-account",
        "fields": ["full_name", "date_of_birth", "address.street", "occupation"],
        "purpose_code": "account-opening",
        "purpose_text": "Pembukaan rekening tabungan",
        "expires_at": (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).isoformat(),
    }
    terms.update(changes)
    return terms


@pytest.fixture
async def officer(api: Any, identity_db: Any) -> dict[str, str]:
    """The MPP officer's desk: a client with identity:consent serving bank-bjb only."""
    await register_client(
        identity_db.owner_dsn,
        OFFICER,
        {"identity:consent"},
        agency="dpmptsp-cirebon",
        serves={"bank-bjb", "bank-bri-cirebon"},
    )
    return api.auth_as(OFFICER, "identity:consent", agency="dpmptsp-cirebon")


async def _verify(api: Any, issuer: Any, profile: Any) -> None:
    response = await api.client.post(
        "/v1/verifications",
        json={"credential": issuer.mint(profile), "services": COUNTER_SERVICES},
        headers=api.auth("identity:verify"),
    )
    assert response.status_code == 200, response.text


async def _grant(api: Any, issuer: Any, officer: dict[str, str], profile: Any) -> str:
    response = await api.client.post(
        "/v1/consents", json={**_terms(), "credential": issuer.consent(profile)}, headers=officer
    )
    assert response.status_code == 201, response.text
    return str(response.json()["consent"]["consent_id"])


async def _consent_rows(db: Any) -> list[tuple[str, str]]:
    rows = await db.fetch("SELECT consent_id::text, status FROM consents ORDER BY consent_id")
    return [(r["consent_id"], r["status"]) for r in rows]


async def test_officer_grant_without_the_citizens_credential_is_refused(
    api: Any, issuer: Any, db: Any, officer: dict[str, str]
) -> None:
    citizen = person(60)
    await _verify(api, issuer, citizen)
    before = await counts(db)
    # The old request: a NIK and an officer named in the body, no sign of the citizen.
    old = {**_terms(expires_at="2099-12-31T00:00:00+00:00"), "nik": citizen.nik}
    cases = [
        ({**old, "officer_id": "petugas-07"}, 422, "invalid_request"),
        (_terms(), 422, "invalid_request"),
        # A credential the citizen showed at a counter is not a consent.
        ({**_terms(), "credential": issuer.mint(citizen)}, 403, "wrong_audience"),
        ({**_terms(), "credential": issuer.mint(citizen, Purpose.TRAIL)}, 403, "wrong_audience"),
        # An old consent credential does not show that the citizen is at the desk now.
        (
            {
                **_terms(),
                "credential": issuer.consent(
                    citizen,
                    issued_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=9),
                    lifetime=dt.timedelta(hours=1),
                ),
            },
            403,
            "credential_not_fresh",
        ),
    ]
    for body, status, code in cases:
        response = await api.client.post("/v1/consents", json=body, headers=officer)
        assert (response.status_code, response.json()["code"]) == (status, code), body
    assert await counts(db) == before  # no consent, no outbox row (nothing published), no jti


async def test_an_officer_acts_only_for_agencies_its_client_serves(
    api: Any, issuer: Any, db: Any, identity_db: Any, officer: dict[str, str]
) -> None:
    citizen = person(61)
    await _verify(api, issuer, citizen)
    await register_client(
        identity_db.owner_dsn, "desk-pegadaian", {"identity:consent"}, serves={"pegadaian-cirebon"}
    )
    await register_client(
        identity_db.owner_dsn,
        "desk-off",
        {"identity:consent"},
        serves={"bank-bjb"},
        disabled=True,
    )
    before = await counts(db)
    credential = issuer.consent(citizen)
    desks = [
        api.auth_as("desk-pegadaian", "identity:consent"),  # serves another agency
        api.auth_as("desk-off", "identity:consent"),  # disabled: serves nothing any more
        api.auth_as("not-registered", "identity:consent"),
    ]
    for desk in desks:
        response = await api.client.post(
            "/v1/consents", json={**_terms(), "credential": credential}, headers=desk
        )
        assert (response.status_code, response.json()["code"]) == (403, "agency_not_served")
    assert await counts(db) == before
    # The credential was not spent by the refusals: the serving desk can still use it.
    response = await api.client.post(
        "/v1/consents", json={**_terms(), "credential": credential}, headers=officer
    )
    assert response.status_code == 201, response.text

    # Revoking at a desk that does not serve the consent's agency is refused as well.
    consent_id = response.json()["consent"]["consent_id"]
    response = await api.client.post(
        f"/v1/consents/{consent_id}/revoke",
        json={"credential": issuer.consent(citizen)},
        headers=desks[0],
    )
    assert (response.status_code, response.json()["code"]) == (403, "agency_not_served")
    assert await _consent_rows(db) == [(consent_id, "active")]


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"fields": ["full_name", "religion"]}, "fields_not_in_policy"),
        ({"fields": ["full_name", "family_card_number"]}, "fields_not_in_policy"),
        ({"expires_at": "2099-12-31T00:00:00+00:00"}, "expiry_beyond_limit"),
        ({"agency": "bank-bjb", "service": "bjb-platinum"}, "unknown_service"),
        (
            {"agency": "polres-cirebon", "service": "skck", "purpose_code": "police-clearance"},
            "consent_not_applicable",
        ),
        ({"purpose_code": "marketing"}, "purpose_mismatch"),
    ],
)
async def test_the_policy_bounds_the_terms(
    api: Any, issuer: Any, db: Any, identity_db: Any, changes: dict[str, Any], code: str
) -> None:
    citizen = person(62)
    await register_client(
        identity_db.owner_dsn,
        OFFICER,
        {"identity:consent"},
        serves={"bank-bjb", "polres-cirebon"},
    )
    officer = api.auth_as(OFFICER, "identity:consent")
    before = await counts(db)
    credential = issuer.consent(citizen)
    for path, headers in (("/v1/consents", officer), ("/v1/citizen/consents", {})):
        response = await api.client.post(
            path, json={**_terms(**changes), "credential": credential}, headers=headers
        )
        assert (response.status_code, response.json()["code"]) == (400, code), response.text
    response = await api.client.post(
        "/v1/consents",
        json={**_terms(legal_basis="contract"), "credential": credential},
        headers=officer,
    )
    assert response.status_code == 422
    assert await counts(db) == before


async def test_a_token_alone_never_revokes_a_citizens_consent(
    api: Any, issuer: Any, db: Any, officer: dict[str, str]
) -> None:
    citizen = person(63)
    await _verify(api, issuer, citizen)
    consent_id = await _grant(api, issuer, officer, citizen)
    before = await counts(db)
    attempts = [
        ({}, officer, 422, "invalid_request"),
        ({"officer_id": "petugas-07"}, officer, 422, "invalid_request"),
        # The citizen's counter credential is not a consent credential.
        ({"credential": issuer.mint(citizen)}, officer, 403, "wrong_audience"),
        # An agency's backend or gateway token may not touch consents at all.
        (
            {"credential": issuer.consent(citizen)},
            api.auth_as("backend-bank-bjb", "gateway:prefill", agency="bank-bjb"),
            403,
            "insufficient_scope",
        ),
        (
            {"credential": issuer.consent(citizen)},
            api.auth_as("gateway-bank-bjb", "identity:register", agency="bank-bjb"),
            403,
            "insufficient_scope",
        ),
        ({"credential": issuer.consent(citizen)}, {}, 401, "missing_token"),
    ]
    for body, headers, status, code in attempts:
        response = await api.client.post(
            f"/v1/consents/{consent_id}/revoke", json=body, headers=headers
        )
        assert (response.status_code, response.json()["code"]) == (status, code), body
    assert await counts(db) == before
    assert await _consent_rows(db) == [(consent_id, "active")]


async def test_the_citizen_revokes_their_consent_themself(
    api: Any, issuer: Any, db: Any, officer: dict[str, str]
) -> None:
    citizen = person(64)
    await _verify(api, issuer, citizen)
    consent_id = await _grant(api, issuer, officer, citizen)
    response = await api.client.post(
        f"/v1/citizen/consents/{consent_id}/revoke", json={"credential": issuer.consent(citizen)}
    )
    assert response.status_code == 200, response.text
    assert response.json()["consent"]["status"] == "revoked"
    assert await _consent_rows(db) == [(consent_id, "revoked")]
    row = await db.fetchrow("SELECT payload FROM outbox ORDER BY position DESC LIMIT 1")
    revoked = ConsentRevoked.model_validate_json(row["payload"])
    assert (str(revoked.consent.consent_id), revoked.active_consents) == (consent_id, [])
    assert await db.fetchval("SELECT revoked_by FROM consents") == "citizen"


def _answer(response: Any) -> tuple[int, str, str]:
    body = response.json()
    return response.status_code, body["code"], body["detail"]


async def test_answers_do_not_tell_whether_a_nik_is_on_record(
    api: Any, issuer: Any, db: Any, identity_db: Any, officer: dict[str, str]
) -> None:
    known, unknown = person(65), person(66)
    await _verify(api, issuer, known)
    other = person(67)
    others_consent = await _grant(api, issuer, officer, other)
    await register_client(
        identity_db.owner_dsn, "desk-pegadaian", {"identity:consent"}, serves={"pegadaian-cirebon"}
    )
    elsewhere = api.auth_as("desk-pegadaian", "identity:consent")
    answers: dict[str, list[tuple[int, str, str]]] = {}
    for name, profile in (("known", known), ("unknown", unknown)):
        seen = answers.setdefault(name, [])
        # The old request that carried a NIK is refused alike.
        response = await api.client.post(
            "/v1/consents", json={**_terms(), "nik": profile.nik}, headers=officer
        )
        seen.append((response.status_code, response.json()["code"], ""))
        for headers in (elsewhere, officer):
            response = await api.client.post(
                "/v1/consents",
                json={**_terms(fields=["religion"]), "credential": issuer.consent(profile)},
                headers=headers,
            )
            seen.append(_answer(response))
        # Another citizen's consent id is answered like a consent id that does not exist.
        for consent_id in (others_consent, str(uuid.uuid4())):
            response = await api.client.post(
                f"/v1/citizen/consents/{consent_id}/revoke",
                json={"credential": issuer.consent(profile)},
            )
            seen.append(_answer(response))
        body = {**_terms(), "credential": issuer.consent(profile)}
        response = await api.client.post("/v1/consents", json=body, headers=officer)
        seen.append((response.status_code, response.json()["consent"]["status"], ""))
    assert answers["known"] == answers["unknown"]
    assert answers["known"][-3][:2] == (404, "consent_not_found")
    assert answers["known"][-3] == answers["known"][-2]
    assert answers["known"][-1] == (201, "active", "")
    # Only the three granted consents are stored, none touched by the refusals.
    assert [status for _, status in await _consent_rows(db)] == ["active"] * 3


async def test_a_consent_credential_is_accepted_once_and_for_consents_only(
    api: Any, issuer: Any, db: Any, officer: dict[str, str]
) -> None:
    citizen = person(68)
    credential = issuer.consent(citizen)
    response = await api.client.post(
        "/v1/consents", json={**_terms(), "credential": credential}, headers=officer
    )
    assert response.status_code == 201, response.text
    consent_id = response.json()["consent"]["consent_id"]
    before = await counts(db)
    refusals = [
        ("/v1/consents", {**_terms(), "credential": credential}, officer, 409),
        ("/v1/citizen/consents", {**_terms(), "credential": credential}, {}, 409),
        (f"/v1/citizen/consents/{consent_id}/revoke", {"credential": credential}, {}, 409),
        (f"/v1/consents/{consent_id}/revoke", {"credential": credential}, officer, 409),
    ]
    for path, body, headers, status in refusals:
        response = await api.client.post(path, json=body, headers=headers)
        assert (response.status_code, response.json()["code"]) == (
            status,
            "credential_replayed",
        ), path
    assert await counts(db) == before
    # Nor does it verify the citizen at a counter.
    response = await api.client.post(
        "/v1/verifications",
        json={"credential": credential, "services": COUNTER_SERVICES},
        headers=api.auth("identity:verify"),
    )
    assert (response.status_code, response.json()["code"]) == (403, "wrong_audience")
    # A verification credential is refused for a consent even after its own use.
    counter = issuer.mint(citizen)
    response = await api.client.post(
        "/v1/verifications",
        json={"credential": counter, "services": COUNTER_SERVICES},
        headers=api.auth("identity:verify"),
    )
    assert response.status_code == 200
    before = await counts(db)
    response = await api.client.post(
        "/v1/citizen/consents", json={**_terms(), "credential": counter}
    )
    assert (response.status_code, response.json()["code"]) == (403, "wrong_audience")
    assert await counts(db) == before
