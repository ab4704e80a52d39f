"""The webhook payloads in the gateway's OpenAPI document are what the dispatcher sends; a test
event goes through the normal delivery path; a redelivery resends only what is still held."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import replace
from typing import Any

import jsonschema
import pytest

from ikd_gateway.adapters.webhooks import DeliveryResult, generate_secret, sign
from ikd_gateway.domain import errors
from ikd_gateway.domain.model import SourcePosition
from ikd_gateway.entrypoints.webhook_payloads import ProfileEvent, WebhookTestEvent
from ikd_gateway.service_layer.stream import ProfileRecord, apply_profile
from ikd_gateway.service_layer.unit_of_work import Endpoint
from ikd_gateway.service_layer.webhooks import (
    EVENT_NAMES,
    TEST_EVENT,
    Dispatcher,
    RetryPolicy,
    redeliver,
    send_test_event,
)
from ikd_shared.events.access_v1 import Channel, Outcome
from tests.support.gateway_factories import context, profile, verified
from tests.support.gateway_fakes import FakeUnitOfWork, Store
from tests.unit.gateway.test_gateway_webhook_signing import spec_verify
from tests.unit.shared.test_shared_nik_never_in_url import apps


class Capturing:
    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.sent: list[tuple[dict[str, str], bytes]] = []

    async def post(self, url: str, request: Any) -> DeliveryResult:
        self.sent.append((request.headers, request.body))
        return DeliveryResult(self.statuses.pop(0), None, 1.0)


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


class Setup:
    def __init__(self, statuses: list[int]) -> None:
        self.clock = Clock()
        self.ctx = context("polres-cirebon", clock=self.clock)
        self.store = Store()
        self.endpoint = Endpoint(
            id=uuid.uuid4(),
            url="https://polres.example/hook",
            service="skck",
            secret=generate_secret(),
            enabled=True,
        )
        self.store.endpoints[self.endpoint.id] = self.endpoint
        self.sender = Capturing(statuses)
        self.dead: list[dict[str, Any]] = []

        async def dead_letter(record: dict[str, Any]) -> None:
            self.dead.append(record)

        async def allow(url: str) -> str:
            return url

        self.dispatcher = Dispatcher(
            uow_factory=self.uow,
            ctx=self.ctx,
            sender=self.sender,
            signer=sign,
            check=allow,
            dead_letter=dead_letter,
            retry=RetryPolicy(max_attempts=2, base_seconds=1.0),
        )

    def uow(self) -> FakeUnitOfWork:
        return FakeUnitOfWork(self.store)

    async def citizen(self) -> str:
        event = verified(profile(7), verified_at=self.clock.now)
        await apply_profile(
            self.uow(), self.ctx, ProfileRecord("e7", event.pseudonym, event, SourcePosition(0, 0))
        )
        return event.pseudonym

    async def drain(self) -> None:
        for _ in range(3):
            await self.dispatcher.run_once()
            self.clock.now += dt.timedelta(hours=1)


def documented(name: str) -> tuple[dict[str, Any], set[str]]:
    """The webhook's body schema (components inlined) and its header names, from the doc."""
    document = apps()["gateway"].openapi()
    operation = document["webhooks"][name]["post"]
    ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    schema = {"$ref": ref, "components": document["components"]}
    headers = {p["name"] for p in operation["parameters"] if p["in"] == "header"}
    return schema, headers


async def test_documented_payloads_and_headers_are_what_is_sent() -> None:
    setup = Setup([200, 200])
    await setup.citizen()
    await send_test_event(setup.uow, setup.ctx, setup.endpoint.id)
    await setup.drain()
    (profile_headers, profile_body), (test_headers, test_body) = sorted(
        setup.sender.sent, key=lambda sent: TEST_EVENT.encode() in sent[1]
    )
    for headers, body in ((profile_headers, profile_body), (test_headers, test_body)):
        payload = json.loads(body)
        schema, header_names = documented(payload["type"])
        jsonschema.validate(payload, schema)
        assert header_names == {"webhook-id", "webhook-timestamp", "webhook-signature"}
        assert header_names <= set(headers)
        assert spec_verify(setup.endpoint.secret, headers, body)
    ProfileEvent.model_validate_json(profile_body)
    WebhookTestEvent.model_validate_json(test_body)
    assert json.loads(profile_body)["type"] in EVENT_NAMES.values()
    # The models refuse what the gateway does not send: the check above can fail.
    payload = json.loads(profile_body)
    payload["data"]["nik"] = "3209010101900001"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(payload, documented(payload["type"])[0])


def test_every_event_the_gateway_names_is_documented() -> None:
    webhooks = apps()["gateway"].openapi()["webhooks"]
    assert set(EVENT_NAMES.values()) | {TEST_EVENT} <= set(webhooks)


async def test_a_test_event_is_signed_logged_and_discloses_nothing() -> None:
    setup = Setup([503, 200])
    message = await send_test_event(setup.uow, setup.ctx, setup.endpoint.id)
    await setup.drain()
    assert [a.outcome for a in setup.store.attempts] == ["retry", "delivered"]
    assert {a.message_id for a in setup.store.attempts} == {message.id}
    assert [json.loads(body)["type"] for _, body in setup.sender.sent] == [TEST_EVENT] * 2
    assert {h["webhook-id"] for h, _ in setup.sender.sent} == {str(message.id)}
    assert setup.store.outbox == [], "a test event discloses no citizen data"
    assert setup.dead == []


async def test_a_test_event_for_an_unknown_or_disabled_endpoint_is_refused() -> None:
    setup = Setup([])
    with pytest.raises(errors.EndpointNotFound):
        await send_test_event(setup.uow, setup.ctx, uuid.uuid4())
    setup.store.endpoints[setup.endpoint.id] = replace(setup.endpoint, enabled=False)
    with pytest.raises(errors.EndpointDisabled):
        await send_test_event(setup.uow, setup.ctx, setup.endpoint.id)
    assert setup.store.messages == {}


async def test_redelivery_resends_the_held_fields_with_the_same_webhook_id() -> None:
    setup = Setup([200, 200])
    await setup.citizen()
    await setup.drain()
    [message] = setup.store.messages.values()
    setup.store.outbox.clear()
    again = await redeliver(setup.uow, setup.ctx, setup.endpoint.id, message.id)
    assert again.id == message.id
    await setup.drain()
    assert [a.attempt for a in setup.store.attempts] == [1, 2]
    assert [a.outcome for a in setup.store.attempts] == ["delivered", "delivered"]
    assert {h["webhook-id"] for h, _ in setup.sender.sent} == {str(message.id)}
    [access] = setup.store.outbox  # the resend is an access like any push
    assert (access.channel, access.outcome) == (Channel.WEBHOOK, Outcome.SERVED)


async def test_redelivery_of_a_citizen_no_longer_held_is_refused() -> None:
    setup = Setup([200])
    pseudonym = await setup.citizen()
    await setup.drain()
    [message] = setup.store.messages.values()
    del setup.store.views[pseudonym]  # purged since
    with pytest.raises(errors.NotHeld) as refused:
        await redeliver(setup.uow, setup.ctx, setup.endpoint.id, message.id)
    assert refused.value.pseudonym == pseudonym
    assert setup.store.messages[message.id].status == "delivered"
    await setup.drain()
    assert len(setup.sender.sent) == 1, "nothing resent"


async def test_redelivery_refusals() -> None:
    setup = Setup([])
    await setup.citizen()
    [message] = setup.store.messages.values()
    with pytest.raises(errors.MessagePending):  # not yet attempted
        await redeliver(setup.uow, setup.ctx, setup.endpoint.id, message.id)
    with pytest.raises(errors.MessageNotFound):
        await redeliver(setup.uow, setup.ctx, setup.endpoint.id, uuid.uuid4())
    other = replace(setup.endpoint, id=uuid.uuid4())
    setup.store.endpoints[other.id] = other
    setup.store.messages[message.id] = replace(message, status="delivered")
    with pytest.raises(errors.MessageNotFound):  # another endpoint's message
        await redeliver(setup.uow, setup.ctx, other.id, message.id)
    setup.store.endpoints[setup.endpoint.id] = replace(setup.endpoint, enabled=False)
    with pytest.raises(errors.EndpointDisabled):
        await redeliver(setup.uow, setup.ctx, setup.endpoint.id, message.id)
