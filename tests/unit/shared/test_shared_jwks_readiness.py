"""A gateway or the audit service started before identity answers is not ready until it holds
identity's token keys: its /readyz names them, and turns ready once the retried fetch works."""

from __future__ import annotations

import asyncio

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI

from ikd_shared.api import operations_router
from ikd_shared.auth import TokenIssuer, TokenKeys, TokenVerifier
from ikd_shared.jwks import RemoteJwks, keys_loaded, remote_jwks

URL = "https://identity.test/.well-known/jwks.json"
ISSUER = TokenIssuer(Ed25519PrivateKey.generate(), kid="k1", issuer="ikd-identity")


def app_for(verifier: TokenVerifier) -> FastAPI:
    app = FastAPI()
    app.include_router(operations_router(checks={"token-keys": lambda: keys_loaded(verifier)}))
    return app


async def readyz(app: FastAPI) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service") as client:
        return await client.get("/readyz")


async def test_not_ready_until_the_keys_are_fetched_then_ready_without_a_restart() -> None:
    up = False

    def identity(_: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=ISSUER.jwks()) if up else httpx.Response(503)

    keys = RemoteJwks(URL, min_interval=0.01, transport=httpx.MockTransport(identity))
    app = app_for(TokenVerifier(keys, issuer="ikd-identity", audience="api"))
    async with remote_jwks(keys):
        response = await readyz(app)
        assert response.status_code == 503
        assert response.json()["failed"] == ["token-keys"]
        assert URL in response.json()["checks"]["token-keys"]
        up = True
        for _ in range(300):  # the background fetch retries every min_interval until it works
            if keys.loaded:
                break
            await asyncio.sleep(0.01)
        assert (await readyz(app)).status_code == 200


async def test_static_keys_are_always_ready() -> None:
    verifier = TokenVerifier(TokenKeys(ISSUER.jwks()), issuer="ikd-identity", audience="api")
    assert (await readyz(app_for(verifier))).status_code == 200
