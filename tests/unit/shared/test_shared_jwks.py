"""identity's token keys from its JWKS URL: fetched, refreshed on an unknown kid at most once
per interval, kept while identity is down or answers nonsense, and withdrawn keys refused."""

# No `from __future__ import annotations`: FastAPI resolves string annotations in module globals.
import asyncio
from typing import Annotated, Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import Depends, FastAPI

from ikd_shared.api import ApiError, install_error_handlers
from ikd_shared.auth import AuthError, Principal, Scope, TokenIssuer, TokenVerifier
from ikd_shared.bearer import Bearer
from ikd_shared.jwks import JwksUnavailable, RemoteJwks, remote_jwks
from ikd_shared.token_cache import CachedTokenVerifier

ISSUER = "ikd-identity"
URL = "https://identity.test/.well-known/jwks.json"


class Identity:
    """identity's JWKS endpoint: what it publishes, whether it is up, how often it was asked."""

    def __init__(self) -> None:
        self.old = TokenIssuer(Ed25519PrivateKey.generate(), kid="old", issuer=ISSUER)
        self.new = TokenIssuer(Ed25519PrivateKey.generate(), kid="new", issuer=ISSUER)
        self.published: dict[str, Any] = self.old.jwks()
        self.up = True
        self.requests = 0

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests += 1
        assert str(request.url) == URL
        if not self.up:
            return httpx.Response(503)
        return httpx.Response(200, json=self.published)

    def keys(self, clock: Any, min_interval: float = 10.0) -> RemoteJwks:
        return RemoteJwks(
            URL,
            min_interval=min_interval,
            transport=httpx.MockTransport(self.handle),
            clock=clock,
        )

    def rotate(self) -> None:
        """Both keys published (the overlap)."""
        self.published = {"keys": [*self.old.jwks()["keys"], *self.new.jwks()["keys"]]}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def token(issuer: TokenIssuer, kid: str | None = None) -> str:
    if kid is not None:
        forged = TokenIssuer(Ed25519PrivateKey.generate(), kid=kid, issuer=ISSUER)
        return forged.issue("c", {Scope.PREFILL.value}, ["api"])
    return issuer.issue("c", {Scope.PREFILL.value}, ["api"])


async def test_an_unknown_kid_fetches_once_per_interval_however_many_arrive() -> None:
    identity, clock = Identity(), Clock()
    keys = identity.keys(clock)
    verifier = TokenVerifier(keys, issuer=ISSUER, audience="api")
    await keys.fetch()
    assert verifier.verify(token(identity.old)).client_id == "c"
    assert identity.requests == 1

    identity.rotate()
    with pytest.raises(AuthError, match="unknown key"):
        verifier.verify(token(identity.new))
    clock.now += 11
    assert await verifier.refresh_keys() is True
    assert verifier.verify(token(identity.new)).client_id == "c"
    assert identity.requests == 2

    # A flood of made-up kids within the interval: not one more request to identity.
    results = await asyncio.gather(*(verifier.refresh_keys() for _ in range(50)))
    assert not any(results)
    assert identity.requests == 2
    clock.now += 11
    assert await verifier.refresh_keys() is False  # fetched, nothing new
    assert identity.requests == 3


async def test_identity_down_or_answering_nonsense_keeps_the_keys_held() -> None:
    identity, clock = Identity(), Clock()
    keys = identity.keys(clock)
    verifier = TokenVerifier(keys, issuer=ISSUER, audience="api")
    await keys.fetch()
    identity.up = False
    clock.now += 11
    with pytest.raises(JwksUnavailable):
        await keys.fetch()
    assert await verifier.refresh_keys() is False
    assert verifier.verify(token(identity.old)).client_id == "c"
    identity.up = True
    for nonsense in ({"keys": []}, {"nope": 1}, {"keys": [{"kty": "oct", "k": "AA"}]}):
        identity.published = nonsense
        with pytest.raises(JwksUnavailable):
            await keys.fetch()
        assert verifier.verify(token(identity.old)).client_id == "c"


async def test_a_service_starts_while_identity_is_down_and_catches_up() -> None:
    identity, clock = Identity(), Clock()
    identity.up = False
    keys = identity.keys(clock, min_interval=0.01)
    verifier = TokenVerifier(keys, issuer=ISSUER, audience="api")
    async with remote_jwks(keys):
        with pytest.raises(AuthError, match="unknown key"):
            verifier.verify(token(identity.old))
        identity.up = True
        clock.now += 1
        for _ in range(200):  # the background refresh retries every min_interval until loaded
            if keys.loaded:
                break
            await asyncio.sleep(0.01)
        assert verifier.verify(token(identity.old)).client_id == "c"


async def test_a_withdrawn_key_is_refused_even_for_a_token_already_accepted() -> None:
    identity, clock = Identity(), Clock()
    identity.rotate()
    keys = identity.keys(clock)
    cached = CachedTokenVerifier(TokenVerifier(keys, issuer=ISSUER, audience="api"))
    await keys.fetch()
    old_token = token(identity.old)
    assert cached.verify(old_token).client_id == "c"
    identity.published = identity.new.jwks()
    clock.now += 11
    await keys.fetch()
    with pytest.raises(AuthError, match="unknown key"):
        cached.verify(old_token)


class Unauthenticated(ApiError):
    status_code = 401
    code = "unauthenticated"


class Forbidden(ApiError):
    status_code = 403
    code = "insufficient_scope"


async def test_the_first_request_with_a_new_key_is_accepted_and_made_up_kids_are_401() -> None:
    identity, clock = Identity(), Clock()
    keys = identity.keys(clock)
    verifier = CachedTokenVerifier(TokenVerifier(keys, issuer=ISSUER, audience="api"))
    await keys.fetch()
    bearer: Bearer[ApiError] = Bearer(
        lambda _: verifier, unauthenticated=Unauthenticated, forbidden=Forbidden
    )
    Caller = Annotated[Principal, Depends(bearer.require(Scope.PREFILL))]
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/prefill")
    async def prefill(caller: Caller) -> dict[str, str]:
        return {"client": caller.client_id}

    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://api"
    ) as client:

        async def get(bearer_token: str) -> int:
            response = await client.get(
                "/prefill", headers={"Authorization": f"Bearer {bearer_token}"}
            )
            return response.status_code

        assert await get(token(identity.old)) == 200
        identity.rotate()
        clock.now += 11
        assert await get(token(identity.new)) == 200  # refreshed on its unknown kid
        assert identity.requests == 2
        made_up = await asyncio.gather(*(get(token(identity.old, kid=f"x{i}")) for i in range(20)))
        assert set(made_up) == {401}
        assert identity.requests == 2
