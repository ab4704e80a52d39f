"""Endpoint registration refuses what PostgreSQL cannot store with a 4xx, on the real database."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from ikd_gateway.entrypoints.api import create_app
from tests.support.gateway import running_gateway
from tests.support.gateway_factories import Tokens

AGENCY = "dinsos-cirebon"
HOOK = {"url": "http://receiver.example/hook", "service": "social-assistance"}


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.fixture
async def client(
    gateway_db: Any, session_topic_prefix: str, tokens: Tokens, tmp_path: Path
) -> AsyncIterator[httpx.AsyncClient]:
    async with (
        running_gateway(AGENCY, gateway_db, session_topic_prefix, tokens, tmp_path) as gateway,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(gateway.settings, runtime=gateway)),
            base_url="http://gw",
        ) as http,
    ):
        yield http


async def test_description_with_a_nul_character_is_refused_not_a_server_error(
    client: httpx.AsyncClient, db: asyncpg.Connection, tokens: Tokens
) -> None:
    # Found by the schemathesis run: PostgreSQL text cannot hold U+0000, so this was a 500.
    manage = bearer(tokens.for_agency(AGENCY, {"gateway:webhooks"}))
    for description in ("bad\x00byte", "line\nbreak"):
        response = await client.post(
            "/v1/webhooks/endpoints", headers=manage, json=HOOK | {"description": description}
        )
        assert (response.status_code, response.json()["code"]) == (422, "invalid_request")
    assert await db.fetchval("SELECT count(*) FROM webhook_endpoints") == 0
    fine = await client.post(
        "/v1/webhooks/endpoints", headers=manage, json=HOOK | {"description": "Dinsos intake"}
    )
    assert fine.status_code == 201
