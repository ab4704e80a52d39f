"""The gateway API over in-memory units of work: prefill of a citizen the agency has no
relationship with, and registrations through the gateway (identity replaced by a fake)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from ikd_gateway.bootstrap import bootstrap
from ikd_gateway.config import GatewaySettings
from ikd_gateway.domain import errors
from ikd_gateway.domain.model import SourcePosition
from ikd_gateway.entrypoints.api import create_app
from ikd_gateway.service_layer.stream import ProfileRecord, apply_profile
from ikd_shared.events.access_v1 import Channel, Outcome
from ikd_shared.events.profile_v1 import Relationship, RelationshipKind
from ikd_shared.policy import DEFAULT_POLICY
from tests.support.gateway import prefill_by_nik
from tests.support.gateway_factories import (
    PSEUDONYM_KEY,
    Tokens,
    context,
    profile,
    pseudonym_of,
    relationship,
    verified,
)
from tests.support.gateway_fakes import FakeDenialCounters, FakeRelay, FakeUnitOfWork, Store

REGISTRABLE = {"social-assistance"}
"""The one service that takes registrations in this test's copy of the policy."""


class FakeIdentity:
    """identity's registration API as the gateway sees it."""

    def __init__(self, agency: str) -> None:
        self.agency = agency
        self.known: set[str] = set()
        self.calls: list[tuple[str, Any]] = []
        self.ended: set[uuid.UUID] = set()
        self.down = False

    async def register(self, *, nik: str, service: str, legal_reference: str) -> Relationship:
        self.calls.append(("register", (nik, service, legal_reference)))
        if self.down:
            raise errors.IdentityUnavailable("identity cannot be reached: ConnectError")
        if nik not in self.known:
            raise errors.GatewayError("no such citizen", code="citizen_not_found", status_code=404)
        rel = relationship(self.agency, service, kind=RelationshipKind.REGISTRATION)
        return rel.model_copy(update={"legal_reference": legal_reference})

    async def end(self, relationship_id: uuid.UUID) -> Relationship | None:
        self.calls.append(("end", relationship_id))
        self.ended.add(relationship_id)
        return None


@pytest.fixture
def policy_file(tmp_path: Path) -> Path:
    document = yaml.safe_load(DEFAULT_POLICY.read_text())
    for agency in document["agencies"]:
        for service in agency["services"]:
            service["registration"] = service["code"] in REGISTRABLE
    path = tmp_path / "policy.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.fixture
async def api(tokens: Tokens, policy_file: Path) -> AsyncIterator[Any]:
    async with contextlib.AsyncExitStack() as stack:

        async def make(
            agency: str, store: Store, registrar: FakeIdentity | None = None, **configure: Any
        ) -> httpx.AsyncClient:
            settings = GatewaySettings(
                agency=agency,
                database_url="postgresql://unused@127.0.0.1:1/unused",
                token_jwks=json.dumps(tokens.jwks()),
                pseudonym_key=PSEUDONYM_KEY.decode(),
                environment="development",
                policy_file=policy_file,
                **configure,
            )
            relay: Any = FakeRelay(store)
            gateway = await stack.enter_async_context(
                bootstrap(
                    settings,
                    uow=lambda: FakeUnitOfWork(store),
                    relay=relay,
                    producer=object(),  # type: ignore[arg-type]
                    denial_counters=FakeDenialCounters(),
                    registrar=registrar,
                )
            )
            app = create_app(settings, runtime=gateway)
            return await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")
            )

        yield make


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def hold(store: Store, agency: str, serial: int, relationships: list[Relationship]) -> None:
    now = dt.datetime.now(dt.UTC)
    event = verified(profile(serial), verified_at=now, relationships=relationships)
    await apply_profile(
        FakeUnitOfWork(store),
        context(agency, clock=lambda: now),
        ProfileRecord(str(uuid.uuid4()), event.pseudonym, event, SourcePosition(0, serial)),
    )


async def test_prefill_of_a_citizen_without_a_relationship_looks_like_an_unknown_one(
    api: Any, tokens: Tokens
) -> None:
    store = Store()
    now = dt.datetime.now(dt.UTC)
    await hold(store, "polres-cirebon", 1, [relationship("polres-cirebon", "skck", starts_at=now)])
    # Citizen 2 asked dinsos only: polres receives their records and stores nothing.
    await hold(
        store,
        "polres-cirebon",
        2,
        [relationship("dinsos-cirebon", "social-assistance", starts_at=now)],
    )
    assert set(store.views) == {pseudonym_of(profile(1))}
    store.outbox.clear()
    client = await api("polres-cirebon", store)
    headers = bearer(tokens.for_agency("polres-cirebon"))

    served = await prefill_by_nik(client, "skck", profile(1).nik, headers)
    assert served.status_code == 200
    unrelated = await prefill_by_nik(client, "skck", profile(2).nik, headers)
    unknown = await prefill_by_nik(client, "skck", profile(3).nik, headers)
    # Citizen 1 through a service they did not ask for: nothing of theirs on record there.
    other_service = await prefill_by_nik(client, "sim-driving-licence", profile(1).nik, headers)
    assert unrelated.status_code == 404
    assert (unrelated.status_code, unrelated.json()) == (unknown.status_code, unknown.json())
    assert unrelated.headers["content-type"] == unknown.headers["content-type"]
    assert unrelated.json()["code"] == "citizen_not_found"
    assert other_service.json() == unknown.json()

    denials = [e for e in store.outbox if e.outcome is Outcome.DENIED]
    assert [(e.channel, e.reason, e.pseudonym) for e in denials] == [
        (Channel.PREFILL, "citizen_not_found", pseudonym_of(profile(2))),
        (Channel.PREFILL, "citizen_not_found", pseudonym_of(profile(3))),
        (Channel.PREFILL, "citizen_not_found", pseudonym_of(profile(1))),
    ]


async def test_registration_through_the_gateway_is_made_at_identity_and_audited(
    api: Any, tokens: Tokens
) -> None:
    store = Store()
    identity = FakeIdentity("dinsos-cirebon")
    citizen = profile(31)
    identity.known.add(citizen.nik)
    client = await api("dinsos-cirebon", store, identity)
    token = bearer(tokens.for_agency("dinsos-cirebon", {"gateway:registrations"}))
    body = {"nik": citizen.nik, "service": "social-assistance", "legal_reference": "SK 12/2025"}

    response = await client.post("/v1/registrations", json=body, headers=token)
    assert response.status_code == 201, response.text
    answer = response.json()
    assert answer["pseudonym"] == pseudonym_of(citizen)
    assert answer["relationship"]["kind"] == "registration"
    assert answer["relationship"]["legal_reference"] == "SK 12/2025"
    assert identity.calls == [("register", (citizen.nik, "social-assistance", "SK 12/2025"))]
    [event] = store.outbox
    assert (event.channel, event.outcome, event.service, event.pseudonym, event.reason) == (
        Channel.REGISTRATION,
        Outcome.SERVED,
        "social-assistance",
        pseudonym_of(citizen),
        "registered",
    )
    assert event.correlation_id == answer["relationship"]["relationship_id"]
    assert event.legal_basis is not None
    assert event.purpose is not None

    ended = await client.post(
        f"/v1/registrations/{answer['relationship']['relationship_id']}/end", headers=token
    )
    assert ended.status_code == 200, ended.text
    assert identity.calls[-1] == ("end", uuid.UUID(answer["relationship"]["relationship_id"]))
    assert (store.outbox[-1].channel, store.outbox[-1].reason) == (
        Channel.REGISTRATION,
        "registration_ended",
    )


async def test_refused_registrations_are_each_audited_and_never_reach_identity(
    api: Any, tokens: Tokens
) -> None:
    store = Store()
    identity = FakeIdentity("dinsos-cirebon")
    citizen = profile(32)
    client = await api("dinsos-cirebon", store, identity)
    token = bearer(tokens.for_agency("dinsos-cirebon", {"gateway:registrations"}))
    good = {"nik": citizen.nik, "service": "social-assistance", "legal_reference": "SK 1/2025"}
    cases = [
        (bearer(tokens.for_agency("dinsos-cirebon")), good, 403, "insufficient_scope"),
        (
            bearer(tokens.for_agency("polres-cirebon", {"gateway:registrations"})),
            good,
            403,
            "wrong_agency",
        ),
        (token, good | {"service": "skck"}, 403, "service_not_allowed"),
        (token, good | {"service": "disability-card"}, 403, "service_not_registrable"),
        (token, good | {"nik": "12345"}, 400, "invalid_nik_length"),
    ]
    for headers, body, status, code in cases:
        response = await client.post("/v1/registrations", json=body, headers=headers)
        assert (response.status_code, response.json()["code"]) == (status, code), body
    assert identity.calls == []
    # identity's refusal is passed on, and audited as a denial too.
    response = await client.post("/v1/registrations", json=good, headers=token)
    assert (response.status_code, response.json()["code"]) == (404, "citizen_not_found")
    identity.down = True
    response = await client.post("/v1/registrations", json=good, headers=token)
    assert (response.status_code, response.json()["code"]) == (503, "identity_unavailable")

    expected = [code for *_, code in cases] + ["citizen_not_found", "identity_unavailable"]
    assert [e.reason for e in store.outbox] == expected
    assert all(e.channel is Channel.REGISTRATION for e in store.outbox)
    assert [e.outcome for e in store.outbox] == [Outcome.DENIED] * 6 + [Outcome.FAILED]
    assert store.outbox[3].service == "disability-card"
    assert store.outbox[2].service is None, "not the agency's: not recorded as its service"

    before = len(store.outbox)
    response = await client.post("/v1/registrations", json=good)
    assert response.status_code == 401
    assert len(store.outbox) == before, "no token: nothing known, nothing written"


async def test_a_backend_ends_registrations_only(api: Any, tokens: Tokens) -> None:
    store = Store()
    now = dt.datetime.now(dt.UTC)
    asked = relationship("dinsos-cirebon", "social-assistance", starts_at=now)
    await hold(store, "dinsos-cirebon", 33, [asked])
    identity = FakeIdentity("dinsos-cirebon")
    client = await api("dinsos-cirebon", store, identity)
    token = bearer(tokens.for_agency("dinsos-cirebon", {"gateway:registrations"}))
    response = await client.post(f"/v1/registrations/{asked.relationship_id}/end", headers=token)
    assert (response.status_code, response.json()["code"]) == (404, "registration_not_found")
    assert identity.calls == []
    assert store.outbox[-1].pseudonym == pseudonym_of(profile(33))


async def test_without_identity_settings_registrations_are_unavailable(
    api: Any, tokens: Tokens
) -> None:
    store = Store()
    client = await api("dinsos-cirebon", store)
    response = await client.post(
        "/v1/registrations",
        json={"nik": profile(34).nik, "service": "social-assistance", "legal_reference": "SK 2"},
        headers=bearer(tokens.for_agency("dinsos-cirebon", {"gateway:registrations"})),
    )
    assert (response.status_code, response.json()["code"]) == (503, "identity_unavailable")
    assert store.outbox[-1].outcome is Outcome.FAILED


async def test_a_backend_refused_again_and_again_is_throttled(api: Any, tokens: Tokens) -> None:
    store = Store()
    identity = FakeIdentity("dinsos-cirebon")
    client = await api("dinsos-cirebon", store, identity, denial_limit=3)
    token = bearer(tokens.for_agency("dinsos-cirebon", {"gateway:registrations"}))
    refused = {"nik": "12345", "service": "social-assistance", "legal_reference": "SK 3"}
    for _ in range(3):
        response = await client.post("/v1/registrations", json=refused, headers=token)
        assert response.status_code == 400
    good = refused | {"nik": profile(35).nik}
    response = await client.post("/v1/registrations", json=good, headers=token)
    assert (response.status_code, response.json()["code"]) == (429, "too_many_denials")
    assert identity.calls == []
    throttled = store.outbox[-1]  # the block's first refusal is audited, on the routes' channel
    assert (throttled.channel, throttled.reason) == (Channel.REGISTRATION, "too_many_denials")
