"""The gateway's client of identity's registration API, against a scripted identity (httpx's
mock transport): its own token, cached; refusals passed on; failures told apart."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from pydantic import ValidationError

from ikd_gateway.adapters.identity import IdentityClient
from ikd_gateway.config import GatewaySettings
from ikd_gateway.domain import errors
from ikd_shared.events.profile_v1 import RelationshipKind
from tests.support.gateway_factories import profile, relationship

Handler = Callable[[httpx.Request], httpx.Response]


class Identity:
    """Answers /oauth/token and the registration routes; remembers what it was sent."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.issued = 0
        self.valid: set[str] = set()
        self.answer: Handler = self.registered
        self.refuse_connections = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if self.refuse_connections:
            self.refuse_connections -= 1
            raise httpx.ConnectError("connection refused", request=request)
        self.requests.append(request)
        if request.url.path == "/oauth/token":
            form = dict(httpx.QueryParams(request.content.decode()))
            assert form["grant_type"] == "client_credentials"
            assert (form["client_id"], form["client_secret"]) == ("gateway-dinsos", "s" * 40)
            assert form["scope"] == "identity:register"
            self.issued += 1
            token = f"token-{self.issued}"
            self.valid.add(token)
            return httpx.Response(200, json={"access_token": token, "expires_in": 300})
        if request.headers.get("authorization", "").removeprefix("Bearer ") not in self.valid:
            return httpx.Response(401, json={"code": "token_expired", "detail": "expired"})
        return self.answer(request)

    @staticmethod
    def registered(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        rel = relationship("dinsos-cirebon", body["service"], kind=RelationshipKind.REGISTRATION)
        return httpx.Response(201, json={"relationship": rel.model_dump(mode="json")})


@pytest.fixture
def identity() -> Identity:
    return Identity()


def client(identity: Identity, clock: Callable[[], float] = lambda: 0.0) -> IdentityClient:
    return IdentityClient(
        "http://identity",
        "gateway-dinsos",
        "s" * 40,
        transport=httpx.MockTransport(identity),
        clock=clock,
    )


async def register(api: IdentityClient) -> object:
    return await api.register(
        nik=profile(1).nik, service="social-assistance", legal_reference="SK 1"
    )


async def test_one_token_serves_many_registrations_until_it_is_near_its_expiry(
    identity: Identity,
) -> None:
    now = [0.0]
    api = client(identity, clock=lambda: now[0])
    for _ in range(3):
        await register(api)
    assert identity.issued == 1
    sent = [r for r in identity.requests if r.url.path == "/v1/registrations"]
    assert json.loads(sent[0].content) == {
        "nik": profile(1).nik,
        "service": "social-assistance",
        "legal_reference": "SK 1",
    }
    now[0] = 300 - 10  # inside the renewal margin
    await register(api)
    assert identity.issued == 2
    await api.close()


async def test_a_token_identity_no_longer_accepts_is_renewed_once(identity: Identity) -> None:
    api = client(identity)
    await register(api)
    identity.valid.clear()  # identity rotated its key
    relationship_ = await register(api)
    assert identity.issued == 2
    assert relationship_ is not None
    await api.close()


async def test_identitys_refusals_are_passed_on_and_other_answers_are_failures(
    identity: Identity,
) -> None:
    api = client(identity)
    for status, code in ((403, "service_not_registrable"), (404, "citizen_not_found")):
        identity.answer = lambda _r, s=status, c=code: httpx.Response(
            s, json={"code": c, "detail": "refused"}
        )
        with pytest.raises(errors.GatewayError) as refused:
            await register(api)
        assert (refused.value.status_code, refused.value.code) == (status, code)
    identity.answer = lambda _r: httpx.Response(500, text="boom")
    with pytest.raises(errors.IdentityFailed):
        await register(api)
    identity.answer = lambda _r: httpx.Response(201, json={"nothing": True})
    with pytest.raises(errors.IdentityFailed):
        await register(api)
    await api.close()


async def test_a_connection_that_never_opened_is_retried_and_then_unavailable(
    identity: Identity,
) -> None:
    api = client(identity)
    identity.refuse_connections = 2  # the token request, then the first registration
    await register(api)
    assert identity.issued == 1
    identity.refuse_connections = 10
    with pytest.raises(errors.IdentityUnavailable):
        await register(api)
    await api.close()


async def test_ending_a_registration(identity: Identity) -> None:
    api = client(identity)
    rel_id = uuid.uuid4()
    identity.answer = lambda _r: httpx.Response(200, json={})
    assert await api.end(rel_id) is None
    assert identity.requests[-1].url.path == f"/v1/registrations/{rel_id}/end"
    identity.answer = lambda _r: httpx.Response(404, json={"code": "registration_not_found"})
    with pytest.raises(errors.GatewayError) as refused:
        await api.end(rel_id)
    assert (refused.value.status_code, refused.value.code) == (404, "registration_not_found")
    await api.close()


def test_the_client_secret_is_read_from_a_file_and_required_with_identitys_url(
    tmp_path: Path,
) -> None:
    secret = tmp_path / "gateway-secret"
    secret.write_text("q" * 43 + "\n")
    base = {
        "agency": "dinsos-cirebon",
        "database_url": "postgresql://app:pw@127.0.0.1:1/db",
        "token_jwks": '{"keys": []}',
        "pseudonym_key": "k" * 40,
        "environment": "development",
    }
    settings = GatewaySettings(
        **base, identity_url="http://identity:18000", identity_client_secret=f"@{secret}"
    )
    assert settings.identity_client_secret is not None
    assert settings.identity_client_secret.get_secret_value() == "q" * 43
    assert settings.identity_client == "gateway-dinsos-cirebon"
    with pytest.raises(ValidationError, match="IKD_GATEWAY_IDENTITY_CLIENT_SECRET is required"):
        GatewaySettings(**base, identity_url="http://identity:18000")
