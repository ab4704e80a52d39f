"""Exported spans across the services, with the real broker and databases.

A verification request to identity, its outbox row published to Kafka, the gateway's
consumption of the profile event and the access event the gateway publishes in turn: every
span is exported (in memory here), all in the caller's trace, each the child of the one before.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from ikd_dev.issuer import mint_credential
from ikd_dev.synthetic import citizen
from ikd_gateway.bootstrap import bootstrap as gateway_bootstrap
from ikd_gateway.config import GatewaySettings
from ikd_gateway.entrypoints.worker import StreamProcessor
from ikd_identity.bootstrap import build_relay
from ikd_shared import telemetry
from ikd_shared.auth import TokenIssuer
from ikd_shared.credentials import Purpose
from ikd_shared.events.topics import ACCESS, PROFILE
from ikd_shared.pseudonym import pseudonymize
from ikd_shared.tracing import TraceContext, from_kafka_headers
from tests.integration.shared.test_shared_trace_context import (
    AGENCY,
    AUDIENCE,
    GATEWAY_MIGRATIONS,
    ISSUER,
    SERVICE,
    read_all,
    read_one,
)
from tests.integration.shared.test_shared_trace_context import (
    identity as identity,  # the fixture, used by name below
)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    assert telemetry.setup("ikd-test", exporter=exporter)
    try:
        yield exporter
    finally:
        telemetry.shutdown()


def _one(spans: list[ReadableSpan], kind: SpanKind, name: str) -> ReadableSpan:
    found = [s for s in spans if s.kind == kind and s.name == name]
    assert len(found) == 1, [(s.kind, s.name) for s in spans]
    return found[0]


def _parent(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


async def test_one_trace_from_an_http_request_through_kafka_to_the_gateway(
    spans: InMemorySpanExporter,
    identity: Any,
    database_factory: Any,
    topic_prefix: str,
    kafka_bootstrap: str,
) -> None:
    settings, app, client, issuer_key = identity
    incoming = TraceContext.new(sampled=True)
    profile = citizen(22, 0)
    token = app.state.container.token_issuer.issue(
        "counter", {"identity:verify"}, ["ikd-identity"], agency="disdukcapil-cirebon"
    )
    credential = mint_credential(
        issuer_key,
        kid="k1",
        issuer=ISSUER,
        purpose=Purpose.VERIFICATION,
        audience=AUDIENCE,
        profile=profile,
    )
    response = await client.post(
        "/v1/verifications",
        json={"credential": credential, "services": [SERVICE]},
        headers={"Authorization": f"Bearer {token}", **incoming.headers()},
    )
    assert response.status_code == 200, response.text

    stop = asyncio.Event()
    relay = asyncio.create_task(build_relay(settings).run(stop))
    try:
        record = await read_one(kafka_bootstrap, PROFILE.full_name(topic_prefix))
    finally:
        stop.set()
        await relay

    gateway_db = await database_factory("gateway", GATEWAY_MIGRATIONS)
    tokens = TokenIssuer(Ed25519PrivateKey.generate(), kid="t", issuer="ikd-identity")
    gateway_settings = GatewaySettings(
        **{  # type: ignore[arg-type]
            "agency": AGENCY,
            "database_url": gateway_db.app_dsn,
            "token_jwks": json.dumps(tokens.jwks()),
        }
    ).model_copy(update={"kafka_topic_prefix": topic_prefix})
    async with gateway_bootstrap(gateway_settings) as gateway:
        processor = StreamProcessor(gateway)
        try:
            message = (record.topic, record.partition, record.offset, record.key, record.value)
            await processor.on_profiles([(*message, list(record.headers))])
            published = await gateway.relay.publish_batch()
        finally:
            await processor.close()
    accesses = await read_all(kafka_bootstrap, ACCESS.full_name(topic_prefix), published)
    (view_access,) = [a for a in accesses if json.loads(a.value)["channel"] == "view"]

    finished = list(spans.get_finished_spans())
    in_trace = [s for s in finished if s.context.trace_id == incoming.trace_id]
    profile_topic = PROFILE.full_name(topic_prefix)
    access_topic = ACCESS.full_name(topic_prefix)

    server = _one(in_trace, SpanKind.SERVER, "POST /v1/verifications")
    assert _parent(server) == incoming.span_id, "the caller's span is the server span's parent"
    assert server.attributes is not None
    assert server.attributes["http.response.status_code"] == 200
    queries = [
        s
        for s in in_trace
        if s.kind == SpanKind.CLIENT
        and (s.attributes or {}).get("db.system", (s.attributes or {}).get("db.system.name"))
        == "postgresql"
    ]
    assert any(_parent(q) == server.context.span_id for q in queries), "PostgreSQL spans"

    send = _one(in_trace, SpanKind.PRODUCER, f"send {profile_topic}")
    # The outbox row kept the server span's context; the relay's send span continues it.
    assert _parent(send) == server.context.span_id
    carried = from_kafka_headers(record.headers)
    assert carried is not None
    assert carried.span_id == send.context.span_id, "ce_traceparent names the send span"

    receive = _one(in_trace, SpanKind.CONSUMER, f"receive {profile_topic}")
    assert _parent(receive) == send.context.span_id
    access_sends = [
        s for s in in_trace if s.kind == SpanKind.PRODUCER and s.name == f"send {access_topic}"
    ]
    assert access_sends, [(s.kind, s.name) for s in in_trace]
    view_trace = from_kafka_headers(view_access.headers)
    assert view_trace is not None
    (view_send,) = [s for s in access_sends if s.context.span_id == view_trace.span_id]
    assert _parent(view_send) == receive.context.span_id, "the gateway's effects continue it"
    services = {s.resource.attributes["service.name"] for s in in_trace}
    assert services == {"ikd-test"}

    # Spans name routes, topics and SQL text, never a citizen: no NIK, no pseudonym.
    pseudonym = pseudonymize(profile.nik, settings.pseudonym_key.get_secret_value().encode())
    for span in finished:
        for value in (span.attributes or {}).values():
            assert profile.nik not in str(value), span.name
            assert pseudonym not in str(value), span.name
