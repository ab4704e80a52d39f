"""What every measurement needs: where the services are, tokens, database connections, waits."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import asyncpg
import httpx

from ikd_shared.pseudonym import pseudonymize

SEED = 7  # synthetic citizens of the bench (the demo uses seed 0)
# Idle connections are dropped before the services' uvicorn closes them (5 s keep-alive): a
# request sent just as the server closes its connection fails with a ReadError.
LIMITS = httpx.Limits(keepalive_expiry=2.0)
CLIENTS = {
    "counter": "counter-polres",
    "feed": "dukcapil-feed",
    "officer": "mpp-officer",
}


@dataclass(frozen=True)
class Gateway:
    code: str  # the bench code, e.g. bench-polres-cirebon
    url: str
    dsn: str  # superuser DSN of its database

    @property
    def name(self) -> str:
        """The agency's code in the MPP policy (without the bench- prefix)."""
        return self.code.removeprefix("bench-")


@dataclass(frozen=True)
class Context:
    identity_url: str
    identity_dsn: str
    audit_dsn: str
    gateways: tuple[Gateway, ...]
    client_secret: str
    topic_prefix: str
    bootstrap: str
    issuer_key: Path
    pseudonym_key: bytes
    quick: bool
    tokens: dict[str, str] = field(default_factory=dict, compare=False)

    def gateway(self, name: str) -> Gateway:
        for gateway in self.gateways:
            if gateway.name == name:
                return gateway
        raise KeyError(name)

    def pseudonym(self, nik: str) -> str:
        return pseudonymize(nik, self.pseudonym_key)

    async def token(self, client_id: str, *, fresh: bool = False) -> str:
        """A client-credentials access token from the identity service."""
        if fresh or client_id not in self.tokens:
            async with httpx.AsyncClient(timeout=10) as http:
                response = await http.post(
                    f"{self.identity_url}/oauth/token",
                    data={
                        "grant_type": "client_credentials",
                        "client_id": client_id,
                        "client_secret": self.client_secret,
                    },
                )
            response.raise_for_status()
            self.tokens[client_id] = str(response.json()["access_token"])
        return self.tokens[client_id]


async def connect(dsn: str) -> asyncpg.Connection:
    connection: asyncpg.Connection = await asyncpg.connect(dsn)
    return connection


async def count(dsn: str, sql: str, *args: object) -> int:
    connection = await connect(dsn)
    try:
        return int(await connection.fetchval(sql, *args))
    finally:
        await connection.close()


async def wait_until(
    probe: Callable[[], Awaitable[bool]], *, within: float, interval: float = 0.2, what: str
) -> float:
    """Poll `probe` until true; seconds waited. TimeoutError naming `what` after `within` s."""
    started = time.monotonic()
    while not await probe():
        if time.monotonic() - started > within:
            raise TimeoutError(f"{what}: not done after {within:.0f} s")
        await asyncio.sleep(interval)
    return time.monotonic() - started
