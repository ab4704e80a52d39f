from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from ikd_gateway.bootstrap import Gateway, bootstrap
from ikd_gateway.config import GatewaySettings
from ikd_gateway.entrypoints.api import create_app
from tests.support.gateway_factories import PSEUDONYM_KEY, Tokens
from tests.support.gateway_fakes import FakeDenialCounters, FakeRelay, FakeUnitOfWork, Store


@pytest.fixture(scope="session")
def tokens() -> Tokens:
    return Tokens()


def fake_gateway(
    agency: str, tokens: Tokens, store: Store, **configure: Any
) -> contextlib.AbstractAsyncContextManager[Gateway]:
    """The composition root on fakes: no database, no broker; `configure`: more settings."""
    settings = GatewaySettings(
        agency=agency,
        database_url="postgresql://unused@127.0.0.1:1/unused",
        token_jwks=json.dumps(tokens.jwks()),
        pseudonym_key=PSEUDONYM_KEY.decode(),
        environment="development",
        **configure,
    )
    fake: Any = FakeRelay(store)
    return bootstrap(
        settings,
        uow=lambda: FakeUnitOfWork(store),
        relay=fake,
        producer=object(),  # type: ignore[arg-type]
        denial_counters=FakeDenialCounters(),
    )


@pytest.fixture
async def make_client(tokens: Tokens) -> AsyncIterator[object]:
    async with contextlib.AsyncExitStack() as stack:

        async def make(agency: str, store: Store, **configure: Any) -> httpx.AsyncClient:
            gateway = await stack.enter_async_context(
                fake_gateway(agency, tokens, store, **configure)
            )
            app = create_app(gateway.settings, runtime=gateway)
            return await stack.enter_async_context(
                httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gateway")
            )

        yield make
