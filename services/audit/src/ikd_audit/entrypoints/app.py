"""The audit service process: API, console and consumer in one lifespan.

It holds no signing key: tree heads come from `ikd-audit signer` (entrypoints/signer.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

from fastapi import FastAPI, Request, Response
from fastapi.staticfiles import StaticFiles
from starlette.middleware.sessions import SessionMiddleware
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from ikd_audit.bootstrap import AuditRuntime, bootstrap, derive_key
from ikd_audit.config import AuditSettings
from ikd_audit.entrypoints import api, console, patterns, public_log
from ikd_audit.entrypoints.anomalies import run_detector
from ikd_audit.entrypoints.consumer import AccessConsumer
from ikd_audit.entrypoints.observability import SIGNED_TREE_SIZE, TREE_HEAD_AGE, TREE_SIZE
from ikd_audit.entrypoints.pruner import run_pruner
from ikd_shared import kafka_lag, openapi
from ikd_shared.api import (
    BodySizeLimit,
    Check,
    Refresh,
    RequestObservability,
    install_error_handlers,
    operations_router,
)
from ikd_shared.events.topics import ACCESS
from ikd_shared.jwks import keys_loaded
from ikd_shared.kafka import KafkaConnection
from ikd_shared.settings import proxy_hosts
from ikd_shared.supervise import supervise
from ikd_shared.throttle import PgThrottleStore

log = logging.getLogger("ikd_audit.app")
STATIC = Path(__file__).resolve().parent.parent / "static"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


def create_app(settings: AuditSettings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with bootstrap(settings) as runtime:
            app.state.runtime = runtime
            # A background loop that fails is logged and started again after a backoff, so the
            # process never serves on with a dead consumer or pruner.
            stop = asyncio.Event()
            tasks: list[asyncio.Task[None]] = []

            def keep_running(name: str, body: Callable[[], Awaitable[object]]) -> None:
                loop = supervise(body, name=name, stop=stop, trace=True, logger=log)
                tasks.append(asyncio.create_task(loop, name=name))

            store = runtime.throttle_store
            if settings.prune_interval_seconds > 0:
                keep_running(
                    "seen-credential pruner",
                    lambda: run_pruner(
                        runtime.log,
                        interval=settings.prune_interval_seconds,
                        grace=dt.timedelta(seconds=settings.seen_credential_grace_seconds),
                        prune_throttle=store.prune if isinstance(store, PgThrottleStore) else None,
                    ),
                )
            if settings.anomaly_interval_seconds > 0:
                keep_running(
                    "anomaly detector",
                    lambda: run_detector(
                        runtime.patterns, interval=settings.anomaly_interval_seconds
                    ),
                )
            consumer: AccessConsumer | None = None
            if settings.run_consumer:
                consumer = AccessConsumer(
                    runtime.log,
                    KafkaConnection.from_settings(settings),
                    topic_prefix=settings.kafka_topic_prefix,
                    group_id=settings.consumer_group,
                    batch_size=settings.consumer_batch_size,
                )
                keep_running("access consumer", consumer.run)
            app.state.consumer = consumer
            app.state.tasks = tasks
            try:
                yield
            finally:
                stop.set()
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    app = FastAPI(
        title="IKD MPP audit service",
        description="Tamper-evident access log (RFC 9162 Merkle tree, signed tree heads), "
        "auditor API and console, and each citizen's own processing trail.",
        version="1.0.0",
        lifespan=lifespan,
        generate_unique_id_function=openapi.operation_id,
    )
    install_error_handlers(app)
    app.include_router(api.router)
    app.include_router(public_log.router)
    app.include_router(console.router)
    app.include_router(patterns.router)
    app.include_router(patterns.console_router)
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

    def runtime() -> AuditRuntime:
        found: AuditRuntime = app.state.runtime
        return found

    async def consumer_running() -> None:
        if not app.state.consumer.running:
            raise RuntimeError("the access-event consumer is not running")

    def checks() -> dict[str, Check]:
        found: dict[str, Check] = {
            "postgresql": lambda: runtime().ping(),
            "kafka": lambda: kafka_lag.kafka_reachable(KafkaConnection.from_settings(settings)),
            "token-keys": lambda: keys_loaded(runtime().tokens),
        }
        if app.state.consumer is not None:
            found["consumer"] = consumer_running
        return found

    async def refresh_tree() -> None:
        size, head = await runtime().log.tree_state()
        TREE_SIZE.set(size)
        if head is not None:
            SIGNED_TREE_SIZE.set(head.tree_size)
            TREE_HEAD_AGE.set((dt.datetime.now(dt.UTC) - head.timestamp).total_seconds())

    refresh: list[Refresh] = [refresh_tree]
    if settings.run_consumer:
        refresh.append(
            kafka_lag.lag_refresher(
                KafkaConnection.from_settings(settings),
                settings.consumer_group,
                [ACCESS.full_name(settings.kafka_topic_prefix)],
            )
        )
    app.include_router(operations_router(checks=checks, refresh=refresh))
    app.add_middleware(RequestObservability)
    if settings.trusted_proxies:  # outermost: everything after sees the client's address
        app.add_middleware(
            ProxyHeadersMiddleware, trusted_hosts=proxy_hosts(settings.trusted_proxies)
        )

    openapi.document_security(app, token_url=openapi.IDENTITY_TOKEN_URL)
    return app
