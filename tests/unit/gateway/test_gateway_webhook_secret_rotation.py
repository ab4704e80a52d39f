"""Rotating an endpoint's secret: during the grace period deliveries carry a signature with the
new and with the replaced secret, each verifying alone; after it only the new one verifies."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import replace
from typing import Any

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from ikd_gateway.adapters.webhooks import DeliveryResult, generate_secret, sign
from ikd_gateway.domain import errors
from ikd_gateway.service_layer.unit_of_work import Endpoint
from ikd_gateway.service_layer.webhooks import (
    Dispatcher,
    RetryPolicy,
    rotate_secret,
    send_test_event,
)
from tests.support.gateway_factories import context
from tests.support.gateway_fakes import FakeUnitOfWork, Store


class Capturing:
    def __init__(self) -> None:
        self.sent: list[tuple[dict[str, str], bytes]] = []

    async def post(self, url: str, request: Any) -> DeliveryResult:
        self.sent.append((request.headers, request.body))
        return DeliveryResult(200, None, 1.0)


async def test_deliveries_carry_both_signatures_during_the_grace_period_only() -> None:
    # The receiver checks timestamps against the real time: the clock stays near it.
    clock = [dt.datetime.now(dt.UTC)]
    ctx = context("polres-cirebon", clock=lambda: clock[0])
    store = Store()
    old = generate_secret()
    endpoint = Endpoint(uuid.uuid4(), "https://polres.example/hook", "skck", old, True)
    store.endpoints[endpoint.id] = endpoint
    sender = Capturing()

    async def allow(url: str) -> str:
        return url

    async def dead_letter(record: dict[str, Any]) -> None:
        raise AssertionError(record)

    dispatcher = Dispatcher(
        uow_factory=lambda: FakeUnitOfWork(store),
        ctx=ctx,
        sender=sender,
        signer=sign,
        check=allow,
        dead_letter=dead_letter,
        retry=RetryPolicy(max_attempts=1),
    )

    async def deliver() -> tuple[dict[str, str], bytes]:
        await send_test_event(lambda: FakeUnitOfWork(store), ctx, endpoint.id)
        assert await dispatcher.run_once() == 1
        return sender.sent[-1]

    rotated = await rotate_secret(
        lambda: FakeUnitOfWork(store),
        ctx,
        endpoint.id,
        secret=generate_secret(),
        grace=dt.timedelta(seconds=60),
    )
    new = rotated.secret
    assert new != old
    assert rotated.previous_secret_expires_at == clock[0] + dt.timedelta(seconds=60)

    headers, body = await deliver()
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (new, old):
        assert Webhook(secret).verify(body, headers)["type"] == "webhook.test"

    clock[0] += dt.timedelta(seconds=60)
    headers, body = await deliver()
    assert " " not in headers["webhook-signature"]
    assert Webhook(new).verify(body, headers)["type"] == "webhook.test"
    with pytest.raises(WebhookVerificationError):
        Webhook(old).verify(body, headers)


async def test_no_grace_drops_the_old_secret_at_once_and_a_disabled_endpoint_is_refused() -> None:
    ctx = context("polres-cirebon")
    store = Store()
    endpoint = Endpoint(uuid.uuid4(), "https://polres.example/hook", "skck", "whsec_a", True)
    store.endpoints[endpoint.id] = endpoint

    def uow() -> FakeUnitOfWork:
        return FakeUnitOfWork(store)

    await rotate_secret(uow, ctx, endpoint.id, secret="whsec_b", grace=dt.timedelta(0))
    rotated = store.endpoints[endpoint.id]
    assert rotated.signing_secrets(ctx.clock()) == ("whsec_b",)
    assert (rotated.previous_secret, rotated.previous_secret_expires_at) == (None, None)

    with pytest.raises(errors.EndpointNotFound):
        await rotate_secret(uow, ctx, uuid.uuid4(), secret="whsec_c", grace=dt.timedelta(0))
    store.endpoints[endpoint.id] = replace(store.endpoints[endpoint.id], enabled=False)
    with pytest.raises(errors.EndpointDisabled):
        await rotate_secret(uow, ctx, endpoint.id, secret="whsec_c", grace=dt.timedelta(0))
    assert store.endpoints[endpoint.id].secret == "whsec_b"
