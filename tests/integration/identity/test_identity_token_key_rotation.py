"""identity's token key rotates while agency backends keep calling a gateway: not one 401.

identity runs on the real database, restarted with each step of the runbook's rotation
(docs/runbooks/key-rotation.md): the next key published, then signing with it while the old
one stays published, then the old one withdrawn. Two backends take tokens from identity's
/oauth/token and call a gateway that knows identity's keys only from its JWKS URL. The gateway
never refreshes on its own schedule here (an hour): it learns the new key from the first token
that carries it. Once the old key is withdrawn and the gateway has fetched the JWKS again, a
token of the old key is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import secrets
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ikd_gateway.bootstrap import bootstrap, check_or_exit
from ikd_gateway.config import GatewaySettings
from ikd_gateway.entrypoints.api import create_app as gateway_app
from ikd_identity.adapters.postgres import PgClients
from ikd_identity.adapters.secrets import Argon2Hasher
from ikd_identity.domain.clients import Client
from ikd_identity.entrypoints.api import create_app as identity_app
from ikd_shared.auth import TokenIssuer, TokenVerifier, load_ed25519_private_key
from ikd_shared.jwks import RemoteJwks
from tests.support.gateway_factories import PSEUDONYM_KEY
from tests.support.gateway_fakes import FakeDenialCounters, FakeRelay, FakeUnitOfWork, Store

AGENCY = "bank-bjb"
JWKS_URL = "http://identity/.well-known/jwks.json"


def new_key_pem() -> str:
    return (
        Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )


def public_jwk(pem: str) -> dict[str, Any]:
    return TokenIssuer(load_ed25519_private_key(pem), kid="", issuer="").signing_jwk()


class CurrentIdentity(httpx.AsyncBaseTransport):
    """Whichever identity process runs now (a restart swaps it)."""

    def __init__(self) -> None:
        self.app: Any = None
        self.jwks_requests = 0
        self.in_flight: dict[int, int] = {}

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/jwks.json":
            self.jwks_requests += 1
        app = self.app
        self.in_flight[id(app)] = self.in_flight.get(id(app), 0) + 1
        try:
            response = await httpx.ASGITransport(app=app).handle_async_request(request)
            await response.aread()
            return response
        finally:
            self.in_flight[id(app)] -= 1

    async def drained(self, app: Any) -> None:
        """A stopping process first answers the requests it took."""
        for _ in range(1000):
            if not self.in_flight.get(id(app), 0):
                return
            await asyncio.sleep(0.01)
        raise AssertionError("identity never drained")


async def test_a_token_key_rotation_under_traffic_refuses_no_request(
    make_settings: Any, identity_db: Any, token_key_pem: str
) -> None:
    old_pem, new_pem = token_key_pem, new_key_pem()
    old_kid, new_kid = "token-key-1", "token-key-2"
    steps = [  # the runbook's steps, each an identity restart
        {"token_key_id": old_kid},
        {"token_key_id": old_kid, "token_published_keys": {"keys": [public_jwk(new_pem)]}},
        {
            "token_signing_key": new_pem,
            "token_key_id": new_kid,
            "token_published_keys": {"keys": [{**public_jwk(old_pem), "kid": old_kid}]},
        },
        {"token_signing_key": new_pem, "token_key_id": new_kid},
    ]
    steps[1]["token_published_keys"]["keys"][0]["kid"] = new_kid
    secret = secrets.token_urlsafe(32)
    connection = await asyncpg.connect(identity_db.owner_dsn)
    try:
        await PgClients(connection).put(
            Client(
                client_id="bank-bjb-backend",
                secret_hash=Argon2Hasher().hash(secret),
                scopes=frozenset({"gateway:webhooks"}),
                agency=AGENCY,
            )
        )
    finally:
        await connection.close()

    identity = CurrentIdentity()
    keys = RemoteJwks(JWKS_URL, transport=identity, refresh_seconds=3600, min_interval=0.5)
    settings = GatewaySettings(
        agency=AGENCY,
        database_url="postgresql://unused@127.0.0.1:1/unused",
        token_jwks_url=JWKS_URL,  # type: ignore[arg-type]
        pseudonym_key=PSEUDONYM_KEY.decode(),
        environment="development",  # type: ignore[arg-type]
    )
    config = dataclasses.replace(
        check_or_exit(settings),
        verifier=TokenVerifier(keys, issuer="ikd-identity", audience="ikd-gateway"),
    )
    store = Store()
    statuses: list[tuple[int, str]] = []
    step_done = [0] * len(steps)

    @contextlib.asynccontextmanager
    async def running_identity(overrides: dict[str, Any]) -> AsyncIterator[None]:
        values = {k: json.dumps(v) if isinstance(v, dict) else v for k, v in overrides.items()}
        app = identity_app(make_settings(**values), run_relay=False)
        async with app.router.lifespan_context(app):
            identity.app = app
            yield

    async with (
        bootstrap(
            settings,
            config=config,
            uow=lambda: FakeUnitOfWork(store),
            relay=FakeRelay(store),  # type: ignore[arg-type]
            producer=object(),  # type: ignore[arg-type]
            denial_counters=FakeDenialCounters(),
        ) as gateway,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=gateway_app(settings, runtime=gateway)),
            base_url="http://gateway",
        ) as gateway_client,
        httpx.AsyncClient(transport=identity, base_url="http://identity") as identity_client,
    ):
        stop = asyncio.Event()
        current = [0]
        tokens_by_kid: dict[str, str] = {}

        async def backend() -> None:
            while not stop.is_set():
                step = current[0]
                answer = await identity_client.post(
                    "/oauth/token",
                    data={
                        "grant_type": "client_credentials",
                        "client_id": "bank-bjb-backend",
                        "client_secret": secret,
                    },
                )
                assert answer.status_code == 200, answer.text
                token = answer.json()["access_token"]
                kid = jwt.get_unverified_header(token)["kid"]
                tokens_by_kid.setdefault(kid, token)
                for _ in range(5):
                    response = await gateway_client.get(
                        "/v1/webhooks/endpoints", headers={"Authorization": f"Bearer {token}"}
                    )
                    statuses.append((response.status_code, kid))
                step_done[step] += 1

        workers: list[asyncio.Task[None]] = []

        async def traffic_in(step: int) -> None:
            """Until both backends went through 2 token cycles in this step (or one failed)."""
            for _ in range(1200):
                for worker in workers:
                    if worker.done():
                        worker.result()  # a backend's failure, raised here
                        raise AssertionError("a backend stopped")
                if step_done[step] >= 4:
                    return
                await asyncio.sleep(0.05)
            raise AssertionError(f"too little traffic in step {step}: {step_done}")

        # A rolling restart: the next identity answers before the previous one stops.
        previous = contextlib.AsyncExitStack()
        await previous.enter_async_context(running_identity(steps[0]))
        try:
            await keys.fetch()  # the gateway starts: its first fetch
            workers += [asyncio.create_task(backend()) for _ in range(2)]
            await traffic_in(0)
            for number, step in enumerate(steps[1:], start=1):
                started, stopping = contextlib.AsyncExitStack(), identity.app
                await started.enter_async_context(running_identity(step))
                current[0] = number
                await identity.drained(stopping)
                await previous.aclose()
                previous = started
                await traffic_in(number)
            stop.set()
            await asyncio.gather(*workers)
            await keys.fetch()  # the gateway's next scheduled fetch: the old key is gone
            withdrawn = await gateway_client.get(
                "/v1/webhooks/endpoints",
                headers={"Authorization": f"Bearer {tokens_by_kid[old_kid]}"},
            )
        finally:
            stop.set()
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            await previous.aclose()

    refused = [entry for entry in statuses if entry[0] != 200]
    assert refused == [], refused
    assert {kid for _, kid in statuses} == {old_kid, new_kid}
    assert len(statuses) >= 4 * 5 * len(steps)
    # One fetch at start, one for the first token of the new key, one scheduled at the end.
    assert identity.jwks_requests <= 4, identity.jwks_requests
    assert withdrawn.status_code == 401
    assert withdrawn.json()["code"] == "unknown_key"
