"""Observability shared by every service: JSON logs, request metrics, health, trace context.

- One log format: a JSON object per line on stderr, carrying the request's correlation id
  (`request_id`) and W3C trace context (`trace_id`, `span_id`) whenever they are known.
- One HTTP middleware (`RequestObservability`): reads `X-Request-ID` (or makes one), reads the
  W3C `traceparent`/`tracestate` headers (or starts a trace), keeps both in context variables
  for the request, returns `X-Request-ID`, and observes the request latency by route template
  and status in `ikd_http_request_duration_seconds`.
- W3C trace context (`TraceContext`) parsed and formatted with OpenTelemetry's
  `TraceContextTextMapPropagator`; on Kafka it travels as the CloudEvents distributed-tracing
  extension (`ce_traceparent`, `ce_tracestate` headers).
- `/healthz`, `/readyz` and `/metrics` as one router (`operations_router`).
- Kafka consumer lag per partition (`ikd_kafka_consumer_lag`): end offset minus committed.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import datetime as dt
import logging
import logging.config
import re
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import APIRouter, Response
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Gauge, Histogram
from prometheus_client import generate_latest as _generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ikd_shared.api import problem

log = logging.getLogger(__name__)

REQUEST_ID_HEADER = "x-request-id"
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
# What we accept from a caller as a request id; anything else is replaced by a fresh one.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:@/+=-]{1,128}")
_PROPAGATOR = TraceContextTextMapPropagator()

# --- W3C trace context ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TraceContext:
    """A W3C trace context: the trace, the current span (the parent of what it causes), flags."""

    trace_id: int
    span_id: int
    flags: int = 0
    tracestate: str | None = None

    @property
    def trace_id_hex(self) -> str:
        return trace.format_trace_id(self.trace_id)

    @property
    def span_id_hex(self) -> str:
        return trace.format_span_id(self.span_id)

    @property
    def sampled(self) -> bool:
        return bool(self.flags & 0x01)

    @classmethod
    def new(cls, *, sampled: bool = False) -> TraceContext:
        """The root of a new trace (a random trace id and span id)."""
        return cls(trace_id=_random_bits(128), span_id=_random_bits(64), flags=int(sampled))

    def child(self) -> TraceContext:
        """A new span in the same trace: same trace id, flags and state; a new span id."""
        return TraceContext(self.trace_id, _random_bits(64), self.flags, self.tracestate)

    def headers(self) -> dict[str, str]:
        """`traceparent` (and `tracestate` if any), formatted per the W3C recommendation."""
        state = trace.TraceState.from_header([self.tracestate]) if self.tracestate else None
        span_context = trace.SpanContext(
            trace_id=self.trace_id,
            span_id=self.span_id,
            is_remote=False,
            trace_flags=trace.TraceFlags(self.flags),
            trace_state=state,
        )
        carrier: dict[str, str] = {}
        context = trace.set_span_in_context(trace.NonRecordingSpan(span_context))
        _PROPAGATOR.inject(carrier, context=context)
        return carrier

    @property
    def traceparent(self) -> str:
        return self.headers()[TRACEPARENT]

    def extensions(self) -> dict[str, str]:
        """CloudEvents distributed-tracing extension attributes (`ce_traceparent` on Kafka)."""
        return self.headers()


def _random_bits(bits: int) -> int:
    while True:
        value = secrets.randbits(bits)
        if value:  # all-zero ids are invalid
            return value


def parse_traceparent(
    traceparent: str | None, tracestate: str | None = None
) -> TraceContext | None:
    """The trace context in a `traceparent` (and `tracestate`) value; None if absent or invalid."""
    if not traceparent:
        return None
    carrier = {TRACEPARENT: traceparent}
    if tracestate:
        carrier[TRACESTATE] = tracestate
    span_context = trace.get_current_span(_PROPAGATOR.extract(carrier)).get_span_context()
    if not span_context.is_valid:
        return None
    state = span_context.trace_state.to_header() if span_context.trace_state else None
    return TraceContext(
        trace_id=span_context.trace_id,
        span_id=span_context.span_id,
        flags=int(span_context.trace_flags),
        tracestate=state or None,
    )


def from_extensions(extensions: Mapping[str, str]) -> TraceContext | None:
    """The trace context of a CloudEvent (its `traceparent`/`tracestate` extensions)."""
    return parse_traceparent(extensions.get(TRACEPARENT), extensions.get(TRACESTATE))


def from_kafka_headers(headers: Iterable[tuple[str, bytes | None]]) -> TraceContext | None:
    """The trace context of a Kafka record in CloudEvents binary mode (`ce_traceparent`)."""
    found: dict[str, str] = {}
    for name, raw in headers:
        key = name.lower()
        if raw is not None and key in ("ce_traceparent", "ce_tracestate"):
            with contextlib.suppress(UnicodeDecodeError):
                found[key[3:]] = raw.decode()
    return from_extensions(found)


# --- context: correlation id and current span ----------------------------------------------

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "ikd_request_id", default=None
)
_trace: contextvars.ContextVar[TraceContext | None] = contextvars.ContextVar(
    "ikd_trace", default=None
)


def current_request_id() -> str | None:
    return _request_id.get()


def current_trace() -> TraceContext | None:
    return _trace.get()


def new_request_id() -> str:
    return uuid.uuid4().hex


@contextlib.contextmanager
def bound(
    *, trace_context: TraceContext | None = None, request_id: str | None = None
) -> Iterator[None]:
    """Make a trace context (and correlation id) current for the block, then restore."""
    trace_token = _trace.set(trace_context)
    id_token = _request_id.set(request_id) if request_id is not None else None
    try:
        yield
    finally:
        _trace.reset(trace_token)
        if id_token is not None:
            _request_id.reset(id_token)


# --- logs ----------------------------------------------------------------------------------

_STANDARD = set(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
_DROPPED = {"color_message"}  # uvicorn's coloured copy of the message


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, correlation, extras."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = _request_id.get()
        if request_id is not None:
            entry["request_id"] = request_id
        context = _trace.get()
        if context is not None:
            entry["trace_id"] = context.trace_id_hex
            entry["span_id"] = context.span_id_hex
        for name, value in vars(record).items():
            if name in _STANDARD or name in _DROPPED:
                continue
            if name == "fields" and isinstance(value, dict):
                entry.update(value)  # extra={"fields": {...}}
            else:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


def logging_config(level: str | int = "INFO") -> dict[str, Any]:
    """A `logging.config.dictConfig` for JSON logs on stderr (also given to faust's worker)."""
    if isinstance(level, str):
        level = level.upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": f"{__name__}.JsonFormatter"}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "json",
                "filters": ["kafka_outage"],
            }
        },
        "filters": {"kafka_outage": {"()": "ikd_shared.kafka_logs.KafkaOutageFilter"}},
        "root": {"level": level, "handlers": ["stderr"]},
        "loggers": {"aiokafka": {"level": "WARNING"}},
    }


def configure_logging(level: str | int = "INFO") -> None:
    """JSON logs on stderr for the whole process (call once at start)."""
    logging.config.dictConfig(logging_config(level))


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
        server_span = incoming.child() if incoming is not None else TraceContext.new()
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
        try:
            with bound(trace_context=server_span, request_id=request_id):
                await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_SECONDS.labels(
                scope.get("method", ""), _route_template(scope), str(status)
            ).observe(time.perf_counter() - started)


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


async def kafka_reachable(bootstrap_servers: str, *, seconds: float = 2.0) -> None:
    """Raise unless a broker answers a metadata request."""
    from aiokafka import AIOKafkaClient

    client = AIOKafkaClient(
        bootstrap_servers=bootstrap_servers, request_timeout_ms=int(seconds * 1000)
    )
    try:
        await asyncio.wait_for(client.bootstrap(), timeout=seconds)
    finally:
        await client.close()


# --- Kafka consumer lag --------------------------------------------------------------------

CONSUMER_LAG = Gauge(
    "ikd_kafka_consumer_lag",
    "Records not yet processed by a consumer group: end offset minus committed offset",
    ["group", "topic", "partition"],
)


async def consumer_group_lag(
    bootstrap_servers: str, group: str, topics: Iterable[str]
) -> dict[tuple[str, int], int]:
    """Per partition of `topics`: end offset minus the group's committed offset.

    A partition the group has not committed yet counts from its first retained offset.
    """
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await admin.start()
    try:
        described = await admin.describe_topics(list(topics))
        partitions = [
            TopicPartition(item["topic"], part["partition"])
            for item in described
            if item.get("error_code", 0) == 0
            for part in sorted(item["partitions"], key=lambda p: int(p["partition"]))
        ]
        if not partitions:
            return {}
        committed = await admin.list_consumer_group_offsets(group, partitions=partitions)
        await consumer.start()
        try:
            ends = await consumer.end_offsets(partitions)
            starts = await consumer.beginning_offsets(partitions)
        finally:
            await consumer.stop()
    finally:
        await admin.close()
    lag: dict[tuple[str, int], int] = {}
    for tp in partitions:
        meta = committed.get(tp)
        position = meta.offset if meta is not None and meta.offset >= 0 else starts[tp]
        lag[(tp.topic, tp.partition)] = max(ends[tp] - position, 0)
    return lag


def lag_refresher(bootstrap_servers: str, group: str, topics: Iterable[str]) -> Refresh:
    """A `refresh` step for `operations_router` that sets `ikd_kafka_consumer_lag`."""
    names = list(topics)

    async def refresh() -> None:
        for (topic, partition), lag in (
            await consumer_group_lag(bootstrap_servers, group, names)
        ).items():
            CONSUMER_LAG.labels(group, topic, str(partition)).set(lag)

    return refresh
