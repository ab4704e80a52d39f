"""W3C trace context and the per-task correlation context, with no web or telemetry library.

- `TraceContext`: a trace id, the current span id, flags and `tracestate`, parsed from and
  formatted to the W3C Trace Context headers (`traceparent`, `tracestate`). On Kafka it travels
  as the CloudEvents distributed-tracing extension (`ce_traceparent`, `ce_tracestate`).
- `bound(...)` makes a trace context and a correlation id (`request_id`) current for a block;
  the JSON log formatter and outgoing events read them from here.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
import secrets
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

# The W3C Trace Context grammar, as OpenTelemetry's propagator applies it.
_TRACEPARENT = re.compile(
    r"^[ \t]*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(?:(-.*)|[ \t]*)$"
)
_TRACEPARENT_MAX = 512
_KEY = (
    r"[a-z][_0-9a-z\-\*\/]{0,255}|"
    r"[a-z0-9][_0-9a-z\-\*\/]{0,240}@[a-z][_0-9a-z\-\*\/]{0,13}"
)
_VALUE = r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]"
_MEMBER = re.compile(f"({_KEY})=({_VALUE})")
_TRACESTATE_MAX = 8192
_TRACESTATE_MAX_MEMBERS = 32


@dataclass(frozen=True, slots=True)
class TraceContext:
    """A W3C trace context: the trace, the current span (the parent of what it causes), flags."""

    trace_id: int
    span_id: int
    flags: int = 0
    tracestate: str | None = None

    @property
    def trace_id_hex(self) -> str:
        return f"{self.trace_id:032x}"

    @property
    def span_id_hex(self) -> str:
        return f"{self.span_id:016x}"

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
        carrier = {TRACEPARENT: self.traceparent}
        state = _parse_tracestate([self.tracestate]) if self.tracestate else None
        if state:
            carrier[TRACESTATE] = state
        return carrier

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id_hex}-{self.span_id_hex}-{self.flags & 0xFF:02x}"

    def extensions(self) -> dict[str, str]:
        """CloudEvents distributed-tracing extension attributes (`ce_traceparent` on Kafka)."""
        return self.headers()


def _random_bits(bits: int) -> int:
    while True:
        value = secrets.randbits(bits)
        if value:  # all-zero ids are invalid
            return value


def _parse_tracestate(fields: list[str]) -> str | None:
    """The list members of `tracestate` fields, normalised; None if any member is invalid."""
    if sum(len(field) for field in fields) + len(fields) - 1 > _TRACESTATE_MAX:
        return None
    pairs: dict[str, str] = {}
    for field in fields:
        for raw in field.split(","):
            member = raw.strip(" \t")  # optional whitespace (RFC 9110, 5.6.3)
            if not member:
                continue
            match = _MEMBER.fullmatch(member)
            if match is None or match[1] in pairs:
                return None
            pairs[match[1]] = match[2]
    if len(pairs) > _TRACESTATE_MAX_MEMBERS:
        return None
    return ",".join(f"{key}={value}" for key, value in pairs.items()) or None


def parse_traceparent(
    traceparent: str | None, tracestate: str | None = None
) -> TraceContext | None:
    """The trace context in a `traceparent` (and `tracestate`) value; None if absent or invalid.

    An invalid `tracestate` is dropped and the `traceparent` kept, as the recommendation says.
    """
    if not traceparent or len(traceparent) > _TRACEPARENT_MAX:
        return None
    match = _TRACEPARENT.search(traceparent)
    if match is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if trace_id == "0" * 32 or span_id == "0" * 16 or version == "ff":
        return None
    if version == "00" and rest:  # version 00 has exactly four fields
        return None
    return TraceContext(
        trace_id=int(trace_id, 16),
        span_id=int(span_id, 16),
        flags=int(flags, 16),
        tracestate=_parse_tracestate([tracestate]) if tracestate else None,
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
