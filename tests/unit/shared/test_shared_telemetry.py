"""Span export: off unless an `OTEL_*` variable asks for it; on, real OTLP/HTTP export."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from typing import ClassVar

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ikd_shared import telemetry
from ikd_shared.tracing import TraceContext, current_trace

OFF_SCRIPT = """
import sys, asyncpg
import ikd_shared.api, ikd_shared.kafka, ikd_gateway.bootstrap, ikd_identity.bootstrap
import ikd_audit.bootstrap
from ikd_shared import telemetry
assert telemetry.setup("ikd-test") is False
assert not telemetry.enabled()
heavy = ("opentelemetry.sdk", "opentelemetry.exporter", "opentelemetry.instrumentation")
loaded = sorted(m for m in sys.modules if m.startswith(heavy))
assert not loaded, loaded
assert not hasattr(asyncpg.Connection.execute, "__wrapped__"), "asyncpg was instrumented"
print("off")
"""


def _env_without_otel() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, False),
        ({"OTEL_SERVICE_NAME": "x"}, False),  # a name alone exports nowhere
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://h:4318"}, False),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://h:4318"}, False),
    ],
)
def test_configured_only_by_an_exporter_variable(environ: dict[str, str], expected: bool) -> None:
    assert telemetry.configured(environ) is expected


def test_nothing_is_set_up_without_otel_variables() -> None:
    """No SDK, exporter or instrumentation is even imported, with every service's bootstrap."""
    done = subprocess.run(  # noqa: S603 (this interpreter, our script)
        [sys.executable, "-c", OFF_SCRIPT],
        env=_env_without_otel(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "off"


def test_off_helpers_keep_the_former_trace_context() -> None:
    assert not telemetry.enabled()
    incoming = TraceContext.new(sampled=True)
    with telemetry.server_span("GET", incoming, "r1") as span:
        assert span is None
        bound = current_trace()
        assert bound is not None
        assert bound.trace_id == incoming.trace_id
        assert bound.span_id != incoming.span_id
    headers = [("ce_traceparent", incoming.traceparent.encode())]
    with telemetry.kafka_send("t", headers) as sent:
        assert sent is headers
    received = telemetry.kafka_received("t", 0, 1, headers)
    assert received is not None
    assert received.trace_id == incoming.trace_id


class _Receiver(http.server.BaseHTTPRequestHandler):
    bodies: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        self.bodies.append((self.path, self.rfile.read(length)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[tuple[str, bytes]]]]:
    _Receiver.bodies = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", _Receiver.bodies
    finally:
        server.shutdown()
        server.server_close()


def test_spans_reach_an_otlp_http_endpoint_named_by_the_environment(
    receiver: tuple[str, list[tuple[str, bytes]]],
) -> None:
    endpoint, bodies = receiver
    script = textwrap.dedent(
        """
        from ikd_shared import telemetry
        from ikd_shared.tracing import TraceContext
        assert telemetry.setup("ikd-test")
        parent = TraceContext.new(sampled=True)
        with telemetry.span("probe", parent=parent):
            pass
        telemetry.shutdown()
        print(parent.trace_id_hex)
        """
    )
    env = {
        **_env_without_otel(),
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_SERVICE_NAME": "ikd-probe",
    }
    done = subprocess.run(  # noqa: S603 (this interpreter, our script)
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    trace_id = done.stdout.strip()
    assert [path for path, _ in bodies] == ["/v1/traces"]
    request = ExportTraceServiceRequest.FromString(bodies[0][1])
    (resource_spans,) = request.resource_spans
    service = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert service["service.name"] == "ikd-probe"
    (span,) = [s for scope in resource_spans.scope_spans for s in scope.spans]
    assert span.name == "probe"
    assert span.trace_id.hex() == trace_id
