"""A webhook secret rotation against the real servers: `ikd-gateway serve` on the real database
and broker; a receiver verifies each delivery with the `standardwebhooks` library, first with
either secret during the grace period, then with the new one only once it is over."""

from __future__ import annotations

import uuid

import asyncpg
import httpx
import pytest
from standardwebhooks.webhooks import WebhookVerificationError

from tests.integration.gateway.test_gateway_webhook_test_redeliver import (
    AGENCY,
    Receiver,
    _some,
    api,  # noqa: F401 - a fixture
    receiver,  # noqa: F401 - a fixture
    verify,
)
from tests.support.gateway_factories import Tokens
from tests.support.polling import eventually

SERVICE = "social-assistance"


async def test_rotation_signs_with_both_secrets_until_the_grace_period_ends(
    api: str,  # noqa: F811 - the imported fixture
    receiver: Receiver,  # noqa: F811 - the imported fixture
    db: asyncpg.Connection,
    tokens: Tokens,
) -> None:
    manage = {"authorization": f"Bearer {tokens.for_agency(AGENCY, {'gateway:webhooks'})}"}
    async with httpx.AsyncClient(base_url=api, timeout=10) as client:

        async def up() -> bool:
            try:
                return (await client.get("/healthz")).status_code == 200
            except httpx.HTTPError:
                return False

        await eventually(up, timeout=180, interval=0.5)
        created = await client.post(
            "/v1/webhooks/endpoints", headers=manage, json={"url": receiver.url, "service": SERVICE}
        )
        assert created.status_code == 201, created.text
        endpoint, old = created.json()["id"], created.json()["secret"]
        rotate = f"/v1/webhooks/endpoints/{endpoint}/rotate-secret"

        async def delivered() -> tuple[dict[str, str], bytes]:
            queued = await client.post(f"/v1/webhooks/endpoints/{endpoint}/test", headers=manage)
            assert queued.status_code == 202, queued.text
            webhook_id = queued.json()["webhook_id"]
            [sent] = await eventually(lambda: _some(receiver.with_id(webhook_id)), timeout=60)
            return sent

        refused = await client.post(
            rotate,
            headers={"authorization": f"Bearer {tokens.for_agency(AGENCY)}"},
        )
        assert (refused.status_code, refused.json()["code"]) == (403, "insufficient_scope")
        too_long = await client.post(rotate, headers=manage, json={"grace_seconds": 8 * 86400})
        assert too_long.status_code == 422

        rotated = await client.post(rotate, headers=manage, json={"grace_seconds": 3600})
        assert rotated.status_code == 200, rotated.text
        new = rotated.json()["secret"]
        assert new.startswith("whsec_")
        assert new != old
        assert rotated.json()["previous_secret_expires_at"]

        headers, body = await delivered()
        assert len(headers["webhook-signature"].split(" ")) == 2
        for secret in (old, new):
            assert verify(secret, headers, body)["type"] == "webhook.test"

        # The grace period ends (as if an hour had passed): the old secret no longer signs.
        ended = await db.execute(
            """UPDATE webhook_endpoints SET previous_secret_expires_at = now()
               WHERE id = $1 AND previous_secret IS NOT NULL""",
            uuid.UUID(endpoint),
        )
        assert ended == "UPDATE 1"
        headers, body = await delivered()
        assert verify(new, headers, body)["type"] == "webhook.test"
        with pytest.raises(WebhookVerificationError):
            verify(old, headers, body)

        # Without a body: the default day of grace.
        default = await client.post(rotate, headers=manage)
        assert default.status_code == 200, default.text
        headers, body = await delivered()
        for secret in (new, default.json()["secret"]):
            verify(secret, headers, body)

        unknown = await client.post(
            f"/v1/webhooks/endpoints/{uuid.uuid4()}/rotate-secret", headers=manage
        )
        assert (unknown.status_code, unknown.json()["code"]) == (404, "endpoint_not_found")
        disabled = await client.delete(f"/v1/webhooks/endpoints/{endpoint}", headers=manage)
        assert disabled.status_code == 204
        gone = await client.post(rotate, headers=manage)
        assert (gone.status_code, gone.json()["code"]) == (409, "endpoint_disabled")
