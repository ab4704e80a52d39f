"""/oauth/token throttles failed client authentication before argon2 runs, per (client id,
address) and per address, with the count shared by every replica through PostgreSQL; a trusted
proxy's X-Forwarded-For names the client address, anyone else's is ignored."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import asyncpg
import httpx
import pytest

from ikd_identity.adapters.postgres import PgClients
from ikd_identity.adapters.secrets import Argon2Hasher
from ikd_identity.domain.clients import Client
from ikd_identity.entrypoints.api import create_app

SECRET = "s3cret-value-of-counter-polres"
WRONG = "not-the-secret"
PER_CLIENT, PER_ADDRESS = 3, 5


class CountingHasher:
    """The real argon2 hasher, counting the checks it runs."""

    def __init__(self, inner: Argon2Hasher) -> None:
        self.inner = inner
        self.checks = 0

    def hash(self, secret: str) -> str:
        return self.inner.hash(secret)

    def verify(self, secret_hash: str | None, secret: str) -> bool:
        self.checks += 1
        return self.inner.verify(secret_hash, secret)


@dataclasses.dataclass
class Replica:
    app: Any
    hasher: CountingHasher

    def client(self, address: str) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.app, client=(address, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://identity")


ReplicaFactory = Callable[..., Any]


@pytest.fixture
async def replicas(make_settings: Any, identity_db: Any) -> AsyncIterator[ReplicaFactory]:
    connection = await asyncpg.connect(identity_db.owner_dsn)
    try:
        await PgClients(connection).put(
            Client(
                client_id="counter-polres",
                secret_hash=Argon2Hasher().hash(SECRET),
                scopes=frozenset({"identity:verify"}),
                agency="polres-cirebon",
            )
        )
    finally:
        await connection.close()
    async with AsyncExitStack() as stack:

        async def start(**overrides: Any) -> Replica:
            """One more identity process on the same database (its own pool and runtime)."""
            settings = make_settings(
                token_throttle_max_failures_per_client=PER_CLIENT,
                token_throttle_max_failures_per_address=PER_ADDRESS,
                **overrides,
            )
            app = create_app(settings, run_relay=False)
            await stack.enter_async_context(app.router.lifespan_context(app))
            hasher = CountingHasher(app.state.container.hasher)
            app.state.container = dataclasses.replace(app.state.container, hasher=hasher)
            return Replica(app, hasher)

        yield start


def form(client_id: str = "counter-polres", secret: str = WRONG) -> dict[str, str]:
    return {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}


async def test_failures_on_one_replica_throttle_the_other_before_argon2(
    replicas: ReplicaFactory,
) -> None:
    one, two = await replicas(), await replicas()
    async with one.client("203.0.113.9") as attacker:
        for _ in range(PER_CLIENT):
            refused = await attacker.post("/oauth/token", data=form())
            assert (refused.status_code, refused.json()["error"]) == (401, "invalid_client")
    assert one.hasher.checks == PER_CLIENT

    async with two.client("203.0.113.9") as attacker:
        throttled = await attacker.post("/oauth/token", data=form(secret=SECRET))
    assert throttled.status_code == 429
    body = throttled.json()
    assert (body["error"], body["code"]) == ("slow_down", "slow_down")
    window = two.app.state.container.settings.token_throttle_window_s
    assert 1 <= int(throttled.headers["retry-after"]) <= window
    assert throttled.headers["cache-control"] == "no-store"
    assert two.hasher.checks == 0  # refused without hashing

    # the legitimate client, from its own address, is not locked out by the attacker
    async with two.client("198.51.100.7") as legitimate:
        issued = await legitimate.post("/oauth/token", data=form(secret=SECRET))
    assert issued.status_code == 200, issued.text
    assert two.hasher.checks == 1


async def test_an_address_trying_many_client_ids_is_throttled(replicas: ReplicaFactory) -> None:
    one, two = await replicas(), await replicas()
    for n in range(PER_ADDRESS):
        replica = (one, two)[n % 2]
        async with replica.client("192.0.2.44") as guesser:
            response = await guesser.post("/oauth/token", data=form(client_id=f"guess-{n}"))
            assert response.status_code == 401
    async with one.client("192.0.2.44") as guesser:
        response = await guesser.post("/oauth/token", data=form(client_id="never-tried"))
    assert response.status_code == 429
    assert one.hasher.checks + two.hasher.checks == PER_ADDRESS
    async with one.client("192.0.2.45") as neighbour:
        response = await neighbour.post("/oauth/token", data=form(secret=SECRET))
    assert response.status_code == 200


async def test_malformed_requests_cost_no_argon2_and_no_count(replicas: ReplicaFactory) -> None:
    one = await replicas()
    async with one.client("192.0.2.50") as caller:
        for _ in range(PER_ADDRESS + 2):
            response = await caller.post("/oauth/token", data={"grant_type": "client_credentials"})
            assert response.status_code == 401
        assert (await caller.post("/oauth/token", data=form(secret=SECRET))).status_code == 200
    assert one.hasher.checks == 1


async def test_a_trusted_proxy_names_the_client_and_no_one_else_can(
    replicas: ReplicaFactory,
) -> None:
    proxied = await replicas(trusted_proxies="10.0.0.0/8")

    async def through(peer: str, forwarded_for: str, secret: str = WRONG) -> httpx.Response:
        async with proxied.client(peer) as http:
            return await http.post(
                "/oauth/token",
                data=form(secret=secret),
                headers={"X-Forwarded-For": forwarded_for},
            )

    # behind the proxy the attacker claims a spoofed first hop; the proxy appended the real one
    for _ in range(PER_CLIENT):
        assert (await through("10.1.2.3", "198.51.100.7, 203.0.113.9")).status_code == 401
    assert (await through("10.9.9.9", "203.0.113.9", SECRET)).status_code == 429
    # the real client behind the same proxy is another address
    assert (await through("10.1.2.3", "198.51.100.7", SECRET)).status_code == 200
    # a direct peer that is not a trusted proxy cannot pick its address by header
    for n in range(PER_CLIENT):
        response = await through("192.0.2.99", f"198.51.100.{n + 10}")
        assert response.status_code == 401
    assert (await through("192.0.2.99", "198.51.100.77", SECRET)).status_code == 429
