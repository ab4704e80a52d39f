"""What the gateway POSTs to an agency's webhook endpoints, for the OpenAPI document's
`webhooks` section: one entry per event type, with its Standard Webhooks headers.

The dispatcher builds the bodies (service_layer/webhooks.py) and signs them
(adapters/webhooks.py); a test holds both to these models.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Header, Response
from pydantic import BaseModel, ConfigDict, Field

from ikd_gateway.service_layer.webhooks import EVENT_NAMES, FALLBACK_NAME, TEST_EVENT
from ikd_shared.legal import LegalBasis

ProfileEventType = Literal[
    "citizen.profile.verified",
    "citizen.profile.updated",
    "citizen.profile.shared",
    "citizen.profile.changed",
]


class ProfileEventData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agency: str
    service: str = Field(description="the endpoint's service")
    purpose: str = Field(description="the service's purpose code")
    legal_basis: LegalBasis
    pseudonym: str = Field(description="the citizen's pseudonym at this agency")
    version: int = Field(description="profile version the fields come from")
    verified_at: dt.datetime = Field(description="when the IKD credential was last verified")
    changed_fields: list[str] = Field(description="the fields below that changed")
    fields: dict[str, Any] = Field(description="exactly the fields the service is granted, now")


class ProfileEvent(BaseModel):
    """A citizen's fields for the endpoint's service, as the agency holds them when sent."""

    model_config = ConfigDict(extra="forbid")

    type: ProfileEventType
    timestamp: dt.datetime = Field(description="when this attempt was signed")
    data: ProfileEventData


class WebhookTestData(BaseModel):
    model_config = ConfigDict(extra="forbid")

    agency: str
    endpoint_id: uuid.UUID
    message: str


class WebhookTestEvent(BaseModel):
    """Sent by `POST /v1/webhooks/endpoints/{endpoint_id}/test`: no citizen data."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["webhook.test"]
    timestamp: dt.datetime
    data: WebhookTestData


# The Standard Webhooks headers (https://www.standardwebhooks.com), as adapters/webhooks.sign
# sets them. Verify the signature over `{webhook-id}.{webhook-timestamp}.{raw body}`.
WebhookId = Annotated[
    str,
    Header(
        alias="webhook-id",
        description="the message id (a UUID): the same on every retry and redelivery; "
        "deduplicate on it",
    ),
]
WebhookTimestamp = Annotated[
    int,
    Header(
        alias="webhook-timestamp",
        description="Unix seconds when this attempt was signed; refuse it if far from now",
    ),
]
WebhookSignature = Annotated[
    str,
    Header(
        alias="webhook-signature",
        description="space-separated `v1,<base64 HMAC-SHA256>` signatures with the endpoint's "
        "whsec_ secret",
    ),
]

RECEIVER_ANSWERS: dict[int | str, dict[str, Any]] = {
    200: {"description": "any 2xx: delivered"},
    410: {"description": "Gone: the gateway disables the endpoint"},
    "default": {"description": "anything else (or no answer in time): retried with backoff"},
}

PROFILE_EVENTS = sorted({*EVENT_NAMES.values(), FALLBACK_NAME})


def document_webhooks(app: FastAPI) -> None:
    """Add every event the gateway sends to the app's OpenAPI `webhooks`."""

    def profile_event(name: str) -> None:
        async def receive(
            body: ProfileEvent,
            webhook_id: WebhookId,
            webhook_timestamp: WebhookTimestamp,
            webhook_signature: WebhookSignature,
        ) -> Response:
            raise NotImplementedError  # documentation only: the agency's server answers

        app.webhooks.post(
            name,
            operation_id="on" + "".join(p.capitalize() for p in name.replace(".", "_").split("_")),
            summary=f"`{name}`",
            description=(
                "Signed POST of a citizen's fields for the endpoint's service "
                f"(`type` = `{name}`). The body is built when sent, from what the agency "
                "holds then: a purged citizen or a revoked consent is never sent."
            ),
            responses=RECEIVER_ANSWERS,
            tags=["webhooks"],
        )(receive)

    for name in PROFILE_EVENTS:
        profile_event(name)

    @app.webhooks.post(
        TEST_EVENT,
        operation_id="onWebhookTest",
        summary=f"`{TEST_EVENT}`",
        responses=RECEIVER_ANSWERS,
        tags=["webhooks"],
    )
    async def receive_test(
        body: WebhookTestEvent,
        webhook_id: WebhookId,
        webhook_timestamp: WebhookTimestamp,
        webhook_signature: WebhookSignature,
    ) -> Response:
        """A signed test event on request; delivered, retried and logged like the others."""
        raise NotImplementedError  # documentation only
