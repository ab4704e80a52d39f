"""Span export with OpenTelemetry, configured by the standard `OTEL_*` variables; off by default.

`setup(service)` (each service's bootstrap) turns it on when an exporter is configured:
`OTEL_EXPORTER_OTLP_ENDPOINT` / `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (OTLP over HTTP) or
`OTEL_TRACES_EXPORTER` (`otlp`, `console`); `OTEL_SDK_DISABLED=true` or
`OTEL_TRACES_EXPORTER=none` keep it off. `OTEL_SERVICE_NAME`, `OTEL_RESOURCE_ATTRIBUTES`,
`OTEL_TRACES_SAMPLER` and the exporter's own variables apply as the SDK defines them. Off, the
SDK is never imported and every helper below only does what `ikd_shared.tracing` did before.

The spans continue the W3C trace context the services already carry (`ikd_shared.tracing`):
each helper starts its span under the given parent and binds the span as the current
`TraceContext`, so what the block writes (an outbox row's `traceparent`, a log line) names the
span. PostgreSQL (asyncpg) and outgoing HTTP (httpx) spans come from the maintained
instrumentations; HTTP server, Kafka send/receive and webhook delivery spans from here, since
their trace context lives in our own middleware and CloudEvents headers.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from ikd_shared import tracing
from ikd_shared.tracing import TraceContext

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Span, Tracer

log = logging.getLogger(__name__)

SERVER, CLIENT, PRODUCER, CONSUMER, INTERNAL = (
    "server",
    "client",
    "producer",
    "consumer",
    "internal",
)
_ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")

_provider: TracerProvider | None = None
_tracer: Tracer | None = None
_instrumentors: list[Any] = []

KafkaHeaders = list[tuple[str, bytes]]


def configured(environ: Mapping[str, str] | None = None) -> bool:
    """True when the `OTEL_*` variables ask for span export."""
    env = os.environ if environ is None else environ
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return bool(exporter) or any(env.get(name, "").strip() for name in _ENDPOINTS)


def enabled() -> bool:
    return _tracer is not None


def setup(service: str, *, exporter: SpanExporter | None = None) -> bool:
    """Start exporting spans if the environment asks for it (or `exporter` is given, in tests).

    `service` is the default `service.name`; `OTEL_SERVICE_NAME` wins. Idempotent: the first
    call in a process decides. Returns whether spans are exported.
    """
    global _provider, _tracer
    if _tracer is not None:
        return True
    if exporter is None and not configured():
        return False
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: service}
    provider = TracerProvider(resource=Resource.create(attributes))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        for name in _exporter_names():
            made = _exporter(name)
            if made is not None:
                provider.add_span_processor(BatchSpanProcessor(made))
    _provider = provider
    _tracer = provider.get_tracer("ikd_shared")
    _instrument(provider)
    log.info("exporting spans", extra={"fields": {"service": service}})
    return True


def shutdown() -> None:
    """Flush and stop exporting (tests; the SDK also flushes at interpreter exit)."""
    global _provider, _tracer
    for instrumentor in _instrumentors:
        with contextlib.suppress(Exception):
            instrumentor.uninstrument()
    _instrumentors.clear()
    if _provider is not None:
        _provider.shutdown()
    _provider, _tracer = None, None


def _exporter_names() -> list[str]:
    raw = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower() or "otlp"
    return [name.strip() for name in raw.split(",") if name.strip() and name.strip() != "none"]


def _exporter(name: str) -> SpanExporter | None:
    if name == "otlp":
        protocol = os.environ.get(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
        )
        if protocol and protocol != "http/protobuf":
            log.warning("only OTLP over HTTP (http/protobuf) is installed; using it")
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    log.warning("unknown OTEL_TRACES_EXPORTER %r ignored", name)
    return None


def _instrument(provider: TracerProvider) -> None:
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    for instrumentor in (AsyncPGInstrumentor(), HTTPXClientInstrumentor()):  # type: ignore[no-untyped-call]
        try:
            instrumentor.instrument(tracer_provider=provider)
        except Exception as error:  # a missing instrumentation costs spans, never the service
            log.warning("instrumentation failed", extra={"error": repr(error)})
        else:
            _instrumentors.append(instrumentor)


# --- spans ----------------------------------------------------------------------------------


@contextlib.contextmanager
def span(
    name: str,
    *,
    kind: str = INTERNAL,
    parent: TraceContext | None = None,
    attributes: Mapping[str, Any] | None = None,
    request_id: str | None = None,
    bind_when_off: TraceContext | None = None,
) -> Iterator[Span | None]:
    """Run the block in a span under `parent` (else under the current span, else a new trace).

    The span becomes the current OpenTelemetry span and the current `TraceContext`. Off, the
    block only runs with `bind_when_off` (and `request_id`) bound, as before; it gets None.
    """
    if _tracer is None:
        if bind_when_off is None and request_id is None:
            yield None
        else:
            with tracing.bound(trace_context=bind_when_off, request_id=request_id):
                yield None
        return
    from opentelemetry import trace

    otel_span = _tracer.start_span(
        name, context=_context(parent), kind=_kind(kind), attributes=dict(attributes or {})
    )
    with (
        trace.use_span(otel_span, end_on_exit=True, record_exception=True),
        tracing.bound(trace_context=_as_trace_context(otel_span, parent), request_id=request_id),
    ):
        yield otel_span


def _kind(kind: str) -> Any:
    from opentelemetry.trace import SpanKind

    return SpanKind[kind.upper()]


def _context(parent: TraceContext | None) -> Any:
    """An OpenTelemetry context whose span is `parent`, else the bound trace context (ours
    bind their span; a unit of work may bind an event's), else none: a new trace."""
    parent = parent or tracing.current_trace()
    if parent is None:
        return None
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

    state = TraceState.from_header([parent.tracestate]) if parent.tracestate else None
    remote = SpanContext(
        trace_id=parent.trace_id,
        span_id=parent.span_id,
        is_remote=True,
        trace_flags=TraceFlags(parent.flags & 0xFF),
        trace_state=state,
    )
    return trace.set_span_in_context(NonRecordingSpan(remote))


def _as_trace_context(otel_span: Span, parent: TraceContext | None) -> TraceContext:
    context = otel_span.get_span_context()
    # Our own tracestate handling (validation, order) is kept rather than the SDK's.
    state = parent.tracestate if parent is not None else None
    if state is None and (current := tracing.current_trace()) is not None:
        state = current.tracestate if current.trace_id == context.trace_id else None
    return TraceContext(context.trace_id, context.span_id, int(context.trace_flags), state)


# --- HTTP server, Kafka, webhooks -----------------------------------------------------------


def server_span(
    method: str, incoming: TraceContext | None, request_id: str
) -> contextlib.AbstractContextManager[Span | None]:
    """The span of one HTTP request; off, the request's span is `incoming.child()` as before.

    No path or query: a path may name a citizen's pseudonym; the route template names the span.
    """
    return span(
        method,
        kind=SERVER,
        parent=incoming,
        attributes={"http.request.method": method},
        request_id=request_id,
        bind_when_off=incoming.child() if incoming is not None else TraceContext.new(),
    )


def finish_server_span(current: Span | None, method: str, route: str, status: int) -> None:
    """Name the span by route template (low cardinality) once routing chose it."""
    if current is None:
        return
    current.update_name(f"{method} {route}")
    current.set_attributes({"http.route": route, "http.response.status_code": status})
    if status >= 500:
        from opentelemetry.trace import Status, StatusCode

        current.set_status(Status(StatusCode.ERROR))


@contextlib.contextmanager
def kafka_send(topic: str, headers: KafkaHeaders) -> Iterator[KafkaHeaders]:
    """A producer span for one record, under the record's `ce_traceparent`; yields the headers
    to send, whose `ce_traceparent` names the producer span (unchanged when off).

    The span is not made current: a batch holds several open at once.
    """
    if _tracer is None:
        yield headers
        return
    from opentelemetry.trace import Status, StatusCode

    parent = tracing.from_kafka_headers(headers)
    otel_span = _tracer.start_span(
        f"send {topic}",
        context=_context(parent),
        kind=_kind(PRODUCER),
        attributes={
            "messaging.system": "kafka",
            "messaging.operation.type": "send",
            "messaging.destination.name": topic,
        },
    )
    sent = _as_trace_context(otel_span, parent)
    replaced = [(n, v) for n, v in headers if n not in ("ce_traceparent", "ce_tracestate")]
    replaced.extend((f"ce_{name}", value.encode()) for name, value in sent.headers().items())
    try:
        yield replaced
    except BaseException as error:
        otel_span.record_exception(error)
        otel_span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        raise
    finally:
        otel_span.end()


def _receive_attributes(
    topic: str, partition: int, offset: int, group: str | None
) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "messaging.system": "kafka",
        "messaging.operation.type": "process",
        "messaging.destination.name": topic,
        "messaging.destination.partition.id": str(partition),
        "messaging.kafka.offset": offset,
    }
    if group:
        attributes["messaging.consumer.group.name"] = group
    return attributes


def kafka_receive(
    topic: str,
    partition: int,
    offset: int,
    headers: Any,
    *,
    group: str | None = None,
) -> contextlib.AbstractContextManager[Span | None]:
    """A consumer span for processing one record, under its `ce_traceparent`; off, the block
    runs in the record's trace context as before."""
    incoming = tracing.from_kafka_headers(headers)
    return span(
        f"process {topic}",
        kind=CONSUMER,
        parent=incoming,
        attributes=_receive_attributes(topic, partition, offset, group),
        bind_when_off=incoming,
    )


def kafka_received(
    topic: str, partition: int, offset: int, headers: Any, *, group: str | None = None
) -> TraceContext | None:
    """For a record processed later in a batch: a consumer span ended at once, and the trace
    context its effects continue in (off: `incoming.child()`, as before)."""
    incoming = tracing.from_kafka_headers(headers)
    if _tracer is None:
        return incoming.child() if incoming is not None else None
    with span(
        f"receive {topic}",
        kind=CONSUMER,
        parent=incoming,
        attributes=_receive_attributes(topic, partition, offset, group),
    ):
        return tracing.current_trace()


def webhook_delivery(
    message_id: object, endpoint_id: object
) -> contextlib.AbstractContextManager[Span | None]:
    """The span of one webhook delivery attempt (its HTTP call is an httpx child span)."""
    return span(
        "webhook deliver",
        kind=CLIENT,
        attributes={
            "ikd.webhook.message_id": str(message_id),
            "ikd.webhook.endpoint_id": str(endpoint_id),
        },
    )
