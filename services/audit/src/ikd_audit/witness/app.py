"""The witness's HTTP side: tlog-witness add-checkpoint, its cosigned checkpoint, alarms.

    POST /add-checkpoint        c2sp.org/tlog-witness (old size, proof, checkpoint -> cosignature)
    GET  /checkpoint            the latest checkpoint it cosigned, with its cosignature
    GET  /vkey                  its cosignature verifier key
    GET  /v1/alarms             what it refused as evidence against the log (JSON)
    GET  /healthz, /metrics

It polls the log in the background (`poll_interval_seconds`) and returns cosignatures to it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ikd_audit.witness.config import WitnessSettings
from ikd_audit.witness.core import Refusal, parse_add_checkpoint
from ikd_audit.witness.service import Witness, refusal_status
from ikd_audit.witness.store import WitnessStore
from ikd_shared import checkpoint, openapi, telemetry
from ikd_shared.supervise import supervise

NOTE_TYPE = "text/plain; charset=utf-8"
MAX_BODY = 64 * 1024


def build_witness(settings: WitnessSettings, store: WitnessStore) -> Witness:
    signer = checkpoint.signer_from_pem(
        settings.name, settings.signing_key.get_secret_value(), checkpoint.COSIGNATURE_V1
    )
    return Witness(store, signer, settings.log_verifier, settings.origin)


def create_app(
    settings: WitnessSettings,
    *,
    witness: Witness | None = None,
    log_client: httpx.AsyncClient | None = None,
    poll: bool = True,
) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        telemetry.setup("ikd-audit-witness")
        async with contextlib.AsyncExitStack() as stack:
            nonlocal witness
            if witness is None:
                store = WitnessStore(settings.database)
                stack.callback(store.close)
                witness = build_witness(settings, store)
            app.state.witness = witness
            if poll:
                client: httpx.AsyncClient
                if log_client is not None:
                    client = log_client
                else:
                    client = await stack.enter_async_context(
                        httpx.AsyncClient(base_url=settings.log_url, timeout=10.0)
                    )
                running = witness
                stop = asyncio.Event()
                loop = supervise(
                    lambda: running.run(
                        client,
                        settings.poll_interval_seconds,
                        post_back=settings.post_cosignatures,
                    ),
                    name="witness poller",
                    stop=stop,
                )
                task = asyncio.create_task(loop)
                stack.push_async_callback(_stop, stop, task)
            yield

    app = FastAPI(
        title="IKD MPP audit log witness",
        version="1.0.0",
        lifespan=lifespan,
        generate_unique_id_function=openapi.operation_id,
    )

    def current(request: Request) -> Witness:
        found: Witness = request.app.state.witness
        return found

    @app.post("/add-checkpoint", response_class=PlainTextResponse)
    async def add_checkpoint(request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_BODY:
            return PlainTextResponse("too large\n", status_code=413)
        w = current(request)
        try:
            text = body.decode("utf-8")
            old, proof, note = parse_add_checkpoint(text)
            origin = note.split("\n", 1)[0]
            if origin != w.origin:
                return PlainTextResponse("unknown log origin\n", status_code=404)
            if old > _size(note):
                return PlainTextResponse("the old size is larger\n", status_code=400)
            cosigned = await asyncio.to_thread(w.add_checkpoint, note, old, proof, from_log=False)
        except UnicodeDecodeError:
            return PlainTextResponse("not UTF-8\n", status_code=400)
        except Refusal as refusal:
            if refusal_status(refusal) == 409 and refusal.latest_size is not None:
                return PlainTextResponse(
                    f"{refusal.latest_size}\n", status_code=409, media_type="text/x.tlog.size"
                )
            return PlainTextResponse(refusal.detail + "\n", status_code=refusal_status(refusal))
        return PlainTextResponse(cosigned.line, media_type=NOTE_TYPE)

    @app.get("/checkpoint", response_class=PlainTextResponse)
    async def latest_checkpoint(request: Request) -> Response:
        latest = current(request).latest()
        if latest is None:
            return PlainTextResponse("nothing cosigned yet\n", status_code=404)
        return PlainTextResponse(latest.note, media_type=NOTE_TYPE)

    @app.get("/vkey", response_class=PlainTextResponse)
    async def vkey(request: Request) -> PlainTextResponse:
        return PlainTextResponse(current(request).vkey + "\n", media_type=NOTE_TYPE)

    @app.get("/v1/alarms")
    async def alarms(request: Request) -> dict[str, Any]:
        w = current(request)
        return {"origin": w.origin, "alarms": [a.document() for a in w.store.alarms()]}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


def _size(note: str) -> int:
    try:
        return checkpoint.Checkpoint.parse(checkpoint.parse_note(note).text).size
    except checkpoint.NoteError:
        return 1 << 63  # check() refuses it and says why


async def _stop(stop: asyncio.Event, task: asyncio.Task[None]) -> None:
    stop.set()
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
