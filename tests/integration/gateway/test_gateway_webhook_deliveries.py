"""An endpoint's delivery log through the API (GET /v1/webhooks/endpoints/{id}/deliveries) on
the real database."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from ikd_gateway.adapters.webhooks import HttpSender
from ikd_gateway.bootstrap import Gateway
from ikd_gateway.domain.model import SourcePosition
from ikd_gateway.entrypoints.api import MAX_DELIVERIES, create_app
from ikd_gateway.service_layer.stream import ProfileRecord, apply_profile
from tests.support.gateway import MIGRATIONS, running_gateway
from tests.support.gateway_factories import Tokens, profile, verified

AGENCY, OTHER = "dinsos-cirebon", "bank-bjb"
HOOK = {"url": "http://receiver.example/hook", "service": "social-assistance"}


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


class Answers(httpx.AsyncBaseTransport):
    """The receiver's answers, in order, for the deliveries the test makes."""

    def __init__(self) -> None:
        self.statuses: list[int] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return httpx.Response(self.statuses.pop(0))


@pytest.fixture
def answers() -> Answers:
    return Answers()


@pytest.fixture
async def gateway(
    gateway_db: Any, session_topic_prefix: str, tokens: Tokens, tmp_path: Path, answers: Answers
) -> AsyncIterator[Gateway]:
    sender = HttpSender(transport=answers)
    async with running_gateway(
        AGENCY, gateway_db, session_topic_prefix, tokens, tmp_path, sender=sender
    ) as started:
        yield started
    await sender.close()


@pytest.fixture
async def client(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(gateway.settings, runtime=gateway)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://gw"
    ) as http:
        yield http


async def test_lists_each_attempt_newest_first_with_retry_time(
    gateway: Gateway,
    client: httpx.AsyncClient,
    db: asyncpg.Connection,
    tokens: Tokens,
    answers: Answers,
) -> None:
    manage = bearer(tokens.for_agency(AGENCY, {"gateway:webhooks"}))
    created = await client.post("/v1/webhooks/endpoints", headers=manage, json=HOOK)
    assert created.status_code == 201, created.text
    endpoint_id = created.json()["id"]
    empty = await client.get(f"/v1/webhooks/endpoints/{endpoint_id}/deliveries", headers=manage)
    assert (empty.status_code, empty.json()) == (200, [])

    event = verified(profile(52), 1, dt.datetime.now(dt.UTC))
    await apply_profile(
        gateway.uow(),
        gateway.ctx,
        ProfileRecord("evt-52", event.pseudonym, event, SourcePosition(0, 0)),
    )
    answers.statuses = [503, 200]
    dispatcher = gateway.dispatcher
    assert await dispatcher.run_once() == 1
    await db.execute("UPDATE webhook_messages SET next_attempt_at = now() - interval '1 second'")
    assert await dispatcher.run_once() == 1

    listed = await client.get(f"/v1/webhooks/endpoints/{endpoint_id}/deliveries", headers=manage)
    assert listed.status_code == 200, listed.text
    second, first = listed.json()
    [message_id] = [str(r["id"]) for r in await db.fetch("SELECT id FROM webhook_messages")]
    assert {first["webhook_id"], second["webhook_id"]} == {message_id}
    assert {first["event_type"], second["event_type"]} == {event.event_type}
    assert (first["attempt"], first["outcome"], first["status_code"]) == (1, "retry", 503)
    assert (second["attempt"], second["outcome"], second["status_code"]) == (2, "delivered", 200)
    assert first["next_retry_at"] is not None
    assert second["next_retry_at"] is None
    assert first["next_retry_at"] > first["attempted_at"]
    assert second["attempted_at"] >= first["attempted_at"]

    newest = await client.get(
        f"/v1/webhooks/endpoints/{endpoint_id}/deliveries", headers=manage, params={"limit": 1}
    )
    assert [d["attempt"] for d in newest.json()] == [2]
    for limit in (0, MAX_DELIVERIES + 1):
        refused = await client.get(
            f"/v1/webhooks/endpoints/{endpoint_id}/deliveries",
            headers=manage,
            params={"limit": limit},
        )
        assert refused.status_code == 422


async def test_unknown_or_another_agencys_endpoint_is_404(
    client: httpx.AsyncClient,
    database_factory: Any,
    session_topic_prefix: str,
    tokens: Tokens,
    tmp_path: Path,
) -> None:
    manage = bearer(tokens.for_agency(AGENCY, {"gateway:webhooks"}))
    unknown = await client.get(f"/v1/webhooks/endpoints/{uuid.uuid4()}/deliveries", headers=manage)
    assert (unknown.status_code, unknown.json()["code"]) == (404, "endpoint_not_found")

    other_db = await database_factory("gateway", MIGRATIONS)
    async with (
        running_gateway(OTHER, other_db, session_topic_prefix, tokens, tmp_path / "other") as other,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(other.settings, runtime=other)),
            base_url="http://gw-other",
        ) as other_client,
    ):
        theirs = await other_client.post(
            "/v1/webhooks/endpoints",
            headers=bearer(tokens.for_agency(OTHER, {"gateway:webhooks"})),
            json={"url": "http://receiver.example/hook", "service": "bjb-savings-account"},
        )
        assert theirs.status_code == 201, theirs.text
    foreign = await client.get(
        f"/v1/webhooks/endpoints/{theirs.json()['id']}/deliveries", headers=manage
    )
    assert (foreign.status_code, foreign.json()["code"]) == (404, "endpoint_not_found")


async def test_deliveries_need_this_agencys_token_with_the_webhooks_scope(
    client: httpx.AsyncClient, tokens: Tokens
) -> None:
    manage = bearer(tokens.for_agency(AGENCY, {"gateway:webhooks"}))
    created = await client.post("/v1/webhooks/endpoints", headers=manage, json=HOOK)
    path = f"/v1/webhooks/endpoints/{created.json()['id']}/deliveries"
    cases = [
        ({}, 401, "unauthenticated"),
        (bearer("not-a-token"), 401, None),
        (bearer(tokens.for_agency(AGENCY, {"gateway:prefill"})), 403, "insufficient_scope"),
        (bearer(tokens.for_agency(OTHER, {"gateway:webhooks"})), 403, "wrong_agency"),
    ]
    for headers, status, code in cases:
        response = await client.get(path, headers=headers)
        assert response.status_code == status, (headers, response.text)
        if code is not None:
            assert response.json()["code"] == code
