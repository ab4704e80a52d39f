"""The prefill API through bootstrap-built apps over in-memory units of work."""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable

import httpx
import pytest

from ikd_gateway.domain.model import SourcePosition
from ikd_gateway.service_layer.context import GatewayContext
from ikd_gateway.service_layer.prefill import DeniedRequest, prefill
from ikd_gateway.service_layer.stream import (
    ConsentRecord,
    ProfileRecord,
    apply_consents,
    apply_profile,
)
from ikd_shared.events.access_v1 import Channel, Outcome
from tests.support.gateway_factories import (
    NOW,
    POLICY,
    Tokens,
    consent,
    consent_event,
    context,
    profile,
    pseudonym_of,
    record,
    verified,
)
from tests.support.gateway_fakes import FakeUnitOfWork, Store

MakeClient = Callable[..., Awaitable[httpx.AsyncClient]]


async def seeded(agency: str, serial: int, *, consent_for: str | None = None) -> Store:
    """A store holding one citizen as the agency's worker would have stored it."""
    store = Store()
    citizen = profile(serial)
    ctx = context(agency, clock=lambda: dt.datetime.now(dt.UTC))
    event = verified(citizen, verified_at=dt.datetime.now(dt.UTC))
    await apply_profile(
        FakeUnitOfWork(store),
        ctx,
        ProfileRecord("e1", event.pseudonym, event, SourcePosition(0, 1)),
    )
    if consent_for:
        service = POLICY.agency(agency).service(consent_for)
        assert service is not None
        granted = consent(
            event.pseudonym,
            agency,
            consent_for,
            sorted(service.fields),
            expires_at=dt.datetime.now(dt.UTC) + dt.timedelta(days=30),
        )
        await apply_consents(
            FakeUnitOfWork(store),
            ctx,
            ConsentRecord("c1", event.pseudonym, consent_event(event.pseudonym, 1, [granted])),
        )
        await apply_profile(
            FakeUnitOfWork(store),
            ctx,
            ProfileRecord("e1", event.pseudonym, event, SourcePosition(0, 1)),
            reapply=True,
        )
    store.outbox.clear()
    return store


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def lookup(
    client: httpx.AsyncClient, service: str, nik: str, headers: dict[str, str]
) -> httpx.Response:
    """Prefill by NIK: the NIK goes in the body, never in the URL."""
    return await client.post(f"/v1/prefill/{service}/lookup", json={"nik": nik}, headers=headers)


async def test_served_answer_is_exactly_the_service_fields_and_is_audited(
    make_client: MakeClient, tokens: Tokens
) -> None:
    store = await seeded("polres-cirebon", 7)
    client = await make_client("polres-cirebon", store)
    citizen = profile(7)
    response = await lookup(
        client, "skck", citizen.nik, bearer(tokens.for_agency("polres-cirebon"))
    )
    assert response.status_code == 200, response.text
    body = response.json()
    skck = POLICY.agency("polres-cirebon").service("skck")
    assert skck is not None
    assert set(body["fields"]) == set(skck.fields)
    assert body["fields"]["full_name"] == citizen.full_name
    assert body["version"] == 1
    assert body["verified_at"]
    assert body["legal_basis"] == "legal_obligation"
    [event] = store.outbox
    assert (event.channel, event.outcome, event.service) == (
        Channel.PREFILL,
        Outcome.SERVED,
        "skck",
    )
    assert event.fields == sorted(skck.fields)
    assert event.pseudonym == pseudonym_of(citizen)


async def test_bad_credentials_and_references_get_clear_errors_audited_once_authenticated(
    make_client: MakeClient, tokens: Tokens
) -> None:
    store = await seeded("dinsos-cirebon", 9)
    client = await make_client("dinsos-cirebon", store)
    citizen = profile(9)
    good = tokens.for_agency("dinsos-cirebon")
    other_issuer = Tokens().for_agency("dinsos-cirebon")
    expired = tokens.for_agency(
        "dinsos-cirebon", now=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)
    )
    cases = [
        ({}, {"pseudonym": pseudonym_of(citizen)}, 401, "unauthenticated"),
        (bearer("not-a-jwt"), {"pseudonym": pseudonym_of(citizen)}, 401, "malformed_token"),
        (bearer(expired), {"pseudonym": pseudonym_of(citizen)}, 401, "token_expired"),
        (bearer(other_issuer), {"pseudonym": pseudonym_of(citizen)}, 401, "invalid_token"),
        (
            bearer(tokens.for_agency("dinsos-cirebon", audience="ikd-audit")),
            {"pseudonym": pseudonym_of(citizen)},
            401,
            "invalid_token",
        ),
        (
            bearer(tokens.for_agency("dinsos-cirebon", {"gateway:webhooks"})),
            {"pseudonym": pseudonym_of(citizen)},
            403,
            "insufficient_scope",
        ),
        (
            bearer(tokens.for_agency(None)),
            {"pseudonym": pseudonym_of(citizen)},
            403,
            "wrong_agency",
        ),
        (bearer(good), {"nik": "12345"}, 400, "invalid_nik_length"),
        (bearer(good), {"nik": "3209014101900000"}, 400, "invalid_nik_serial_zero"),
        (bearer(good), {"pseudonym": "XYZ"}, 400, "invalid_pseudonym"),
        (bearer(good), {}, 400, "invalid_citizen_reference"),
        (
            bearer(good),
            {"nik": citizen.nik, "pseudonym": pseudonym_of(citizen)},
            400,
            "nik_not_allowed_in_url",
        ),
        (bearer(good), {"pseudonym": "0" * 64}, 404, "citizen_not_found"),
    ]
    for headers, params, status, code in cases:
        if set(params) == {"nik"}:
            response = await lookup(client, "social-assistance", params["nik"], headers)
        else:
            response = await client.get(
                "/v1/prefill/social-assistance", params=params, headers=headers
            )
        assert (response.status_code, response.json()["code"]) == (status, code), params
        assert response.headers["content-type"].startswith("application/problem+json")
    # Nobody is known to have asked without a valid token: those are not audited.
    audited = [code for _, _, status, code in cases if status != 401]
    assert len(store.outbox) == len(audited)
    assert all(e.outcome is Outcome.DENIED for e in store.outbox)
    assert [e.reason for e in store.outbox] == audited
    response = await lookup(client, "no-such-service", citizen.nik, bearer(good))
    assert (response.status_code, response.json()["code"]) == (403, "service_not_allowed")


async def test_nik_lookup_only_where_the_policy_grants_the_nik(
    make_client: MakeClient, tokens: Tokens
) -> None:
    # dinsos's disability-card grants the NIK; pln's electricity-connection too. A service
    # without `nik` in its fields must look up by pseudonym.
    store = await seeded("kejari-cirebon", 11)
    client = await make_client("kejari-cirebon", store)
    token = bearer(tokens.for_agency("kejari-cirebon"))
    assert (await lookup(client, "traffic-fine", profile(11).nik, token)).status_code == 200
    store = await seeded("cadisdik-jabar-x", 12)
    client = await make_client("cadisdik-jabar-x", store)
    token = bearer(tokens.for_agency("cadisdik-jabar-x"))
    response = await lookup(client, "diploma-legalisation", profile(12).nik, token)
    assert response.status_code == 200  # the service is granted `nik`
    assert "nik" in response.json()["fields"]


async def test_nik_lookup_refused_when_the_service_lacks_the_nik(
    make_client: MakeClient, tokens: Tokens
) -> None:
    from ikd_shared.legal import LegalBasis
    from ikd_shared.policy import AgencyKind, AgencyPolicy, Purpose, ServicePolicy

    agency = AgencyPolicy(
        code="test-agency",
        name="Test agency",
        kind=AgencyKind.PRIVATE_FIRM,
        services=(
            ServicePolicy(
                code="newsletter",
                name="Newsletter",
                fields=frozenset({"full_name"}),
                purpose=Purpose(code="newsletter", text="send the newsletter"),
                legal_basis=LegalBasis.LEGITIMATE_INTEREST,
                legal_reference="Test",
                retention_days=30,
            ),
        ),
    )
    ctx = GatewayContext(agency=agency, pseudonym_key=b"k", consumer="c")
    store = Store()
    with pytest.raises(DeniedRequest) as denied:
        await prefill(
            FakeUnitOfWork(store),
            ctx,
            service_code="newsletter",
            nik=profile(1).nik,
            pseudonym=None,
        )
    assert denied.value.error.code == "nik_lookup_not_allowed"
    assert denied.value.error.status_code == 403


async def test_consent_based_service_needs_the_consent(
    make_client: MakeClient, tokens: Tokens
) -> None:
    token = bearer(tokens.for_agency("bank-bjb"))
    citizen = profile(21)
    without = await make_client("bank-bjb", await seeded("bank-bjb", 21))
    response = await lookup(without, "bjb-savings-account", citizen.nik, token)
    assert (response.status_code, response.json()["code"]) == (403, "consent_required")
    store = await seeded("bank-bjb", 21, consent_for="bjb-savings-account")
    with_consent = await make_client("bank-bjb", store)
    response = await lookup(with_consent, "bjb-savings-account", citizen.nik, token)
    assert response.status_code == 200, response.text
    service = POLICY.agency("bank-bjb").service("bjb-savings-account")
    assert service is not None
    assert set(response.json()["fields"]) == set(service.fields)
    response = await lookup(with_consent, "bjb-kur-loan", citizen.nik, token)
    assert (response.status_code, response.json()["code"]) == (403, "consent_required")


async def test_every_agency_against_every_other_agency_is_denied_and_audited(
    make_client: MakeClient, tokens: Tokens
) -> None:
    """Matrix over all 37 agencies of the sample MPP: 403 or 404, each an access event."""
    agencies = [a.code for a in POLICY.agencies]
    stores = {code: await seeded(code, 100 + i) for i, code in enumerate(agencies)}
    # Hundreds of denials per client in a second: the throttle is not what this is about.
    clients = {
        code: await make_client(code, stores[code], denial_limit=100_000) for code in agencies
    }
    token = {code: bearer(tokens.for_agency(code)) for code in agencies}
    citizen = {code: pseudonym_of(profile(100 + i)) for i, code in enumerate(agencies)}
    expected_denials = {code: 0 for code in agencies}
    statuses: dict[tuple[int, str], int] = {}
    for caller in agencies:
        own = POLICY.agency(caller)
        for target in agencies:
            if target == caller:
                continue
            for service in POLICY.agency(target).services:
                # the caller's token at the other agency's gateway
                r = await clients[target].get(
                    f"/v1/prefill/{service.code}",
                    params={"pseudonym": citizen[target]},
                    headers=token[caller],
                )
                statuses[(r.status_code, r.json()["code"])] = (
                    statuses.get((r.status_code, r.json()["code"]), 0) + 1
                )
                assert (r.status_code, r.json()["code"]) == (403, "wrong_agency")
                expected_denials[target] += 1
                # the other agency's service at the caller's own gateway
                r = await clients[caller].get(
                    f"/v1/prefill/{service.code}",
                    params={"pseudonym": citizen[target]},
                    headers=token[caller],
                )
                assert (r.status_code, r.json()["code"]) == (403, "service_not_allowed")
                expected_denials[caller] += 1
            # the other agency's citizen through the caller's own services
            for service in own.services:
                r = await clients[caller].get(
                    f"/v1/prefill/{service.code}",
                    params={"pseudonym": citizen[target]},
                    headers=token[caller],
                )
                assert (r.status_code, r.json()["code"]) == (404, "citizen_not_found")
                expected_denials[caller] += 1
    for code in agencies:
        events = stores[code].outbox
        assert len(events) == expected_denials[code]
        assert all(e.outcome is Outcome.DENIED and e.agency == code for e in events)
        assert all(
            e.fields == []
            or set(e.fields) <= POLICY.agency(code).policy_fields
            or e.reason == "wrong_agency"
            for e in events
        )
    print(f"\nmatrix: {sum(expected_denials.values())} denials over {len(agencies)} agencies")


async def test_access_event_timestamps_use_the_clock() -> None:
    store = await seeded("polres-cirebon", 3)
    ctx = context("polres-cirebon")
    await prefill(
        FakeUnitOfWork(store),
        ctx,
        service_code="skck",
        nik=None,
        pseudonym=pseudonym_of(profile(3)),
    )
    assert store.outbox[-1].occurred_at == NOW
    assert record(verified(profile(3))).pseudonym == pseudonym_of(profile(3))
