"""An endpoint that fails for longer than the configured period is disabled automatically, on
the real database: the reason is stored and listed, its pending messages are cancelled, and
attempts whose connection never opened record no access."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from ikd_gateway.adapters.webhooks import HttpSender
from ikd_gateway.domain.model import SourcePosition
from ikd_gateway.entrypoints.api import create_app
from ikd_gateway.service_layer.stream import ProfileRecord, apply_profile
from tests.support.gateway import running_gateway
from tests.support.gateway_factories import Tokens, profile, verified

AGENCY = "dinsos-cirebon"
# Long enough that the first two failures (one dispatcher pass) fall inside it on a busy machine.
PERIOD = 3.0


class Unreachable(httpx.AsyncBaseTransport):
    """A receiver whose connection never opens."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)


async def test_an_endpoint_failing_past_the_period_is_disabled_and_its_messages_cancelled(
    gateway_db: Any, db: asyncpg.Connection, topic_prefix: str, tokens: Tokens, tmp_path: Path
) -> None:
    manage = {"authorization": f"Bearer {tokens.for_agency(AGENCY, {'gateway:webhooks'})}"}
    sender = HttpSender(transport=Unreachable())
    async with (
        running_gateway(
            AGENCY,
            gateway_db,
            topic_prefix,
            tokens,
            tmp_path,
            # Retries come due only when the test says so (jittered backoff would make them random).
            configure={
                "webhook_disable_after_seconds": PERIOD,
                "webhook_backoff_base_seconds": 600.0,
            },
            sender=sender,
        ) as gateway,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(gateway.settings, runtime=gateway)),
            base_url="http://gw",
        ) as client,
    ):
        created = await client.post(
            "/v1/webhooks/endpoints",
            headers=manage,
            json={"url": "http://unreachable.example/hook", "service": "social-assistance"},
        )
        assert created.status_code == 201, created.text
        endpoint_id = created.json()["id"]
        for serial in (61, 62):
            event = verified(profile(serial), 1, dt.datetime.now(dt.UTC))
            await apply_profile(
                gateway.uow(),
                gateway.ctx,
                ProfileRecord(f"evt-{serial}", event.pseudonym, event, SourcePosition(0, serial)),
            )

        # Both messages fail: retried later, the endpoint failing since the first failure.
        assert await gateway.dispatcher.run_once() == 2
        statuses = [r["status"] for r in await db.fetch("SELECT status FROM webhook_messages")]
        assert statuses == ["pending", "pending"]
        first_failure = await db.fetchval("SELECT failing_since FROM webhook_endpoints")
        assert first_failure is not None

        # Past the period, the next failure disables it; the other message is cancelled.
        await asyncio.sleep(PERIOD + 0.2)
        due = await db.fetchval("SELECT id FROM webhook_messages ORDER BY id LIMIT 1")
        await db.execute(
            "UPDATE webhook_messages SET next_attempt_at = now() - interval '1 second' "
            "WHERE id = $1",
            due,
        )
        assert await gateway.dispatcher.run_once() == 1
        assert await gateway.dispatcher.run_once() == 0, "nothing pending any more"

        endpoint = await db.fetchrow(
            "SELECT enabled, disabled_reason, failing_since FROM webhook_endpoints"
        )
        assert endpoint["enabled"] is False
        assert endpoint["disabled_reason"].startswith("disabled automatically")
        assert endpoint["failing_since"] == first_failure, "the first failure starts the period"
        messages = {
            r["id"]: r["status"] for r in await db.fetch("SELECT id, status FROM webhook_messages")
        }
        assert messages.pop(due) == "dead"
        assert list(messages.values()) == ["cancelled"]
        # No connection ever opened: nothing was disclosed, so no access was recorded.
        assert (
            await db.fetchval(
                "SELECT count(*) FROM access_outbox WHERE payload->>'channel' = 'webhook'"
            )
            == 0
        )

        listed = await client.get("/v1/webhooks/endpoints", headers=manage)
        [shown] = listed.json()
        assert (shown["enabled"], shown["disabled_reason"]) == (False, endpoint["disabled_reason"])
        deliveries = await client.get(
            f"/v1/webhooks/endpoints/{endpoint_id}/deliveries", headers=manage
        )
        assert deliveries.status_code == 200, deliveries.text
        newest, *older = deliveries.json()
        assert newest["outcome"] == "disabled"
        assert endpoint["disabled_reason"] in newest["error"]
        assert newest["error"].startswith("ConnectError")
        assert [d["outcome"] for d in older] == ["retry", "retry"]
    await sender.close()
