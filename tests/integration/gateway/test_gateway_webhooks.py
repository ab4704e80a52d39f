"""Webhooks end to end on the real database and broker: register through the API, deliver
signed to the example receiver, log every attempt, dead-letter and disable on 410."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from ikd_gateway.adapters.webhooks import HttpSender
from ikd_gateway.domain.model import SourcePosition
from ikd_gateway.entrypoints.api import create_app
from ikd_gateway.entrypoints.receiver import create_receiver_app
from ikd_gateway.service_layer.stream import ProfileRecord, apply_profile
from ikd_shared.events.topics import WEBHOOK_DEAD_LETTER
from tests.support.gateway import read_topic, running_gateway
from tests.support.gateway_factories import POLICY, Tokens, profile, verified
from tests.unit.gateway.test_gateway_webhook_signing import (
    spec_verify,  # the from-the-spec verifier
)

AGENCY = "dinsos-cirebon"


class Recording(httpx.AsyncBaseTransport):
    """Sends to the example receiver app, or answers 410 for the 'gone' host."""

    def __init__(self) -> None:
        self.inner: httpx.ASGITransport | None = None
        self.requests: list[httpx.Request] = []

    def to(self, receiver: Any) -> None:
        self.inner = httpx.ASGITransport(app=receiver)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.requests.append(request)
        if request.url.host == "gone.example":
            return httpx.Response(410)
        assert self.inner is not None, "to(receiver) first"
        return await self.inner.handle_async_request(request)


async def test_signed_delivery_attempt_log_and_gone_endpoint(
    gateway_db: Any,
    db: asyncpg.Connection,
    topic_prefix: str,
    kafka_bootstrap: str,
    tokens: Tokens,
    tmp_path: Path,
) -> None:
    transport = Recording()
    sender = HttpSender(transport=transport)
    async with running_gateway(
        AGENCY, gateway_db, topic_prefix, tokens, tmp_path, sender=sender
    ) as gateway:
        app = create_app(gateway.settings, runtime=gateway)
        manage = {"authorization": f"Bearer {tokens.for_agency(AGENCY, {'gateway:webhooks'})}"}
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gw"
        ) as client:
            refused = await client.post(
                "/v1/webhooks/endpoints",
                headers={"authorization": f"Bearer {tokens.for_agency(AGENCY)}"},
                json={"url": "http://127.0.0.1:18200/webhooks/ikd", "service": "social-assistance"},
            )
            assert (refused.status_code, refused.json()["code"]) == (403, "insufficient_scope")
            good = await client.post(
                "/v1/webhooks/endpoints",
                headers=manage,
                json={"url": "http://127.0.0.1:18200/webhooks/ikd", "service": "social-assistance"},
            )
            assert good.status_code == 201, good.text
            gone = await client.post(
                "/v1/webhooks/endpoints",
                headers=manage,
                json={"url": "http://gone.example/hook", "service": "disability-card"},
            )
            assert gone.status_code == 201
            other = await client.post(
                "/v1/webhooks/endpoints",
                headers=manage,
                json={"url": "http://127.0.0.1:18200/webhooks/ikd", "service": "skck"},
            )
            assert (other.status_code, other.json()["code"]) == (403, "service_not_allowed")
        secret = good.json()["secret"]

        citizen = profile(41)
        event = verified(citizen, 1, dt.datetime.now(dt.UTC))
        await apply_profile(
            gateway.uow(),
            gateway.ctx,
            ProfileRecord("evt-41", event.pseudonym, event, SourcePosition(0, 0)),
        )

        receiver = create_receiver_app(secret)
        transport.to(receiver)
        assert await gateway.dispatcher.run_once() == 2

        delivered = [r for r in transport.requests if r.url.host == "127.0.0.1"]
        [request] = delivered
        headers = {k: v for k, v in request.headers.items()}
        assert spec_verify(secret, headers, request.content)
        body = json.loads(request.content)
        service = POLICY.agency(AGENCY).service("social-assistance")
        assert service is not None
        assert set(body["data"]["fields"]) == set(service.fields)
        assert body["data"]["pseudonym"] == event.pseudonym
        assert len(receiver.state.receiver.processed) == 1

        attempts = await db.fetch("SELECT outcome, status_code FROM webhook_attempts ORDER BY id")
        assert sorted((a["outcome"], a["status_code"]) for a in attempts) == [
            ("delivered", 200),
            ("gone", 410),
        ]
        endpoints = {
            r["service"]: r["enabled"]
            for r in await db.fetch("SELECT service, enabled FROM webhook_endpoints")
        }
        assert endpoints == {"social-assistance": True, "disability-card": False}
        statuses = sorted(
            r["status"] for r in await db.fetch("SELECT status FROM webhook_messages")
        )
        assert statuses == ["dead", "delivered"]
        outbox = [
            json.loads(r["payload"]) if isinstance(r["payload"], str) else r["payload"]
            for r in await db.fetch("SELECT payload FROM access_outbox ORDER BY position")
        ]
        webhook_events = [(e["outcome"], e["reason"]) for e in outbox if e["channel"] == "webhook"]
        assert sorted(webhook_events, key=str) == sorted(
            [("served", None), ("failed", "http_410")], key=str
        )
        [dead] = await read_topic(kafka_bootstrap, WEBHOOK_DEAD_LETTER.full_name(topic_prefix), 1)
        record = json.loads(dead.value)
        assert record["reason"] == "gone"
        assert record["service"] == "disability-card"
        assert isinstance(record["fields"], list), "field names, never values"
    await sender.close()
