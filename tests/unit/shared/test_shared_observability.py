"""Shared observability: W3C trace context, the request middleware, JSON logs, operations routes."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from ikd_shared import api, logs, tracing
from ikd_shared.api import install_error_handlers
from ikd_shared.errors import ApiError
from ikd_shared.events.envelope import CloudEvent, from_kafka, to_kafka
from ikd_shared.tracing import TraceContext, parse_traceparent

# The example of the W3C Trace Context recommendation.
SPEC_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPEC_PARENT = "00f067aa0ba902b7"
SPEC_TRACEPARENT = f"00-{SPEC_TRACE}-{SPEC_PARENT}-01"

# --- traceparent ---------------------------------------------------------------------------


def test_parses_the_spec_example() -> None:
    context = parse_traceparent(SPEC_TRACEPARENT, "congo=t61rcWkgMzE")
    assert context is not None
    assert context.trace_id_hex == SPEC_TRACE
    assert context.span_id_hex == SPEC_PARENT
    assert context.sampled
    assert context.tracestate == "congo=t61rcWkgMzE"
    assert context.headers() == {"traceparent": SPEC_TRACEPARENT, "tracestate": "congo=t61rcWkgMzE"}


@pytest.mark.parametrize(
    "value",
    [
        "",
        "garbage",
        f"00-{SPEC_TRACE.upper()}-{SPEC_PARENT}-01",  # upper-case hex is invalid
        f"00-{'0' * 32}-{SPEC_PARENT}-01",  # all-zero trace id
        f"00-{SPEC_TRACE}-{'0' * 16}-01",  # all-zero parent id
        f"ff-{SPEC_TRACE}-{SPEC_PARENT}-01",  # version ff is forbidden
        f"00-{SPEC_TRACE}-{SPEC_PARENT}-01-extra",  # version 00 has exactly four fields
        f"00-{SPEC_TRACE[:-1]}-{SPEC_PARENT}-01",  # short trace id
        f"00-{SPEC_TRACE}-{SPEC_PARENT}-1",  # short flags
        f"00_{SPEC_TRACE}_{SPEC_PARENT}_01",
    ],
)
def test_refuses_invalid_traceparents(value: str) -> None:
    assert parse_traceparent(value) is None


def test_accepts_a_future_version_with_more_fields_and_formats_version_00() -> None:
    context = parse_traceparent(f"01-{SPEC_TRACE}-{SPEC_PARENT}-00-what-comes-next")
    assert context is not None
    assert context.traceparent == f"00-{SPEC_TRACE}-{SPEC_PARENT}-00"
    assert not context.sampled


def test_invalid_tracestate_is_dropped_but_the_traceparent_kept() -> None:
    context = parse_traceparent(SPEC_TRACEPARENT, "not a valid list member")
    assert context is not None
    assert context.tracestate is None
    assert "tracestate" not in context.headers()


def test_child_keeps_trace_flags_and_state_with_a_new_parent_id() -> None:
    parent = parse_traceparent(SPEC_TRACEPARENT, "congo=t61rcWkgMzE")
    assert parent is not None
    children = {parent.child() for _ in range(50)}
    assert {c.trace_id_hex for c in children} == {SPEC_TRACE}
    assert {c.flags for c in children} == {1}
    assert {c.tracestate for c in children} == {"congo=t61rcWkgMzE"}
    span_ids = {c.span_id for c in children}
    assert parent.span_id not in span_ids
    assert len(span_ids) == 50


def test_new_traces_are_valid_and_distinct() -> None:
    roots = [TraceContext.new() for _ in range(50)]
    assert len({r.trace_id for r in roots}) == 50
    for root in roots:
        assert parse_traceparent(root.traceparent) == root
        assert not root.sampled


@given(
    trace_id=st.integers(min_value=1, max_value=2**128 - 1),
    span_id=st.integers(min_value=1, max_value=2**64 - 1),
    flags=st.integers(min_value=0, max_value=255),
)
def test_format_then_parse_round_trips(trace_id: int, span_id: int, flags: int) -> None:
    context = TraceContext(trace_id, span_id, flags)
    text = context.traceparent
    assert len(text) == 55
    assert text == f"00-{trace_id:032x}-{span_id:016x}-{flags:02x}"
    assert parse_traceparent(text) == context


def test_trace_context_travels_as_cloudevents_extension_over_kafka() -> None:
    context = TraceContext.new().child()
    event = CloudEvent(type="t.v1", source="/test", data=b"{}", extensions=context.extensions())
    record = to_kafka(event)
    headers = dict(record.headers)
    assert headers["ce_traceparent"] == context.traceparent.encode()
    assert tracing.from_kafka_headers(record.headers) == context
    back = from_kafka(record.key, record.value, record.headers)
    assert tracing.from_extensions(back.extensions) == context


def test_records_without_or_with_broken_trace_headers_have_no_context() -> None:
    assert tracing.from_kafka_headers([("ce_id", b"1")]) is None
    assert tracing.from_kafka_headers([("ce_traceparent", b"\xff\xfe")]) is None
    assert tracing.from_kafka_headers([("ce_traceparent", None)]) is None


# --- JSON logs -----------------------------------------------------------------------------


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger("ikd.test.observability")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield stream
    finally:
        logger.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_log_lines_are_json_with_extras_fields_and_exceptions(captured: io.StringIO) -> None:
    log = logging.getLogger("ikd.test.observability")
    log.info("plain %s", "message", extra={"relay": "r1", "count": 3, "odd": {1, 2}})
    log.warning("audit style", extra={"fields": {"tree_size": 7}})
    try:
        raise ValueError("boom")
    except ValueError:
        log.exception("failed")
    first, second, third = lines(captured)
    assert first["message"] == "plain message"
    assert first["level"] == "info"
    assert first["logger"] == "ikd.test.observability"
    assert first["relay"] == "r1"
    assert first["count"] == 3
    assert isinstance(first["odd"], str)
    assert "request_id" not in first
    assert "trace_id" not in first
    assert second["tree_size"] == 7
    assert "fields" not in second
    assert "ValueError: boom" in third["exception"]


def test_log_lines_carry_the_bound_request_id_and_trace(captured: io.StringIO) -> None:
    log = logging.getLogger("ikd.test.observability")
    context = TraceContext.new()
    with tracing.bound(trace_context=context, request_id="req-1"):
        log.info("inside")
        assert tracing.current_request_id() == "req-1"
        assert tracing.current_trace() == context
    log.info("outside")
    inside, outside = lines(captured)
    assert inside["request_id"] == "req-1"
    assert inside["trace_id"] == context.trace_id_hex
    assert inside["span_id"] == context.span_id_hex
    assert "request_id" not in outside
    assert tracing.current_trace() is None


def test_configure_logging_installs_the_json_formatter_on_root() -> None:
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    try:
        logs.configure_logging("debug")
        assert root.level == logging.DEBUG
        assert any(isinstance(h.formatter, logs.JsonFormatter) for h in root.handlers)
        assert logging.getLogger("aiokafka").level == logging.WARNING
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])


# --- the middleware and the operations routes ----------------------------------------------


class Teapot(ApiError):
    status_code = 418
    code = "teapot"


def make_app(
    checks: dict[str, api.Check] | None = None, refreshed: list[int] | None = None
) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)
    seen: list[dict[str, Any]] = []
    app.state.seen = seen

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, Any]:
        context = tracing.current_trace()
        assert context is not None
        seen.append({"request_id": tracing.current_request_id(), "trace": context, "item": item_id})
        logging.getLogger("ikd.test.observability").info("handling")
        if item_id == 418:
            raise Teapot("short and stout")
        return {"item": item_id}

    async def refresh() -> None:
        if refreshed is not None:
            refreshed.append(1)

    app.include_router(
        api.operations_router(checks=checks or {}, refresh=[refresh], check_timeout=0.2)
    )
    app.add_middleware(api.RequestObservability)
    return app


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def count(route: str, status: str, method: str = "GET") -> float:
    value = REGISTRY.get_sample_value(
        "ikd_http_request_duration_seconds_count",
        {"method": method, "route": route, "status": status},
    )
    return value or 0.0


async def test_middleware_times_requests_by_route_template_and_status() -> None:
    app = make_app()
    ok_before = count("/items/{item_id}", "200")
    teapot_before = count("/items/{item_id}", "418")
    missing_before = count("unmatched", "404")
    async with client(app) as http:
        assert (await http.get("/items/1")).status_code == 200
        assert (await http.get("/items/2")).status_code == 200
        assert (await http.get("/items/418")).status_code == 418
        assert (await http.get("/no/such/path/123")).status_code == 404
    assert count("/items/{item_id}", "200") == ok_before + 2
    assert count("/items/{item_id}", "418") == teapot_before + 1
    assert count("unmatched", "404") == missing_before + 1
    assert (
        REGISTRY.get_sample_value(
            "ikd_http_request_duration_seconds_count",
            {"method": "GET", "route": "/items/1", "status": "200"},
        )
        is None
    ), "the route template is the label, never the concrete path"


async def test_middleware_echoes_a_valid_request_id_and_continues_the_trace(
    captured: io.StringIO,
) -> None:
    app = make_app()
    async with client(app) as http:
        response = await http.get(
            "/items/7",
            headers={
                "X-Request-ID": "counter-42.abc",
                "traceparent": SPEC_TRACEPARENT,
                "tracestate": "congo=t61rcWkgMzE",
            },
        )
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "counter-42.abc"
    (seen,) = app.state.seen
    assert seen["request_id"] == "counter-42.abc"
    trace: TraceContext = seen["trace"]
    assert trace.trace_id_hex == SPEC_TRACE
    assert trace.span_id_hex != SPEC_PARENT, "the server span is a child of the caller's"
    assert trace.tracestate == "congo=t61rcWkgMzE"
    (line,) = lines(captured)
    assert line["request_id"] == "counter-42.abc"
    assert line["trace_id"] == SPEC_TRACE
    assert line["span_id"] == trace.span_id_hex
    assert tracing.current_request_id() is None, "the context does not leak"
    assert tracing.current_trace() is None


@pytest.mark.parametrize("given_id", [None, "", "has space", "x" * 129, "new\nline", "ünï"])
async def test_middleware_generates_an_id_and_a_trace_when_absent_or_unusable(
    given_id: str | None,
) -> None:
    app = make_app()
    headers: dict[str, str | bytes] = {"traceparent": "00-broken"}
    if given_id is not None:
        headers["X-Request-ID"] = given_id.encode("latin-1")
    async with client(app) as http:
        response = await http.get("/items/3", headers=headers)
    generated = response.headers["x-request-id"]
    assert generated != given_id
    assert len(generated) == 32
    assert app.state.seen[0]["request_id"] == generated
    assert app.state.seen[0]["trace"].trace_id != 0


async def test_error_answers_carry_the_request_id_too() -> None:
    async with client(make_app()) as http:
        response = await http.get("/items/418", headers={"X-Request-ID": "r-418"})
        missing = await http.get("/nowhere", headers={"X-Request-ID": "r-404"})
    assert response.status_code == 418
    assert response.headers["x-request-id"] == "r-418"
    assert missing.headers["x-request-id"] == "r-404"


async def test_concurrent_requests_keep_their_own_ids() -> None:
    app = make_app()
    async with client(app) as http:
        responses = await asyncio.gather(
            *(http.get(f"/items/{i}", headers={"X-Request-ID": f"req-{i}"}) for i in range(20))
        )
    assert [r.headers["x-request-id"] for r in responses] == [f"req-{i}" for i in range(20)]
    assert sorted((s["item"], s["request_id"]) for s in app.state.seen) == [
        (i, f"req-{i}") for i in range(20)
    ]


async def test_healthz_readyz_and_metrics() -> None:
    async def fine() -> None:
        return None

    async def down() -> None:
        raise ConnectionRefusedError("connection refused")

    async def hangs() -> None:
        await asyncio.sleep(5)

    refreshed: list[int] = []
    ready = make_app({"postgresql": fine, "kafka": fine}, refreshed)
    not_ready = make_app({"postgresql": fine, "kafka": down, "consumer": hangs})
    async with client(ready) as http:
        assert (await http.get("/healthz")).json() == {"status": "ok"}
        answer = await http.get("/readyz")
        assert answer.status_code == 200
        assert answer.json() == {"status": "ready", "checks": {"postgresql": "ok", "kafka": "ok"}}
        metrics = await http.get("/metrics")
        assert metrics.status_code == 200
        assert metrics.headers["content-type"].startswith("text/plain")
        assert "ikd_http_request_duration_seconds_bucket" in metrics.text
        assert refreshed == [1]
        schema = (await http.get("/openapi.json")).json()
        assert not {"/healthz", "/readyz", "/metrics"} & set(schema["paths"])
    async with client(not_ready) as http:
        assert (await http.get("/healthz")).status_code == 200
        answer = await http.get("/readyz")
    assert answer.status_code == 503
    assert answer.headers["content-type"] == "application/problem+json"
    body = answer.json()
    assert body["code"] == "not_ready"
    assert body["failed"] == ["consumer", "kafka"]
    assert body["checks"]["postgresql"] == "ok"
    assert "connection refused" in body["checks"]["kafka"]
    assert "timed out" in body["checks"]["consumer"]


async def test_a_failing_refresh_does_not_break_metrics() -> None:
    async def broken() -> None:
        raise RuntimeError("database gone")

    app = FastAPI()
    app.include_router(api.operations_router(checks={}, refresh=[broken]))
    async with client(app) as http:
        response = await http.get("/metrics")
    assert response.status_code == 200
    assert "ikd_http_request_duration_seconds" in response.text


async def test_operations_routes_can_be_in_the_schema_tagged_operations() -> None:
    app = FastAPI()
    app.include_router(api.operations_router(checks={}, include_in_schema=True))
    async with client(app) as http:
        schema = (await http.get("/openapi.json")).json()
    for path in ("/healthz", "/readyz", "/metrics"):
        assert schema["paths"][path]["get"]["tags"] == ["operations"]
