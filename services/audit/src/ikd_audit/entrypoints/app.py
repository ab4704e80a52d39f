"""The audit service process: API, console, consumer and tree-head signer in one lifespan."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.middleware.sessions import SessionMiddleware

from ikd_audit.bootstrap import Services, bootstrap, derive_key
from ikd_audit.config import AuditSettings
from ikd_audit.entrypoints import api, console
from ikd_audit.entrypoints.consumer import AccessConsumer
from ikd_audit.entrypoints.signer import run_signer
from ikd_shared.api import BodySizeLimit, install_error_handlers

log = logging.getLogger("ikd_audit.app")
STATIC = Path(__file__).resolve().parent.parent / "static"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def _supervise(task: asyncio.Task[None], name: str) -> None:
    def done(t: asyncio.Task[None]) -> None:
        if not t.cancelled() and t.exception() is not None:
            log.error(f"{name} stopped", exc_info=t.exception())

    task.add_done_callback(done)


def create_app(settings: AuditSettings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = await bootstrap(settings)
        app.state.services = services
        tasks: list[asyncio.Task[None]] = []
        signer = asyncio.create_task(
            run_signer(
                services.log,
                interval=settings.tree_head_interval_seconds,
                max_entries=settings.tree_head_max_entries,
            )
        )
        _supervise(signer, "tree-head signer")
        tasks.append(signer)
        consumer: AccessConsumer | None = None
        if settings.run_consumer:
            consumer = AccessConsumer(
                services.log,
                bootstrap_servers=settings.kafka_bootstrap_servers,
                topic_prefix=settings.kafka_topic_prefix,
                group_id=settings.consumer_group,
                batch_size=settings.consumer_batch_size,
            )
            task = asyncio.create_task(consumer.run())
            _supervise(task, "access consumer")
            tasks.append(task)
        app.state.consumer = consumer
        app.state.tasks = tasks
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await services.close()

    app = FastAPI(
        title="IKD MPP audit service",
        description="Tamper-evident access log (RFC 9162 Merkle tree, signed tree heads), "
        "auditor API and console, and each citizen's own processing trail.",
        version="1.0.0",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(api.router)
    app.include_router(console.router)
    app.mount("/console/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(
        SessionMiddleware,
        secret_key=derive_key(settings, "session").hex(),
        session_cookie="ikd_audit_session",
        max_age=settings.session_max_age_seconds,
        same_site="strict",
        https_only=settings.cookies_https_only,
        path="/console",
    )
    app.add_middleware(BodySizeLimit, max_bytes=64 * 1024)

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        if request.url.path.startswith("/console"):
            response.headers["Content-Security-Policy"] = CSP
            response.headers["Cache-Control"] = "no-store"
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        return response

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz(request: Request) -> JSONResponse:
        services: Services = request.app.state.services
        try:
            await services.repo.ping()
        except Exception as error:
            return JSONResponse({"status": "unready", "reason": repr(error)}, status_code=503)
        consumer = request.app.state.consumer
        if consumer is not None and not consumer.running:
            return JSONResponse(
                {"status": "unready", "reason": "consumer not running"}, status_code=503
            )
        return JSONResponse({"status": "ready"})

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app
