"""The agency's HTTP API: prefill and webhook endpoint management (FastAPI, OpenAPI at /docs).

Only the agency this gateway serves may call it: a token from the identity service with
audience `ikd-gateway`, the agency's code in its `agency` claim and the route's scope. Every
answer and every refusal of an authenticated prefill request leaves an access event in the
outbox; a request without a valid token is refused 401 and only counted (ikd_shared.bearer).
A client denied too often is refused 429 for a while (service_layer/throttle.py).

A NIK never travels in a URL (proxies and access logs keep URLs): prefill by NIK is a POST
with the NIK in the body; prefill by pseudonym stays a GET.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Path, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, HttpUrl

from ikd_gateway import metrics
from ikd_gateway.adapters.relay import check_agency_topic
from ikd_gateway.adapters.webhooks import generate_secret
from ikd_gateway.bootstrap import Gateway, bootstrap, check_or_exit
from ikd_gateway.config import GatewaySettings
from ikd_gateway.domain import errors
from ikd_gateway.entrypoints.registrations import Guard, registrations_router
from ikd_gateway.entrypoints.webhook_payloads import document_webhooks
from ikd_gateway.service_layer import prefill as prefills
from ikd_gateway.service_layer import webhooks
from ikd_gateway.service_layer.group_commit import (
    AccessCommitter,
    AccessNotRecorded,
    outbox_store,
)
from ikd_gateway.service_layer.webhooks import register_endpoint
from ikd_shared import api, codec, kafka_lag, openapi, tracing
from ikd_shared.api import PROBLEM_JSON, BodySizeLimit, install_error_handlers, problem
from ikd_shared.auth import Principal, Scope
from ikd_shared.bearer import Bearer
from ikd_shared.events import topics
from ikd_shared.events.access_v1 import Channel
from ikd_shared.jwks import keep_fresh, keys_loaded
from ikd_shared.kafka import KafkaConnection
from ikd_shared.legal import LegalBasis
from ikd_shared.token_cache import CachedTokenVerifier

MAX_DELIVERIES = 200


def _gateway(request: Request) -> Gateway:
    found: Gateway = request.app.state.gateway
    return found


async def _runtime(request: Request) -> Gateway:
    # async: FastAPI runs a plain `def` dependency in its thread pool, a thread hop per request.
    return _gateway(request)


Runtime = Annotated[Gateway, Depends(_runtime)]


def _token_verifier(request: Request) -> CachedTokenVerifier:
    verifier: CachedTokenVerifier = request.app.state.token_verifier
    return verifier


def _serves(request: Request, principal: Principal) -> errors.GatewayError | None:
    agency = _gateway(request).ctx.agency.code
    if principal.agency != agency:
        return errors.WrongAgency(f"this gateway serves {agency} only")
    return None


def _correlation() -> str:
    return (tracing.current_request_id() or str(uuid.uuid4()))[:64]


async def _audit_denial(
    gateway: Gateway,
    error: errors.GatewayError,
    denial: prefills.Denial,
    *,
    channel: Channel = Channel.PREFILL,
) -> None:
    await prefills.record_denial(
        gateway.uow(), gateway.ctx, error, denial, channel=channel, correlation_id=_correlation()
    )
    gateway.relay.wake()


async def deny(
    gateway: Gateway, caller: Principal, error: errors.GatewayError, denial: prefills.Denial
) -> None:
    """An authenticated request refused: audited, and counted towards its client's throttle."""
    await _audit_denial(gateway, error, denial)
    await gateway.throttle.denied(caller.client_id)


def access_committer(gateway: Gateway) -> AccessCommitter:
    """Group commit of the served prefill answers' access events into the outbox."""
    return AccessCommitter(outbox_store(gateway.uow))


def throttle_on(channel: Channel) -> Guard:
    """The guard of routes on `channel`: a client denied too often is refused (429) before
    its request reaches anything else.

    Only the first refusal of a block is audited (on the routes' channel): the trail shows
    that the client was throttled, and a client that keeps asking cannot fill the log.
    """

    async def throttle(request: Request, caller: Principal) -> None:
        await _throttle(request, caller, channel)

    return throttle


async def _throttle(request: Request, caller: Principal, channel: Channel) -> None:
    gateway = _gateway(request)
    refusal = await gateway.throttle.refusal(caller.client_id)
    if refusal is None:
        return
    metrics.THROTTLED_REQUESTS.inc()
    seconds = refusal.retry_after(gateway.throttle.now())
    error = errors.TooManyDenials(
        f"too many denied requests from client {caller.client_id}; retry after {seconds} s",
        extras={"retry_after": seconds},
    )
    if refusal.first:
        await _audit_denial(
            gateway,
            error,
            prefills.Denial(service=request.path_params.get("service")),
            channel=channel,
        )
    raise error


async def _record_refusal(request: Request, caller: Principal, error: errors.GatewayError) -> None:
    # A refused prefill request is an access attempt: it leaves a denied access event.
    denial = prefills.Denial(service=request.path_params.get("service"))
    await deny(_gateway(request), caller, error, denial)


bearer: Bearer[errors.GatewayError] = Bearer(
    _token_verifier,
    unauthenticated=errors.Unauthenticated,
    forbidden=errors.MissingScope,
    missing_code=errors.Unauthenticated.code,
    admit=_serves,
)
PrefillCaller = Annotated[
    Principal,
    Depends(
        bearer.require(
            Scope.PREFILL, guard=throttle_on(Channel.PREFILL), on_refused=_record_refusal
        )
    ),
]
WebhooksCaller = Annotated[Principal, Depends(bearer.require(Scope.WEBHOOKS))]


def _errors(extra: dict[int, str] | None = None) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for problem+json answers: 401/403/413/422 on every authenticated route."""
    described = {
        401: "missing or invalid bearer token",
        403: "another agency's token or a missing scope (`code` names which)",
        413: "body too large",
        422: "the request does not match the schema",
    } | (extra or {})
    return {
        status: {"description": text, "content": {PROBLEM_JSON: {}}}
        for status, text in sorted(described.items())
    }


class PurposeOut(BaseModel):
    code: str
    text: str


class PrefillResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"description": "one service's granted fields"})

    agency: str
    service: str
    pseudonym: str
    version: int = Field(description="profile version the fields come from")
    verified_at: dt.datetime = Field(description="when the IKD credential was last verified")
    purpose: PurposeOut
    legal_basis: LegalBasis
    fields: dict[str, Any] = Field(description="exactly the fields this service is granted")


class NikLookup(BaseModel):
    model_config = ConfigDict(extra="forbid")

    nik: str = Field(max_length=32, description="the citizen's NIK (16 digits)")


class EndpointIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: HttpUrl
    service: str = Field(max_length=48, description="the agency service whose fields to push")
    # PostgreSQL text cannot hold U+0000: refuse control characters here rather than fail there.
    description: str | None = Field(default=None, max_length=200, pattern=r"^[^\x00-\x1f\x7f]*$")


class EndpointOut(BaseModel):
    id: uuid.UUID
    url: str
    service: str
    description: str | None
    enabled: bool
    disabled_reason: str | None = None


class EndpointCreated(EndpointOut):
    secret: str = Field(description="whsec_... signing secret; shown only once")


class RotateSecretIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_seconds: int = Field(
        default=86400,
        ge=0,
        le=int(webhooks.MAX_GRACE.total_seconds()),
        description="how long deliveries are also signed with the replaced secret (0: not at "
        "all); at most 7 days",
    )


class SecretRotated(BaseModel):
    secret: str = Field(description="the new whsec_... signing secret; shown only once")
    previous_secret_expires_at: dt.datetime = Field(
        description="until when deliveries also carry a signature with the replaced secret"
    )


class DeliveryOut(BaseModel):
    webhook_id: uuid.UUID = Field(description="the message's webhook-id, the same on retries")
    event_type: str
    attempt: int = Field(description="1 for the first delivery, counting up on each retry")
    attempted_at: dt.datetime
    outcome: str = Field(description="delivered, retry, dead, gone or disabled")
    status_code: int | None = Field(description="the receiver's HTTP status, if it answered")
    error: str | None = Field(description="why no answer came, if none did")
    duration_ms: float
    next_retry_at: dt.datetime | None = Field(description="when a retry was scheduled")


class MessageQueued(BaseModel):
    webhook_id: uuid.UUID = Field(description="the message's webhook-id")
    event_type: str
    status: Literal["pending"] = Field(
        description="queued: the attempt shows in the endpoint's deliveries once made"
    )


def create_app(settings: GatewaySettings, *, runtime: Gateway | None = None) -> FastAPI:
    """The API on a started `runtime`, or, without one, on its own: the lifespan then enters
    `bootstrap` and runs the access relay beside the requests."""
    config = runtime.config if runtime is not None else check_or_exit(settings)
    agency = config.ctx.agency

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if runtime is not None:
            yield
            return
        async with (
            bootstrap(settings, config=config, keep_sessions=True) as gateway,
            keep_fresh(config.verifier),
        ):
            app.state.gateway = gateway
            app.state.committer = access_committer(gateway)
            relay_task = asyncio.create_task(gateway.relay.run(), name="access-relay")
            try:
                yield
            finally:
                await app.state.committer.close()
                relay_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await relay_task
                await gateway.relay.publish_batch()

    app = FastAPI(
        title=f"IKD agency gateway: {agency.name}",
        version="1.0.0",
        description=(
            f"Prefill and webhooks for `{agency.code}`. Every answer, push and refusal "
            "is recorded as an access event for the citizen's audit trail."
        ),
        lifespan=lifespan,
        generate_unique_id_function=openapi.operation_id,
    )
    install_error_handlers(app)

    async def on_throttled(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, errors.TooManyDenials)
        response = problem(exc.status_code, exc.code, exc.detail, **exc.extras)
        response.headers["Retry-After"] = str(exc.extras["retry_after"])
        return response

    app.add_exception_handler(errors.TooManyDenials, on_throttled)
    app.add_middleware(BodySizeLimit, max_bytes=16 * 1024)
    if runtime is not None:
        app.state.gateway = runtime
        app.state.committer = access_committer(runtime)

    async def on_not_recorded(_: Request, exc: Exception) -> JSONResponse:
        # The fields were read but their access event is not durable: nothing is served.
        return problem(503, "access_not_recorded", "the access could not be recorded; retry")

    app.add_exception_handler(AccessNotRecorded, on_not_recorded)
    # Backends send the same token with every request: its signature is checked once.
    app.state.token_verifier = CachedTokenVerifier(config.verifier)

    def started() -> Gateway:
        gateway: Gateway = app.state.gateway
        return gateway

    async def database_reachable() -> None:
        await started().database_reachable()

    async def refresh_backlog() -> None:
        metrics.ACCESS_OUTBOX_BACKLOG.set(await started().relay.backlog())

    app.include_router(
        api.operations_router(
            checks={
                "postgresql": database_reachable,
                "kafka": lambda: kafka_lag.kafka_reachable(KafkaConnection.from_settings(settings)),
                # Onboarding creates it; without it the view's changes cannot be published.
                "agency-topic": lambda: check_agency_topic(
                    KafkaConnection.from_settings(settings),
                    config.topic(topics.agency_topic(agency.code)),
                ),
                "token-keys": lambda: keys_loaded(config.verifier),
            },
            refresh=[
                refresh_backlog,
                # The worker is another process: its group's lag is read from Kafka here, so
                # it shows (and grows) even while the worker is down.
                kafka_lag.lag_refresher(
                    KafkaConnection.from_settings(settings),
                    settings.consumer_group,
                    [config.topic(topics.PROFILE), config.topic(topics.CONSENT)],
                ),
            ],
        )
    )
    app.add_middleware(api.RequestObservability)

    async def answer(
        gateway: Gateway,
        caller: Principal,
        service: str,
        *,
        nik: str | None = None,
        pseudonym: str | None = None,
    ) -> Response:
        correlation = _correlation()
        try:
            found = await prefills.prefill(
                (gateway.reads or gateway.uow)(),
                gateway.ctx,
                service_code=service,
                nik=nik,
                pseudonym=pseudonym,
                correlation_id=correlation,
                committer=app.state.committer,
            )
        except (errors.GatewayError, prefills.DeniedRequest) as failure:
            if isinstance(failure, prefills.DeniedRequest):
                error, denial = failure.error, failure.denial
            else:
                error, denial = failure, prefills.Denial(service=service)
            await deny(gateway, caller, error, denial)
            raise error from None
        gateway.relay.wake()
        # PrefillResponse's shape (OpenAPI), written by orjson directly: FastAPI's validation
        # and encoding of the returned model cost more CPU than the rest of the answer.
        return Response(
            codec.dumps(
                {
                    "agency": agency.code,
                    "service": found.service.code,
                    "pseudonym": found.pseudonym,
                    "version": found.version,
                    "verified_at": found.verified_at,
                    "purpose": {
                        "code": found.service.purpose.code,
                        "text": found.service.purpose.text,
                    },
                    "legal_basis": found.service.legal_basis,
                    "fields": found.fields,
                }
            ),
            media_type="application/json",
        )

    prefill_errors = {
        400: "invalid NIK or pseudonym",
        404: "unknown citizen or service",
        429: "the client was denied too often: retry after `Retry-After` seconds",
    }

    @app.get(
        "/v1/prefill/{service}",
        response_model=PrefillResponse,
        responses=_errors(prefill_errors),
        tags=["prefill"],
    )
    async def prefill_by_pseudonym(
        request: Request,
        gateway: Runtime,
        caller: PrefillCaller,
        service: Annotated[str, Path(max_length=64)],
        pseudonym: Annotated[str | None, Query(max_length=128)] = None,
    ) -> Response:
        """One citizen's fields for one of the agency's services, by the citizen's pseudonym:
        exactly what the service is granted. (By NIK: `POST /v1/prefill/{service}/lookup`.)

        404 for an unknown citizen; 403 for another agency's token, a service that is not this
        agency's, or a consent the citizen has not given; 429 for a client denied too often.
        """
        if "nik" in request.query_params:
            # Refused, not ignored: the client learns to stop putting NIKs in URLs.
            error = errors.NikInUrl(
                "a NIK never goes in a URL: POST it to /v1/prefill/{service}/lookup"
            )
            await deny(gateway, caller, error, prefills.Denial(service=service))
            raise error
        return await answer(gateway, caller, service, pseudonym=pseudonym)

    @app.post(
        "/v1/prefill/{service}/lookup",
        response_model=PrefillResponse,
        tags=["prefill"],
        responses=_errors(prefill_errors),
    )
    async def prefill_by_nik(
        gateway: Runtime,
        caller: PrefillCaller,
        service: Annotated[str, Path(max_length=64)],
        body: NikLookup,
    ) -> Response:
        """One citizen's fields for one of the agency's services, by the citizen's NIK (only
        where the service is granted the NIK), in the body so that no URL carries it.

        Answers and refusals as `GET /v1/prefill/{service}`.
        """
        return await answer(gateway, caller, service, nik=body.nik)

    app.include_router(registrations_router(bearer, guard=throttle_on(Channel.REGISTRATION)))

    @app.post(
        "/v1/webhooks/endpoints",
        status_code=201,
        tags=["webhooks"],
        response_model=EndpointCreated,
        responses=_errors(
            {
                400: "URL not allowed",
                403: "another agency's token, a missing scope, or a host that is not on the "
                "agency's webhook hosts (`code` names which)",
                409: "the agency has as many enabled endpoints as allowed",
            }
        ),
    )
    async def create_webhook_endpoint(
        gateway: Runtime, principal: WebhooksCaller, body: EndpointIn
    ) -> EndpointCreated:
        """Register a URL to receive signed pushes of one service's fields (Standard Webhooks)."""
        endpoint = await register_endpoint(
            gateway.uow,
            gateway.ctx,
            url=str(body.url),
            service=body.service,
            description=body.description,
            created_by=principal.client_id,
            check=gateway.check_target,
            secret=generate_secret(),
            max_endpoints=gateway.settings.webhook_max_endpoints,
        )
        return EndpointCreated(
            id=endpoint.id,
            url=endpoint.url,
            service=endpoint.service,
            description=endpoint.description,
            enabled=True,
            secret=endpoint.secret,
        )

    @app.get(
        "/v1/webhooks/endpoints",
        response_model=list[EndpointOut],
        responses=_errors(),
        tags=["webhooks"],
    )
    async def list_webhook_endpoints(gateway: Runtime, _: WebhooksCaller) -> list[EndpointOut]:
        async with gateway.uow() as uow:
            endpoints = await uow.webhooks.endpoints()
        return [
            EndpointOut(
                id=e.id,
                url=e.url,
                service=e.service,
                description=e.description,
                enabled=e.enabled,
                disabled_reason=e.disabled_reason,
            )
            for e in endpoints
        ]

    @app.get(
        "/v1/webhooks/endpoints/{endpoint_id}/deliveries",
        tags=["webhooks"],
        response_model=list[DeliveryOut],
        responses=_errors({404: "no such endpoint"}),
    )
    async def list_webhook_deliveries(
        gateway: Runtime,
        _: WebhooksCaller,
        endpoint_id: uuid.UUID,
        limit: Annotated[int, Query(ge=1, le=MAX_DELIVERIES)] = 50,
    ) -> list[DeliveryOut]:
        """The endpoint's delivery attempts, newest first (at most `limit`)."""
        async with gateway.uow() as uow:
            # This gateway's database holds this agency's endpoints only.
            if await uow.webhooks.endpoint(endpoint_id) is None:
                raise errors.EndpointNotFound("no such endpoint")
            deliveries = await uow.webhooks.deliveries(endpoint_id, limit)
        return [
            DeliveryOut(
                webhook_id=d.attempt.message_id,
                event_type=d.event_type,
                attempt=d.attempt.attempt,
                attempted_at=d.attempted_at,
                outcome=d.attempt.outcome,
                status_code=d.attempt.status_code,
                error=d.attempt.error,
                duration_ms=d.attempt.duration_ms,
                next_retry_at=d.attempt.next_retry_at,
            )
            for d in deliveries
        ]

    @app.delete(
        "/v1/webhooks/endpoints/{endpoint_id}",
        status_code=204,
        tags=["webhooks"],
        responses=_errors({404: "no such endpoint"}),
    )
    async def disable_webhook_endpoint(
        gateway: Runtime, principal: WebhooksCaller, endpoint_id: uuid.UUID
    ) -> Response:
        """Disable an endpoint; pending deliveries to it are cancelled."""
        async with gateway.uow() as uow:
            if await uow.webhooks.endpoint(endpoint_id) is None:
                raise errors.EndpointNotFound("no such endpoint")
            await uow.webhooks.disable_endpoint(endpoint_id, f"disabled by {principal.client_id}")
        return Response(status_code=204)

    @app.post(
        "/v1/webhooks/endpoints/{endpoint_id}/rotate-secret",
        tags=["webhooks"],
        response_model=SecretRotated,
        responses=_errors({404: "no such endpoint", 409: "the endpoint is disabled"}),
    )
    async def rotate_webhook_secret(
        gateway: Runtime,
        _: WebhooksCaller,
        endpoint_id: uuid.UUID,
        body: RotateSecretIn | None = None,
    ) -> SecretRotated:
        """Replace the endpoint's signing secret. Until `previous_secret_expires_at` every
        delivery carries two signatures in `webhook-signature`, one per secret, so the receiver
        keeps verifying while it switches to the new secret; after it, only the new one."""
        rotated = await webhooks.rotate_secret(
            gateway.uow,
            gateway.ctx,
            endpoint_id,
            secret=generate_secret(),
            grace=dt.timedelta(seconds=(body or RotateSecretIn()).grace_seconds),
        )
        return SecretRotated(
            secret=rotated.secret, previous_secret_expires_at=rotated.previous_secret_expires_at
        )

    @app.post(
        "/v1/webhooks/endpoints/{endpoint_id}/test",
        tags=["webhooks"],
        status_code=202,
        response_model=MessageQueued,
        responses=_errors({404: "no such endpoint", 409: "the endpoint is disabled"}),
    )
    async def send_webhook_test_event(
        gateway: Runtime, _: WebhooksCaller, endpoint_id: uuid.UUID
    ) -> MessageQueued:
        """Queue a signed `webhook.test` event (no citizen data) for the endpoint: it is sent,
        retried and listed in the endpoint's deliveries like any other message."""
        message = await webhooks.send_test_event(gateway.uow, gateway.ctx, endpoint_id)
        return MessageQueued(webhook_id=message.id, event_type=message.event_type, status="pending")

    @app.post(
        "/v1/webhooks/endpoints/{endpoint_id}/messages/{webhook_id}/redeliver",
        tags=["webhooks"],
        status_code=202,
        response_model=MessageQueued,
        responses=_errors(
            {
                404: "no such endpoint, or no such message of it",
                409: "the endpoint is disabled (`endpoint_disabled`), the message is still "
                "scheduled (`message_pending`), or the agency no longer holds the citizen's "
                "fields for the service (`citizen_not_held`)",
            }
        ),
    )
    async def redeliver_webhook_message(
        gateway: Runtime, principal: WebhooksCaller, endpoint_id: uuid.UUID, webhook_id: uuid.UUID
    ) -> MessageQueued:
        """Send a message again (its `webhook_id` from the deliveries), with the same
        webhook-id. The body is what the agency holds when it is sent, and sending it is
        recorded as an access like every push; a citizen the agency no longer holds for the
        service is refused 409 `citizen_not_held` (recorded as a denied access), never resent
        from an old copy."""
        try:
            message = await webhooks.redeliver(gateway.uow, gateway.ctx, endpoint_id, webhook_id)
        except errors.NotHeld as refused:
            await _audit_denial(
                gateway,
                refused,
                prefills.Denial(service=refused.service, pseudonym=refused.pseudonym),
                channel=Channel.WEBHOOK,
            )
            raise
        return MessageQueued(webhook_id=message.id, event_type=message.event_type, status="pending")

    document_webhooks(app)
    openapi.document_security(app, token_url=openapi.IDENTITY_TOKEN_URL)
    return app
