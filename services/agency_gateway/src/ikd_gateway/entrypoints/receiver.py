"""An example agency-side webhook receiver (what an agency backend would run).

It verifies the Standard Webhooks signature over the raw body (the `standardwebhooks` library),
rejects timestamps more than 5 minutes away from now, and deduplicates by `webhook-id`:

* the same `webhook-id` with a *new* timestamp and signature is the gateway retrying a delivery
  whose answer was lost: acknowledged with 200 and not processed again;
* the same `webhook-id` with the *same* timestamp is a captured request played back: 409.

Seen ids are kept for twice the timestamp tolerance; anything older fails the timestamp check.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from ikd_shared import openapi

log = logging.getLogger(__name__)

TOLERANCE_SECONDS = 300


def _problem(status: int, code: str, detail: str) -> JSONResponse:
    return JSONResponse(
        {"status": status, "code": code, "detail": detail},
        status_code=status,
        media_type="application/problem+json",
    )


class ReceiverState:
    def __init__(self) -> None:
        self.seen: collections.OrderedDict[str, tuple[str, float]] = collections.OrderedDict()
        self.processed: list[dict[str, Any]] = []

    def forget_old(self, now: float) -> None:
        while self.seen:
            _, (_, at) = next(iter(self.seen.items()))
            if now - at <= 2 * TOLERANCE_SECONDS:
                break
            self.seen.popitem(last=False)


def create_receiver_app(secret: str) -> FastAPI:
    webhook = Webhook(secret)
    state = ReceiverState()
    app = FastAPI(
        title="IKD example webhook receiver",
        version="1.0.0",
        generate_unique_id_function=openapi.operation_id,
    )
    app.state.receiver = state

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/webhooks/ikd")
    async def receive(request: Request) -> JSONResponse:
        body = await request.body()
        headers = {name: value for name, value in request.headers.items()}
        try:
            payload = webhook.verify(body, headers)
        except WebhookVerificationError as error:
            reason = str(error)
            code = (
                "stale_timestamp"
                if "too old" in reason or "too new" in reason
                else "invalid_signature"
            )
            log.warning("rejected webhook %s: %s", headers.get("webhook-id"), reason)
            return _problem(400, code, reason)
        except ValueError as error:
            return _problem(400, "invalid_body", str(error))
        message_id = headers["webhook-id"]
        timestamp = headers["webhook-timestamp"]
        now = time.time()
        state.forget_old(now)
        if message_id in state.seen:
            if state.seen[message_id][0] == timestamp:
                return _problem(409, "replayed", "this exact request was already received")
            return JSONResponse({"status": "duplicate"}, status_code=200)
        state.seen[message_id] = (timestamp, now)
        state.processed.append(payload)
        data = payload.get("data", {}) if isinstance(payload, dict) else {}
        log.info(
            "webhook %s: %s pseudonym=%s version=%s fields=%s",
            message_id,
            payload.get("type") if isinstance(payload, dict) else None,
            data.get("pseudonym"),
            data.get("version"),
            sorted(data.get("fields", {})),
        )
        return JSONResponse({"status": "accepted"}, status_code=200)

    return app
