"""What the three HTTP APIs share (FastAPI only): problem answers, request middleware, probes.

- Every error body is RFC 9457 problem details with a machine-readable `code`; domain errors
  (`ikd_shared.errors.ApiError`) become one through `install_error_handlers`.
- `BodySizeLimit` refuses oversized bodies before a route reads them.
- `RequestObservability` reads `X-Request-ID` (or makes one), reads the W3C `traceparent`/
  `tracestate` headers (or starts a trace), binds both for the request (`ikd_shared.tracing`),
  returns `X-Request-ID`, and observes the latency by route template and status in
  `ikd_http_request_duration_seconds`.
- `/healthz`, `/readyz` and `/metrics` as one router (`operations_router`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Histogram
from prometheus_client import generate_latest as _generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ikd_shared import telemetry
from ikd_shared.errors import ApiError
from ikd_shared.tracing import (
    TRACEPARENT,
    TRACESTATE,
    new_request_id,
    parse_traceparent,
)

log = logging.getLogger(__name__)

PROBLEM_JSON = "application/problem+json"
REQUEST_ID_HEADER = "x-request-id"
# What we accept from a caller as a request id; anything else is replaced by a fresh one.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")


def problem(status: int, code: str, detail: str, **extra: Any) -> JSONResponse:
    body = {
        "type": f"urn:ikd:error:{code}",
        "title": code.replace("_", " "),
        "status": status,
        "code": code,
        "detail": detail,
        **extra,
    }
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    async def on_api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return problem(exc.status_code, exc.code, exc.detail, **exc.extras)

    async def on_validation_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {
                "loc": [str(part) for part in err.get("loc", ())],
                "msg": str(err.get("msg", "")),
                "type": str(err.get("type", "")),
            }
            for err in exc.errors()
        ]
        return problem(
            422, "invalid_request", "the request does not match the schema", errors=errors
        )

    async def on_http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        code = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}.get(
            exc.status_code, "http_error"
        )
        return problem(exc.status_code, code, str(exc.detail))

    app.add_exception_handler(ApiError, on_api_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)


class BodySizeLimit:
    """Refuse request bodies over `max_bytes` with 413 before the route reads them."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._reject(scope, receive, send)
            return
        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _BodyTooLarge
            return message

        try:
            await self.app(scope, limited_receive, send)
        except _BodyTooLarge:
            await self._reject(scope, receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problem(
            413, "payload_too_large", f"the request body is over {self.max_bytes} bytes"
        )
        await response(scope, receive, send)


class _BodyTooLarge(Exception):
    pass


# --- HTTP metrics and correlation ----------------------------------------------------------

REQUEST_SECONDS = Histogram(
    "ikd_http_request_duration_seconds",
    "HTTP request latency by route template and status",
    ["method", "route", "status"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
UNMATCHED = "unmatched"


def _route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else UNMATCHED


class RequestObservability:
    """ASGI middleware: correlation id, trace context and latency of every HTTP request.

    Add it last (outermost) so that it also sees the answers of the other middleware.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = _headers(scope)
        given = headers.get(REQUEST_ID_HEADER)
        request_id = given if given and _REQUEST_ID.fullmatch(given) else new_request_id()
        incoming = parse_traceparent(headers.get(TRACEPARENT), headers.get(TRACESTATE))
        method = scope.get("method", "")
        status = 500
        raw_id = request_id.encode()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                message["headers"] = [
                    *(
                        (name, value)
                        for name, value in message.get("headers", [])
                        if name.lower() != b"x-request-id"
                    ),
                    (b"x-request-id", raw_id),
                ]
            await send(message)

        started = time.perf_counter()
        span = telemetry.server_span(method, incoming, request_id)
        try:
            with span as current:
                try:
                    await self.app(scope, receive, send_with_id)
                finally:
                    telemetry.finish_server_span(current, method, _route_template(scope), status)
        finally:
            REQUEST_SECONDS.labels(method, _route_template(scope), str(status)).observe(
                time.perf_counter() - started
            )


def _headers(scope: Scope) -> dict[str, str]:
    found: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", []):
        name = raw_name.decode("latin-1").lower()
        if name in (REQUEST_ID_HEADER, TRACEPARENT, TRACESTATE):
            value = raw_value.decode("latin-1")
            # Repeated tracestate fields combine with "," (RFC 9110, 5.3); others: first wins.
            if name == TRACESTATE and name in found:
                found[name] = f"{found[name]},{value}"
            else:
                found.setdefault(name, value)
    return found


# --- health, readiness, metrics ------------------------------------------------------------

Check = Callable[[], Awaitable[object]]
Refresh = Callable[[], Awaitable[None]]


def operations_router(
    *,
    checks: Mapping[str, Check] | Callable[[], Mapping[str, Check]],
    refresh: Iterable[Refresh] | Callable[[], Iterable[Refresh]] = (),
    include_in_schema: bool = False,
    check_timeout: float = 3.0,
    registry: CollectorRegistry = REGISTRY,
) -> APIRouter:
    """`/healthz` (alive, no I/O), `/readyz` (every check passes), `/metrics` (Prometheus).

    `checks` name a dependency each (e.g. "postgresql", "kafka"); a check fails by raising or
    timing out, and /readyz then answers 503 naming the failed ones. `refresh` callables set
    gauges that are read at scrape time (e.g. an outbox backlog) before /metrics answers.
    Either may be given as a callable, for what exists only once the app has started.
    """
    router = APIRouter(tags=["operations"], include_in_schema=include_in_schema)

    @router.get("/healthz", summary="The process is alive (no I/O)")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/readyz",
        summary="Dependencies are reachable",
        responses={503: {"description": "a dependency is unreachable; `failed` names which"}},
    )
    async def readyz() -> Response:
        current = checks() if callable(checks) else checks
        results = await asyncio.gather(
            *(_run_check(check, check_timeout) for check in current.values())
        )
        report = dict(zip(current, results, strict=True))
        failed = sorted(name for name, result in report.items() if result != "ok")
        if failed:
            log.warning("not ready", extra={"failed": failed, "checks": report})
            return problem(
                503, "not_ready", f"unreachable: {', '.join(failed)}", failed=failed, checks=report
            )
        return Response(
            orjson.dumps({"status": "ready", "checks": report}), media_type="application/json"
        )

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        for step in refresh() if callable(refresh) else refresh:
            try:
                await asyncio.wait_for(step(), timeout=check_timeout)
            except Exception as error:  # a stale gauge is better than no metrics
                log.warning("refreshing a metric failed", extra={"error": repr(error)})
        return Response(_generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router


async def _run_check(check: Check, seconds: float) -> str:
    try:
        await asyncio.wait_for(check(), timeout=seconds)
    except TimeoutError:
        return f"timed out after {seconds:g}s"
    except Exception as error:
        return f"{type(error).__name__}: {error}"[:200]
    return "ok"
