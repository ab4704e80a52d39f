"""The gateway's identity client never sends on a connection identity is closing for idleness.

identity's server (uvicorn) closes a connection idle for its keep-alive timeout; a client that
keeps idle connections as long sends a request just as the server closes it and gets a
ReadError (a registration must not be sent again blindly). The server below closes any
connection reused after IDLE_LIMIT without answering, as identity does in that race.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest
import uvicorn

from ikd_gateway.adapters.identity import KEEPALIVE_EXPIRY_SECONDS, IdentityClient
from ikd_gateway.domain import errors
from ikd_shared.events.profile_v1 import RelationshipKind
from tests.support.gateway_factories import relationship

IDLE_LIMIT = 0.3


async def _answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    answered_at: float | None = None
    try:
        while True:
            head = await reader.readuntil(b"\r\n\r\n")
            if answered_at is not None and time.monotonic() - answered_at > IDLE_LIMIT:
                writer.transport.abort()  # the keep-alive timer fired first: no answer
                return
            lines = head.decode().split("\r\n")
            path = lines[0].split()[1]
            length = next(
                (
                    int(v)
                    for k, v in (x.split(": ", 1) for x in lines[1:] if x)
                    if k.lower() == "content-length"
                ),
                0,
            )
            await reader.readexactly(length)
            if path == "/oauth/token":
                status, body = "200 OK", {"access_token": "t", "expires_in": 300}
            else:
                rel = relationship(
                    "dinsos-cirebon", "social-assistance", kind=RelationshipKind.REGISTRATION
                )
                status, body = "201 Created", {"relationship": rel.model_dump(mode="json")}
            data = json.dumps(body).encode()
            writer.write(
                f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(data)}\r\n\r\n".encode()
                + data
            )
            await writer.drain()
            answered_at = time.monotonic()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


@pytest.fixture
async def identity_url() -> AsyncIterator[str]:
    server = await asyncio.start_server(_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield f"http://127.0.0.1:{port}"


async def _register_twice(url: str, keepalive_expiry: float) -> None:
    client = IdentityClient(url, "gateway-dinsos", "s" * 40, keepalive_expiry=keepalive_expiry)
    try:
        for _ in range(2):
            await client.register(
                nik="3209010101900001", service="social-assistance", legal_reference="x"
            )
            await asyncio.sleep(IDLE_LIMIT + 0.2)
    finally:
        await client.close()


async def test_a_connection_idle_longer_than_its_expiry_is_not_reused(identity_url: str) -> None:
    await _register_twice(identity_url, keepalive_expiry=IDLE_LIMIT / 3)


async def test_reusing_a_connection_the_server_closes_fails_without_a_retry(
    identity_url: str,
) -> None:
    # what the expiry prevents: the request reaches a closing connection and is not resent
    with pytest.raises(errors.IdentityUnavailable, match="cannot be reached"):
        await _register_twice(identity_url, keepalive_expiry=IDLE_LIMIT * 10)


def test_the_default_expiry_is_below_identitys_keep_alive_timeout() -> None:
    # identity's `serve` leaves uvicorn's default keep-alive timeout
    assert (
        uvicorn.Config("ikd_identity.cli:api_from_environment").timeout_keep_alive
        > KEEPALIVE_EXPIRY_SECONDS
    )
