from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from ikd_gateway.bootstrap import Gateway
from ikd_gateway.config import GatewaySettings
from ikd_gateway.entrypoints.api import create_app
from ikd_gateway.service_layer.handlers import GatewayContext
from tests.support.gateway_factories import POLICY, PSEUDONYM_KEY, Tokens
from tests.support.gateway_fakes import FakeUnitOfWork, Store


@pytest.fixture(scope="session")
def tokens() -> Tokens:
    return Tokens()


def fake_gateway(agency: str, tokens: Tokens, store: Store) -> Gateway:
    from ikd_shared.auth import TokenVerifier

    settings = GatewaySettings(
        agency=agency,
        database_url="postgresql://unused@127.0.0.1:1/unused",
        token_jwks=json.dumps(tokens.jwks()),
        pseudonym_key=PSEUDONYM_KEY.decode(),
        environment="development",
    )
    ctx = GatewayContext(
        agency=POLICY.agency(agency), pseudonym_key=PSEUDONYM_KEY, consumer=settings.consumer_group
    )
    return Gateway(
        settings=settings,
        ctx=ctx,
        verifier=TokenVerifier(tokens.jwks(), issuer="ikd-identity", audience="ikd-gateway"),
        uow_override=lambda: FakeUnitOfWork(store),
    )


@pytest.fixture
async def make_client(tokens: Tokens) -> AsyncIterator[object]:
    clients: list[httpx.AsyncClient] = []

    def make(agency: str, store: Store) -> httpx.AsyncClient:
        app = create_app(fake_gateway(agency, tokens, store), manage_lifecycle=False)
        client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway"
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()
