"""The registrations API: the agency backend registers citizens for a service under a legal duty.

The backend's token (scope gateway:registrations) stays here; the gateway asks identity with its
own client. Every attempt, served or refused, leaves an access event (channel `registration`);
a request without a valid token is refused before anything is recorded. A refusal counts
towards the client's throttle, as a refused prefill does.
"""

# No `from __future__ import annotations`: FastAPI must see the route's dependency aliases,
# which are local to `registrations_router`, as objects rather than names.
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ikd_gateway.bootstrap import Gateway
from ikd_gateway.domain import errors
from ikd_gateway.service_layer import prefill as prefills
from ikd_gateway.service_layer import registrations
from ikd_shared import tracing
from ikd_shared.api import PROBLEM_JSON
from ikd_shared.auth import Principal, Scope
from ikd_shared.bearer import Bearer
from ikd_shared.events.access_v1 import Channel
from ikd_shared.events.profile_v1 import Relationship

LegalReference = Annotated[
    str, StringConstraints(strip_whitespace=True, min_length=3, max_length=200)
]


class RegistrationIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    nik: str = Field(max_length=32, description="the citizen's NIK (in the body, never the URL)")
    service: str = Field(max_length=64, description="one of the agency's registrable services")
    legal_reference: LegalReference = Field(
        description="the statute or decision this registration rests on"
    )


class RegistrationOut(BaseModel):
    pseudonym: str | None = Field(description="the citizen's pseudonym (as on the agency topic)")
    relationship: Relationship | None = Field(
        description="the relationship identity recorded (null if it no longer told)"
    )


def _correlation() -> str:
    return (tracing.current_request_id() or str(uuid.uuid4()))[:64]


async def _record_refusal(request: Request, caller: Principal, error: errors.GatewayError) -> None:
    # An authenticated caller refused (another agency, a missing scope) tried to register: that
    # is audited. (Without a valid token nothing is known of the caller: bearer refuses it
    # before this runs, and nothing is written.)
    gateway: Gateway = request.app.state.gateway
    await gateway.throttle.denied(caller.client_id)
    await prefills.record_denial(
        gateway.uow(),
        gateway.ctx,
        error,
        prefills.Denial(),
        channel=Channel.REGISTRATION,
        correlation_id=_correlation(),
    )
    gateway.relay.wake()


async def _count(gateway: Gateway, caller: Principal, error: errors.GatewayError) -> None:
    """A denial counts towards the client's throttle; identity's failure is not the client's."""
    if error.status_code < 500:
        await gateway.throttle.denied(caller.client_id)


def _errors(extra: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    described = {
        401: "missing or invalid bearer token",
        403: "another agency's token, a missing scope, or a service that is not the agency's "
        "or takes no registrations (`code` names which)",
        422: "the request does not match the schema",
        429: "the client was denied too often: retry after `Retry-After` seconds",
        502: "identity answered unexpectedly",
        503: "identity cannot be reached, or registrations are not configured here",
    } | extra
    return {
        status: {"description": text, "content": {PROBLEM_JSON: {}}}
        for status, text in sorted(described.items())
    }


Guard = Callable[[Request, Principal], Awaitable[None]]


def registrations_router(
    bearer: Bearer[errors.GatewayError], *, guard: Guard | None = None
) -> APIRouter:
    """The routes, authenticated by the API's `bearer` (scope gateway:registrations); `guard`
    refuses a client before anything else (the API's throttle)."""
    caller = Annotated[
        Principal,
        Depends(bearer.require(Scope.REGISTRATIONS, guard=guard, on_refused=_record_refusal)),
    ]
    router = APIRouter(tags=["registrations"])

    def runtime(request: Request) -> Gateway:
        gateway: Gateway = request.app.state.gateway
        return gateway

    Runtime = Annotated[Gateway, Depends(runtime)]

    @router.post(
        "/v1/registrations",
        status_code=201,
        response_model=RegistrationOut,
        responses=_errors(
            {400: "invalid NIK", 404: "identity knows no such citizen (citizen_not_found)"}
        ),
    )
    async def register_citizen(
        gateway: Runtime, principal: caller, body: RegistrationIn
    ) -> RegistrationOut:
        """Register a citizen for one of the agency's services whose policy allows it (a legal
        obligation or public task): the agency then holds that service's fields of the citizen
        until the registration ends or expires."""
        try:
            done = await registrations.register(
                gateway.uow,
                gateway.ctx,
                gateway.registrar,
                nik=body.nik,
                service_code=body.service,
                legal_reference=body.legal_reference,
                correlation_id=_correlation(),
            )
        except errors.GatewayError as error:
            await _count(gateway, principal, error)
            raise
        finally:
            gateway.relay.wake()
        return RegistrationOut(pseudonym=done.pseudonym, relationship=done.relationship)

    @router.post(
        "/v1/registrations/{relationship_id}/end",
        response_model=RegistrationOut,
        responses=_errors({404: "no registration of this agency has this id"}),
    )
    async def end_registration(
        gateway: Runtime, principal: caller, relationship_id: uuid.UUID
    ) -> RegistrationOut:
        """End one of the agency's registrations: once no other relationship is left, the
        citizen's fields are purged from the agency's view."""
        try:
            done = await registrations.end(
                gateway.uow,
                gateway.ctx,
                gateway.registrar,
                relationship_id,
                correlation_id=_correlation(),
            )
        except errors.GatewayError as error:
            await _count(gateway, principal, error)
            raise
        finally:
            gateway.relay.wake()
        return RegistrationOut(pseudonym=done.pseudonym, relationship=done.relationship)

    return router
