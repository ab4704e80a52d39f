"""Webhook delivery: one attempt row each, backoff with jitter, dead letter, 410 disables."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from ikd_gateway.adapters.webhooks import DeliveryResult, generate_secret, sign
from ikd_gateway.domain.model import SourcePosition
from ikd_gateway.service_layer import handlers
from ikd_gateway.service_layer.unit_of_work import Endpoint
from ikd_gateway.service_layer.webhooks import Dispatcher, RetryPolicy
from ikd_shared.events.access_v1 import Channel, Outcome
from tests.support.gateway_factories import context, profile, verified
from tests.support.gateway_fakes import FakeUnitOfWork, Store


class ScriptedSender:
    def __init__(self, statuses: list[int | None]) -> None:
        self.statuses = statuses
        self.calls: list[dict[str, str]] = []

    async def post(self, url: str, request: Any) -> DeliveryResult:
        self.calls.append(request.headers)
        status = self.statuses.pop(0)
        return DeliveryResult(status, None if status else "ConnectError", 3.0)


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


async def setup(
    statuses: list[int | None], max_attempts: int = 3
) -> tuple[Store, Dispatcher, ScriptedSender, list[dict[str, Any]], Clock, Endpoint]:
    clock = Clock()
    ctx = context("polres-cirebon", clock=clock)
    store = Store()
    endpoint = Endpoint(
        id=uuid.uuid4(),
        url="https://polres.example/hook",
        service="skck",
        secret=generate_secret(),
        enabled=True,
    )
    store.endpoints[endpoint.id] = endpoint
    event = verified(profile(5), verified_at=clock.now)
    await handlers.apply_profile(
        FakeUnitOfWork(store),
        ctx,
        handlers.ProfileRecord("e1", event.pseudonym, event, SourcePosition(0, 0)),
    )
    dead: list[dict[str, Any]] = []

    async def dead_letter(record: dict[str, Any]) -> None:
        dead.append(record)

    async def allow(url: str) -> str:
        return url

    sender = ScriptedSender(statuses)
    dispatcher = Dispatcher(
        uow_factory=lambda: FakeUnitOfWork(store),
        ctx=ctx,
        sender=sender,
        signer=sign,
        check=allow,
        dead_letter=dead_letter,
        retry=RetryPolicy(max_attempts=max_attempts, base_seconds=1.0),
    )
    return store, dispatcher, sender, dead, clock, endpoint


async def drain(dispatcher: Dispatcher, clock: Clock, rounds: int) -> None:
    for _ in range(rounds):
        await dispatcher.run_once()
        clock.now += dt.timedelta(hours=2)


async def test_retries_back_off_then_dead_letter_after_the_last_attempt() -> None:
    store, dispatcher, sender, dead, clock, _ = await setup([500, None, 503])
    store.outbox.clear()
    await drain(dispatcher, clock, 5)
    assert [a.outcome for a in store.attempts] == ["retry", "retry", "dead"]
    assert [a.attempt for a in store.attempts] == [1, 2, 3]
    assert len({h["webhook-id"] for h in sender.calls}) == 1, "same webhook-id on every retry"
    [record] = dead
    assert record["reason"] == "dead"
    assert record["attempts"] == 3
    assert "fields" in record
    assert all(isinstance(f, str) for f in record["fields"])
    assert [e.outcome for e in store.outbox] == [Outcome.FAILED] * 3
    assert all(e.channel is Channel.WEBHOOK for e in store.outbox)


async def test_gone_disables_the_endpoint() -> None:
    store, dispatcher, _, dead, clock, endpoint = await setup([410])
    await drain(dispatcher, clock, 2)
    assert not store.endpoints[endpoint.id].enabled
    assert dead[0]["reason"] == "gone"


async def test_delivered_once_with_an_access_event() -> None:
    store, dispatcher, sender, dead, clock, _ = await setup([200])
    store.outbox.clear()
    await drain(dispatcher, clock, 3)
    assert len(sender.calls) == 1
    assert not dead
    [event] = store.outbox
    assert (event.channel, event.outcome, event.service) == (
        Channel.WEBHOOK,
        Outcome.SERVED,
        "skck",
    )


def test_backoff_grows_exponentially_with_jitter() -> None:
    import random

    policy = RetryPolicy(max_attempts=10, base_seconds=2.0, max_seconds=600.0)
    rng = random.Random(7)
    delays = [policy.delay(n, rng).total_seconds() for n in range(1, 11)]
    for n, delay in enumerate(delays, start=1):
        ceiling = min(600.0, 2.0 * 2 ** (n - 1))
        assert ceiling / 2 <= delay <= ceiling
    assert len({round(d, 6) for d in delays}) == len(delays), "jittered"
