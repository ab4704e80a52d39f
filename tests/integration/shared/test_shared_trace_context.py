"""W3C trace context across the services, with the real broker and databases.

A traceparent sent with a verification request to identity comes out as `ce_traceparent` on the
profile event in Kafka; the gateway that consumes the event emits its access event (the read of
the profile into its view) in the same trace, as a child span; a prefill request's own
traceparent reaches its access event. Each service answers /healthz, /readyz and /metrics.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI

from ikd_dev.issuer import generate_issuer_key, mint_credential, public_jwk
from ikd_dev.synthetic import citizen
from ikd_gateway.bootstrap import bootstrap as gateway_bootstrap
from ikd_gateway.config import GatewaySettings
from ikd_gateway.entrypoints.api import create_app as create_gateway_app
from ikd_gateway.entrypoints.worker import StreamProcessor
from ikd_identity.bootstrap import build_relay
from ikd_identity.config import IdentitySettings
from ikd_identity.entrypoints.api import create_app as create_identity_app
from ikd_shared.auth import TokenIssuer
from ikd_shared.credentials import Purpose
from ikd_shared.events.topics import ACCESS, PROFILE
from ikd_shared.pseudonym import pseudonymize
from ikd_shared.tracing import TraceContext, from_kafka_headers, parse_traceparent
from tests.support.kafka import kafka_connection

REPO = Path(__file__).resolve().parents[3]
IDENTITY_MIGRATIONS = REPO / "services" / "identity" / "migrations"
GATEWAY_MIGRATIONS = REPO / "services" / "agency_gateway" / "migrations"
ISSUER = "https://dukcapil.test/ikd"
AUDIENCE = "ikd-mpp-test"
AGENCY = "polres-cirebon"  # holds profile fields without a consent (public task)
SERVICE = "skck"


def _pem(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.fixture
async def identity(database_factory: Any, topic_prefix: str) -> AsyncIterator[Any]:
    database = await database_factory("identity", IDENTITY_MIGRATIONS)
    issuer_key = generate_issuer_key("EdDSA")
    env = {
        "IKD_IDENTITY_DATABASE_URL": database.app_dsn,
        "IKD_IDENTITY_TRUST_JWKS": json.dumps({"keys": [public_jwk(issuer_key, "k1")]}),
        "IKD_IDENTITY_CREDENTIAL_ISSUER": ISSUER,
        "IKD_IDENTITY_VERIFICATION_AUDIENCE": AUDIENCE,
        "IKD_IDENTITY_TOKEN_SIGNING_KEY": _pem(Ed25519PrivateKey.generate()),
        "IKD_IDENTITY_RELAY_POLL_INTERVAL_S": "0.1",
        "IKD_KAFKA_TOPIC_PREFIX": topic_prefix,
    }
    with mock.patch.dict(os.environ, env):
        settings = IdentitySettings()  # type: ignore[call-arg]
    app = create_identity_app(settings, run_relay=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://identity") as client:
            yield settings, app, client, issuer_key


async def read_one(bootstrap: str, topic: str, timeout: float = 20.0) -> Any:  # noqa: ASYNC109
    consumer = kafka_connection(bootstrap).consumer(topic, group=None, auto_offset_reset="earliest")
    await consumer.start()
    try:
        async with asyncio.timeout(timeout):
            while True:
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    return records[0]
    finally:
        await consumer.stop()


async def read_all(bootstrap: str, topic: str, count: int, timeout: float = 20.0) -> list[Any]:  # noqa: ASYNC109
    consumer = kafka_connection(bootstrap).consumer(topic, group=None, auto_offset_reset="earliest")
    await consumer.start()
    found: list[Any] = []
    try:
        async with asyncio.timeout(timeout):
            while len(found) < count:
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    found.extend(records)
    finally:
        await consumer.stop()
    return found


async def check_operations(
    client: httpx.AsyncClient, gauge: str, *, checks: tuple[str, ...] = ("postgresql", "kafka")
) -> None:
    assert (await client.get("/healthz")).status_code == 200
    ready = await client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == dict.fromkeys(checks, "ok")
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    assert gauge in metrics.text
    assert "ikd_http_request_duration_seconds_bucket" in metrics.text


async def test_traceparent_flows_from_a_verification_to_the_profile_event_and_access_events(
    identity: Any, database_factory: Any, topic_prefix: str, kafka_bootstrap: str
) -> None:
    settings, app, client, issuer_key = identity
    root = TraceContext.new(sampled=True)
    incoming = TraceContext(root.trace_id, root.span_id, root.flags, "ikd=counter")
    profile = citizen(21, 0)
    container: Any = app.state.container
    token = container.token_issuer.issue(
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
        # SKCK too: polres-cirebon's gateway holds the citizen only for a service they asked for.
        json={"credential": credential, "services": ["family-card-update", SERVICE]},
        headers={
            "Authorization": f"Bearer {token}",
            "X-Request-ID": "counter-1",
            **incoming.headers(),
        },
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == "counter-1"
    await check_operations(client, "ikd_identity_outbox_backlog 1.0")

    stop = asyncio.Event()
    relay = asyncio.create_task(build_relay(settings).run(stop))
    try:
        record = await read_one(kafka_bootstrap, PROFILE.full_name(topic_prefix))
    finally:
        stop.set()
        await relay
    headers = dict(record.headers)
    published = parse_traceparent(headers["ce_traceparent"].decode())
    assert published is not None
    print("identity request", incoming.traceparent, "-> profile event", published.traceparent)
    assert published.trace_id == incoming.trace_id, "the event is in the caller's trace"
    assert published.span_id != incoming.span_id, "its parent is identity's server span"
    assert published.sampled
    assert headers["ce_tracestate"] == b"ikd=counter"

    # The gateway consumes that record (the worker's own processing, in-process) and relays the
    # access event of the view write.
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
            await processor.on_profiles(
                [
                    (
                        record.topic,
                        record.partition,
                        record.offset,
                        record.key,
                        record.value,
                        list(record.headers),
                    )
                ]
            )
            # The view write's access event, beside those of its agency-topic publication.
            published_count = await gateway.relay.publish_batch()
            accesses = await read_all(
                kafka_bootstrap, ACCESS.full_name(topic_prefix), published_count
            )
            (view_access,) = [a for a in accesses if json.loads(a.value)["channel"] == "view"]
            view_trace = from_kafka_headers(view_access.headers)
            assert view_trace is not None
            print("profile event", published.traceparent, "-> view access", view_trace.traceparent)
            assert json.loads(view_access.value)["channel"] == "view"
            assert view_trace.trace_id == incoming.trace_id, "same trace as the verification"
            assert view_trace.span_id not in (incoming.span_id, published.span_id)
            assert view_trace.tracestate == "ikd=counter"

            # A prefill request's own trace context reaches its access event.
            gateway_app: FastAPI = create_gateway_app(gateway.settings, runtime=gateway)
            prefill_trace = TraceContext.new()
            transport = httpx.ASGITransport(app=gateway_app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as gw:
                pseudonym = pseudonymize(
                    profile.nik, settings.pseudonym_key.get_secret_value().encode()
                )
                answer = await gw.get(
                    f"/v1/prefill/{SERVICE}",
                    params={"pseudonym": pseudonym},
                    headers={
                        "Authorization": "Bearer "
                        + tokens.issue(
                            "backend", {"gateway:prefill"}, ["ikd-gateway"], agency=AGENCY
                        ),
                        "X-Request-ID": "prefill-1",
                        **prefill_trace.headers(),
                    },
                )
                assert answer.status_code == 200, answer.text
                assert answer.headers["x-request-id"] == "prefill-1"
                await check_operations(
                    gw,
                    "ikd_gateway_access_outbox_backlog 1.0",
                    checks=("postgresql", "kafka", "agency-topic", "token-keys"),
                )
            assert await gateway.relay.publish_batch() == 1
            records = await read_all(kafka_bootstrap, ACCESS.full_name(topic_prefix), 2)
            prefill_access = next(r for r in records if json.loads(r.value)["channel"] == "prefill")
            body = json.loads(prefill_access.value)
            assert body["correlation_id"] == "prefill-1"
            prefill_seen = from_kafka_headers(prefill_access.headers)
            assert prefill_seen is not None
            assert prefill_seen.trace_id == prefill_trace.trace_id
            assert prefill_seen.span_id != prefill_trace.span_id
        finally:
            await processor.close()
