"""Webhook delivery: one attempt row each, backoff with jitter, dead letter, 410 disables."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from ikd_gateway.adapters.webhooks import DeliveryResult, generate_secret, sign
from ikd_gateway.domain.model import SourcePosition
from ikd_gateway.service_layer.stream import ProfileRecord, apply_profile
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
    await apply_profile(
        FakeUnitOfWork(store),
        ctx,
        ProfileRecord("e1", event.pseudonym, event, SourcePosition(0, 0)),
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


class UnreachableSender:
    """No connection ever opens (connection refused)."""

    def __init__(self) -> None:
        self.calls = 0

    async def post(self, url: str, request: Any) -> DeliveryResult:
        self.calls += 1
        return DeliveryResult(None, "ConnectError: refused", 1.0, disclosed=False)


async def test_an_endpoint_failing_for_the_whole_period_is_disabled_and_its_agency_told() -> None:
    store, dispatcher, _, dead, clock, endpoint = await setup([], max_attempts=30)
    sender = UnreachableSender()
    dispatcher.sender = sender
    dispatcher.disable_after = dt.timedelta(hours=5)
    store.outbox.clear()
    await drain(dispatcher, clock, 2)  # 2 h apart: failing, not yet for 5 h
    assert store.endpoints[endpoint.id].enabled
    await drain(dispatcher, clock, 4)
    assert sender.calls == 4, "attempts at 0, 2 and 4 h failed; the one at 6 h disabled it"
    disabled = store.endpoints[endpoint.id]
    assert not disabled.enabled
    assert disabled.disabled_reason is not None
    assert disabled.disabled_reason.startswith("disabled automatically")
    logged = sorted(store.attempts, key=lambda a: a.attempt)
    assert [a.outcome for a in logged] == ["retry", "retry", "retry", "disabled"]
    assert "disabled automatically" in (logged[-1].error or "")
    assert [m.status for m in store.messages.values()] == ["dead"]
    assert dead[0]["reason"] == "disabled"
    assert store.outbox == [], "no connection opened: nothing was disclosed, no access event"

    # A disabled endpoint is offered no new message.
    event = verified(profile(5), version=2, verified_at=clock.now)
    await apply_profile(
        FakeUnitOfWork(store),
        dispatcher.ctx,
        ProfileRecord("e2", event.pseudonym, event, SourcePosition(0, 1)),
    )
    assert len(store.messages) == 1


async def test_a_success_ends_the_run_of_failures() -> None:
    store, dispatcher, _, _, clock, endpoint = await setup([500, 500, 200], max_attempts=30)
    dispatcher.disable_after = dt.timedelta(hours=3)
    await drain(dispatcher, clock, 2)
    assert store.endpoints[endpoint.id].failing_since is not None
    await drain(dispatcher, clock, 2)
    assert store.endpoints[endpoint.id].enabled
    assert store.endpoints[endpoint.id].failing_since is None


async def test_a_failed_attempt_is_an_access_only_if_the_body_may_have_been_sent() -> None:
    for result, audited in (
        (DeliveryResult(None, "ConnectError: refused", 1.0, disclosed=False), False),
        (DeliveryResult(None, "ReadTimeout: timed out", 1.0, disclosed=True), True),
        (DeliveryResult(503, None, 1.0), True),
    ):
        store, dispatcher, _, _, clock, _ = await setup([])

        class Fixed:
            async def post(self, url: str, request: Any, result: Any = result) -> Any:
                return result

        dispatcher.sender = Fixed()
        store.outbox.clear()
        await drain(dispatcher, clock, 1)
        assert len(store.attempts) == 1
        assert [e.outcome for e in store.outbox] == ([Outcome.FAILED] if audited else []), result


async def test_the_sender_tells_a_connection_that_never_opened_from_a_lost_answer() -> None:
    import httpx

    from ikd_gateway.adapters.webhooks import HttpSender

    request = sign(generate_secret(), "msg", dt.datetime.now(dt.UTC), b"{}")
    for error, disclosed in (
        (httpx.ConnectError("refused"), False),
        (httpx.ConnectTimeout("connect timed out"), False),
        (httpx.ReadTimeout("no answer"), True),
        (httpx.RemoteProtocolError("closed mid-answer"), True),
    ):

        def fail(_: httpx.Request, error: Exception = error) -> httpx.Response:
            raise error

        sender = HttpSender(transport=httpx.MockTransport(fail))
        result = await sender.post("https://receiver.example/hook", request)
        await sender.close()
        assert (result.status_code, result.disclosed) == (None, disclosed), error
