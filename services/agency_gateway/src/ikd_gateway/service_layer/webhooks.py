"""Webhook use cases: register endpoints, deliver due messages with retries and a dead letter.

Retries are scheduled in the database (`webhook_messages.next_attempt_at`), so they survive
restarts: exponential backoff with jitter, one `webhook_attempts` row per attempt, a dead-letter
record after the last attempt, and 410 Gone disables the endpoint. The body is built at send time
from the current view row and consents, so a purged citizen or a revoked consent is never sent.
A test event and a redelivery are queued messages too, and take the same path.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ikd_gateway import metrics
from ikd_gateway.domain import errors
from ikd_gateway.domain.model import answer_fields
from ikd_gateway.service_layer.context import GatewayContext, UnitOfWorkFactory
from ikd_gateway.service_layer.unit_of_work import Attempt, Endpoint, UnitOfWork, WebhookMessage
from ikd_shared import codec, telemetry
from ikd_shared.events.access_v1 import AccessRecorded, Channel, Outcome
from ikd_shared.policy import ServicePolicy

log = logging.getLogger(__name__)

EVENT_NAMES = {
    "id.go.mpp.profile.verified.v1": "citizen.profile.verified",
    "id.go.mpp.profile.updated.v1": "citizen.profile.updated",
    # A new relationship (a service request, a registration) made more fields visible.
    "id.go.mpp.profile.relationships.v1": "citizen.profile.shared",
}
FALLBACK_NAME = "citizen.profile.changed"
TEST_EVENT = "webhook.test"
"""A test message's event type (and its `type`): it carries no citizen and discloses nothing."""


class Sender(Protocol):
    async def post(self, url: str, request: Any) -> Any: ...


class Signer(Protocol):
    def __call__(
        self, secret: str, message_id: str, timestamp: dt.datetime, body: bytes, *rolling: str
    ) -> Any: ...


TargetCheck = Callable[[str], Awaitable[str]]
DeadLetter = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 8
    base_seconds: float = 2.0
    max_seconds: float = 3600.0

    def delay(self, attempt: int, rng: random.Random | None = None) -> dt.timedelta:
        """Exponential backoff with equal jitter: half fixed, half random."""
        ceiling = min(self.max_seconds, self.base_seconds * 2 ** (attempt - 1))
        jitter = (rng or random).uniform(0, ceiling / 2)
        return dt.timedelta(seconds=ceiling / 2 + jitter)


async def register_endpoint(
    uow_factory: UnitOfWorkFactory,
    ctx: GatewayContext,
    *,
    url: str,
    service: str,
    description: str | None,
    created_by: str,
    check: TargetCheck,
    secret: str,
    max_endpoints: int,
) -> Endpoint:
    if ctx.agency.service(service) is None:
        raise errors.ServiceNotAllowed(
            f"service {service!r} is not one of {ctx.agency.code}'s services"
        )
    try:
        await check(url)
    except ValueError as error:
        if getattr(error, "code", None) == errors.WebhookHostNotAllowed.code:
            raise errors.WebhookHostNotAllowed(str(error)) from None
        raise errors.WebhookUrlNotAllowed(str(error)) from None
    endpoint = Endpoint(
        id=uuid.uuid4(),
        url=url,
        service=service,
        secret=secret,
        enabled=True,
        description=description,
        created_at=ctx.clock(),
    )
    async with uow_factory() as uow:
        # One registration at a time counts, so two at once cannot both take the last place.
        await uow.webhooks.lock_endpoints()
        if len(await uow.webhooks.endpoints(enabled_only=True)) >= max_endpoints:
            raise errors.WebhookEndpointLimit(
                f"{ctx.agency.code} has {max_endpoints} enabled endpoints, the most allowed; "
                "disable one first"
            )
        await uow.webhooks.add_endpoint(endpoint, created_by)
    return endpoint


async def send_test_event(
    uow_factory: UnitOfWorkFactory, ctx: GatewayContext, endpoint_id: uuid.UUID
) -> WebhookMessage:
    """Queue a `webhook.test` message for the endpoint: the dispatcher signs and sends it, with
    retries and a logged attempt, like any other."""
    message = WebhookMessage(
        id=uuid.uuid4(),
        endpoint_id=endpoint_id,
        # A test carries no citizen: the empty pseudonym matches no view row.
        pseudonym="",
        version=0,
        event_type=TEST_EVENT,
        changed_fields=(),
    )
    async with uow_factory() as uow:
        _usable(await uow.webhooks.endpoint(endpoint_id))
        await uow.webhooks.enqueue(message)
    return message


async def redeliver(
    uow_factory: UnitOfWorkFactory,
    ctx: GatewayContext,
    endpoint_id: uuid.UUID,
    message_id: uuid.UUID,
) -> WebhookMessage:
    """Schedule one more attempt of a message that is no longer pending, with its webhook-id.

    The body is built at send time from what the agency holds then, never from what was sent
    before: if the agency no longer holds the citizen's fields for the endpoint's service, the
    redelivery is refused (NotHeld) rather than resending stale data.
    """
    async with uow_factory() as uow:
        endpoint = _usable(await uow.webhooks.endpoint(endpoint_id))
        message = await uow.webhooks.message(message_id)
        if message is None or message.endpoint_id != endpoint.id:
            raise errors.MessageNotFound("no such message for this endpoint")
        if message.status == "pending":
            raise errors.MessagePending("the message is still scheduled: its next attempt comes")
        if message.event_type != TEST_EVENT and not await _held_fields(
            uow, ctx, endpoint, message.pseudonym
        ):
            raise errors.NotHeld(
                f"{ctx.agency.code} no longer holds this citizen's fields for service "
                f"{endpoint.service}: nothing to redeliver",
                service=endpoint.service,
                pseudonym=message.pseudonym,
            )
        await uow.webhooks.set_status(
            message.id, "pending", attempts=message.attempts, next_attempt_at=ctx.clock()
        )
    return message


MAX_GRACE = dt.timedelta(days=7)


@dataclass(frozen=True, slots=True)
class Rotated:
    secret: str
    previous_secret_expires_at: dt.datetime


async def rotate_secret(
    uow_factory: UnitOfWorkFactory,
    ctx: GatewayContext,
    endpoint_id: uuid.UUID,
    *,
    secret: str,
    grace: dt.timedelta,
) -> Rotated:
    """Give the endpoint a new secret. Until `grace` has passed deliveries carry a signature
    with each secret, so the receiver verifies with either while it switches; then only the
    new one. Rotating again within a grace period drops the oldest secret at once."""
    if not dt.timedelta(0) <= grace <= MAX_GRACE:
        raise ValueError(f"grace must be between 0 and {MAX_GRACE}")
    expires_at = ctx.clock() + grace
    async with uow_factory() as uow:
        _usable(await uow.webhooks.endpoint(endpoint_id))
        await uow.webhooks.rotate_secret(endpoint_id, secret, expires_at if grace else None)
    return Rotated(secret=secret, previous_secret_expires_at=expires_at)


def _usable(endpoint: Endpoint | None) -> Endpoint:
    if endpoint is None:
        raise errors.EndpointNotFound("no such endpoint")
    if not endpoint.enabled:
        raise errors.EndpointDisabled("the endpoint is disabled")
    return endpoint


async def _held_fields(
    uow: UnitOfWork, ctx: GatewayContext, endpoint: Endpoint, pseudonym: str
) -> dict[str, Any] | None:
    """The fields of the citizen the endpoint's service may be sent now (None: none)."""
    service = ctx.agency.service(endpoint.service)
    view = await uow.views.get(pseudonym)
    if service is None or view is None or view.erased or view.verified_at is None:
        return None
    consent_set = await uow.consents.get(pseudonym)
    return answer_fields(service, consent_set.consents if consent_set else (), view, ctx.clock())


def webhook_test_body(ctx: GatewayContext, message: WebhookMessage, now: dt.datetime) -> bytes:
    return codec.dumps(
        {
            "type": TEST_EVENT,
            "timestamp": now,
            "data": {
                "agency": ctx.agency.code,
                "endpoint_id": str(message.endpoint_id),
                "message": "a test event: no citizen data",
            },
        }
    )


def webhook_body(
    ctx: GatewayContext,
    message: WebhookMessage,
    service_code: str,
    fields: dict[str, Any],
    version: int,
    verified_at: dt.datetime,
    now: dt.datetime,
) -> bytes:
    service = ctx.agency.service(service_code)
    assert service is not None
    return codec.dumps(
        {
            "type": EVENT_NAMES.get(message.event_type, FALLBACK_NAME),
            "timestamp": now,
            "data": {
                "agency": ctx.agency.code,
                "service": service.code,
                "purpose": service.purpose.code,
                "legal_basis": service.legal_basis.value,
                "pseudonym": message.pseudonym,
                "version": version,
                "verified_at": verified_at,
                "changed_fields": sorted(set(message.changed_fields) & set(fields)),
                "fields": fields,
            },
        }
    )


@dataclass
class Dispatcher:
    uow_factory: UnitOfWorkFactory
    ctx: GatewayContext
    sender: Sender
    signer: Signer
    check: TargetCheck
    dead_letter: DeadLetter
    retry: RetryPolicy
    lease: dt.timedelta = dt.timedelta(seconds=60)
    disable_after: dt.timedelta = dt.timedelta(days=5)
    """An endpoint whose attempts all failed for this long is disabled."""

    async def run_once(self, limit: int = 50) -> int:
        """Attempt every due message once; return how many were attempted."""
        async with self.uow_factory() as uow:
            claimed = await uow.webhooks.claim_due(self.ctx.clock(), limit, self.lease)
        for message in claimed:
            try:
                with telemetry.webhook_delivery(message.id, message.endpoint_id):
                    await self.deliver(message)
            except Exception:
                log.exception("webhook delivery %s failed unexpectedly", message.id)
        return len(claimed)

    async def deliver(self, message: WebhookMessage) -> str:
        if message.event_type == TEST_EVENT:
            return await self._deliver_test(message)
        now = self.ctx.clock()
        async with self.uow_factory() as uow:
            endpoint = await uow.webhooks.endpoint(message.endpoint_id)
            view = await uow.views.get(message.pseudonym)
            consent_set = await uow.consents.get(message.pseudonym)
            service = self.ctx.agency.service(endpoint.service) if endpoint else None
            fields = None
            if endpoint and endpoint.enabled and service and view and not view.erased:
                fields = answer_fields(
                    service, consent_set.consents if consent_set else (), view, now
                )
            if (
                not fields
                or endpoint is None
                or service is None
                or view is None
                or view.verified_at is None
            ):
                await uow.webhooks.set_status(message.id, "cancelled", attempts=message.attempts)
                return "cancelled"
        body = webhook_body(
            self.ctx, message, service.code, fields, view.version, view.verified_at, now
        )
        return await self._send(message, endpoint, body, now, service, fields)

    async def _deliver_test(self, message: WebhookMessage) -> str:
        now = self.ctx.clock()
        async with self.uow_factory() as uow:
            endpoint = await uow.webhooks.endpoint(message.endpoint_id)
            if endpoint is None or not endpoint.enabled:
                await uow.webhooks.set_status(message.id, "cancelled", attempts=message.attempts)
                return "cancelled"
        body = webhook_test_body(self.ctx, message, now)
        return await self._send(message, endpoint, body, now, None, {})

    async def _send(
        self,
        message: WebhookMessage,
        endpoint: Endpoint,
        body: bytes,
        now: dt.datetime,
        service: ServicePolicy | None,
        fields: dict[str, Any],
    ) -> str:
        """One signed attempt, logged; `service` None for a test message (no access event,
        no dead letter: it carries nothing to record or to replay)."""
        attempt = message.attempts + 1
        try:
            await self.check(endpoint.url)
            secret, *rolling = endpoint.signing_secrets(now)
            result = await self.sender.post(
                endpoint.url, self.signer(secret, str(message.id), now, body, *rolling)
            )
            status_code, error, duration = result.status_code, result.error, result.duration_ms
            disclosed = status_code is not None or getattr(result, "disclosed", True)
        except ValueError as unsafe:
            status_code, error, duration = None, f"unsafe target: {unsafe}", 0.0
            disclosed = False
        delivered = status_code is not None and 200 <= status_code < 300
        if delivered:
            outcome = "delivered"
        elif status_code == 410:
            outcome = "gone"
        elif attempt >= self.retry.max_attempts:
            outcome = "dead"
        else:
            outcome = "retry"
        disabled_reason = ""
        async with self.uow_factory() as uow:
            if delivered:
                await uow.webhooks.endpoint_succeeded(endpoint.id)
            elif outcome != "gone":
                failing_since = await uow.webhooks.endpoint_failed(endpoint.id, now)
                if now - failing_since >= self.disable_after:
                    outcome = "disabled"
                    disabled_reason = (
                        "disabled automatically: every delivery failed since "
                        f"{failing_since.isoformat(timespec='seconds')}"
                    )
                    error = f"{error}; {disabled_reason}" if error else disabled_reason
            next_retry_at = now + self.retry.delay(attempt) if outcome == "retry" else None
            await uow.webhooks.record_attempt(
                Attempt(
                    message_id=message.id,
                    endpoint_id=endpoint.id,
                    attempt=attempt,
                    status_code=status_code,
                    error=error,
                    duration_ms=duration,
                    outcome=outcome,
                    next_retry_at=next_retry_at,
                )
            )
            # A connection that never opened disclosed nothing: no access to record.
            if disclosed and service is not None:
                await uow.outbox.add(self._access(message, service, fields, status_code))
            if outcome == "delivered":
                await uow.webhooks.set_status(message.id, "delivered", attempts=attempt)
            elif outcome == "retry":
                await uow.webhooks.set_status(
                    message.id,
                    "pending",
                    attempts=attempt,
                    next_attempt_at=next_retry_at,
                )
            else:
                await uow.webhooks.set_status(message.id, "dead", attempts=attempt)
                if outcome == "gone":
                    await uow.webhooks.disable_endpoint(endpoint.id, "receiver answered 410 Gone")
                elif outcome == "disabled":
                    await uow.webhooks.disable_endpoint(endpoint.id, disabled_reason)
                if service is not None:
                    await self.dead_letter(
                        {
                            "message_id": str(message.id),
                            "endpoint_id": str(endpoint.id),
                            "agency": self.ctx.agency.code,
                            "service": service.code,
                            "pseudonym": message.pseudonym,
                            "version": message.version,
                            "event_type": message.event_type,
                            "fields": sorted(fields),
                            "attempts": attempt,
                            "last_status": status_code,
                            "last_error": error,
                            "reason": outcome,
                        }
                    )
        if outcome == "delivered":
            metrics.WEBHOOK_DELIVERED.inc()
        elif outcome == "retry":
            metrics.WEBHOOK_RETRIES.inc()
        else:
            metrics.WEBHOOK_DEAD_LETTERS.labels(outcome).inc()
        log.info(
            "webhook %s attempt %d -> %s (%s)", message.id, attempt, outcome, status_code or error
        )
        return outcome

    def _access(
        self,
        message: WebhookMessage,
        service: ServicePolicy,
        fields: dict[str, Any],
        status_code: int | None,
    ) -> AccessRecorded:
        delivered = status_code is not None and 200 <= status_code < 300
        return self.ctx.access(
            service=service.code,
            pseudonym=message.pseudonym,
            fields=sorted(fields),
            purpose=service.purpose.code,
            legal_basis=service.legal_basis,
            channel=Channel.WEBHOOK,
            outcome=Outcome.SERVED if delivered else Outcome.FAILED,
            reason=None if delivered else (f"http_{status_code}" if status_code else "no_answer"),
            correlation_id=str(message.id),
        )
