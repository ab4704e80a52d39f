"""A webhook test event and a redelivery against the real servers: `ikd-gateway serve` (its API
over HTTP and its worker) on the real database and broker, delivering to a receiver on a local
port that verifies each signature with the `standardwebhooks` library."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from standardwebhooks import Webhook

from ikd_shared.events import to_cloudevent
from ikd_shared.events.envelope import CloudEvent
from ikd_shared.events.profile_v1 import TOMBSTONE_TYPE, CitizenDied
from ikd_shared.events.topics import ACCESS, PROFILE
from tests.integration.gateway.test_gateway_serve import free_port
from tests.support.environment import REPO
from tests.support.gateway import gateway_env, read_topic
from tests.support.gateway_factories import Tokens, profile, verified
from tests.support.polling import eventually

AGENCY, SERVICE = "dinsos-cirebon", "social-assistance"


class Receiver:
    """An agency's webhook receiver: records every request, answers 200."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        received = self.received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def with_id(self, webhook_id: str) -> list[tuple[dict[str, str], bytes]]:
        return [(h, b) for h, b in self.received if h["webhook-id"] == webhook_id]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    thread = threading.Thread(target=found.server.serve_forever, daemon=True)
    thread.start()
    yield found
    found.server.shutdown()
    found.server.server_close()


@pytest.fixture
def api(gateway_db: Any, topic_prefix: str, tokens: Tokens, tmp_path: Path) -> Iterator[str]:
    """`ikd-gateway serve`: the API on a free port and the worker, as deployed."""
    port = free_port()
    env = gateway_env(
        AGENCY,
        gateway_db,
        topic_prefix,
        tokens,
        tmp_path,
        IKD_GATEWAY_PORT=port,
        IKD_GATEWAY_WORKER_METRICS_PORT=free_port(),
    )
    log = tmp_path / "serve.log"
    with log.open("ab") as out:
        serve = subprocess.Popen(
            [sys.executable, "-m", "ikd_gateway", "serve"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.terminate()
        try:
            serve.wait(timeout=40)
        except subprocess.TimeoutExpired:
            serve.kill()
            serve.wait()
        print(log.read_text()[-3000:])


def verify(secret: str, headers: dict[str, str], body: bytes) -> dict[str, Any]:
    payload: dict[str, Any] = Webhook(secret).verify(body, headers)
    return payload


async def test_test_event_and_redelivery_through_the_running_gateway(
    api: str,
    receiver: Receiver,
    producer: Any,
    db: asyncpg.Connection,
    topic_prefix: str,
    kafka_bootstrap: str,
    tokens: Tokens,
) -> None:
    manage = {"authorization": f"Bearer {tokens.for_agency(AGENCY, {'gateway:webhooks'})}"}
    async with httpx.AsyncClient(base_url=api, timeout=10) as client:

        async def up() -> bool:
            try:
                return (await client.get("/healthz")).status_code == 200
            except httpx.HTTPError:
                return False

        await eventually(up, timeout=180, interval=0.5)
        refused = await client.post(
            f"/v1/webhooks/endpoints/{uuid.uuid4()}/test",
            headers={"authorization": f"Bearer {tokens.for_agency(AGENCY)}"},
        )
        assert (refused.status_code, refused.json()["code"]) == (403, "insufficient_scope")

        created = await client.post(
            "/v1/webhooks/endpoints", headers=manage, json={"url": receiver.url, "service": SERVICE}
        )
        assert created.status_code == 201, created.text
        endpoint, secret = created.json()["id"], created.json()["secret"]
        deliveries = f"/v1/webhooks/endpoints/{endpoint}/deliveries"

        # The test event: queued, signed, delivered, logged.
        queued = await client.post(f"/v1/webhooks/endpoints/{endpoint}/test", headers=manage)
        assert queued.status_code == 202, queued.text
        test_id = queued.json()["webhook_id"]
        assert queued.json()["event_type"] == "webhook.test"
        [(headers, body)] = await eventually(lambda: _some(receiver.with_id(test_id)), timeout=60)
        payload = verify(secret, headers, body)
        assert (payload["type"], payload["data"]["endpoint_id"]) == ("webhook.test", endpoint)

        async def logged(webhook_id: str, attempts: int) -> list[dict[str, Any]] | None:
            found = (await client.get(deliveries, headers=manage)).json()
            mine = [d for d in found if d["webhook_id"] == webhook_id]
            return mine if len(mine) >= attempts else None

        [test_delivery] = await eventually(lambda: logged(test_id, 1), timeout=30)
        assert (test_delivery["event_type"], test_delivery["outcome"]) == (
            "webhook.test",
            "delivered",
        )

        # A citizen's profile arrives on the stream and is pushed to the endpoint.
        event = verified(profile(61), 1, dt.datetime.now(dt.UTC))
        profiles = PROFILE.full_name(topic_prefix)
        await producer.send(profiles, to_cloudevent(event, source="/test", key=event.pseudonym))

        def pushes() -> list[tuple[dict[str, str], bytes]]:
            return [(h, b) for h, b in receiver.received if h["webhook-id"] != test_id]

        [(headers, first_body)] = await eventually(lambda: _some(pushes()), timeout=90)
        message_id = headers["webhook-id"]
        first = verify(secret, headers, first_body)
        assert first["type"] == "citizen.profile.verified"
        assert first["data"]["pseudonym"] == event.pseudonym
        await eventually(lambda: logged(message_id, 1), timeout=30)

        # Redelivered: the same webhook-id, signed again, the fields the agency holds now.
        again = await client.post(
            f"/v1/webhooks/endpoints/{endpoint}/messages/{message_id}/redeliver", headers=manage
        )
        assert again.status_code == 202, again.text
        assert again.json()["webhook_id"] == message_id
        resent = await eventually(lambda: _some(receiver.with_id(message_id)[1:]), timeout=60)
        second = verify(secret, *resent[0])
        assert second["data"]["fields"] == first["data"]["fields"]
        attempts = await eventually(lambda: logged(message_id, 2), timeout=30)
        assert sorted(d["attempt"] for d in attempts) == [1, 2]

        unknown = await client.post(
            f"/v1/webhooks/endpoints/{endpoint}/messages/{uuid.uuid4()}/redeliver", headers=manage
        )
        assert (unknown.status_code, unknown.json()["code"]) == (404, "message_not_found")

        # The citizen is purged: a redelivery is refused, not resent from an old copy.
        died = CitizenDied(
            pseudonym=event.pseudonym,
            version=2,
            date_of_death=dt.date.today(),
            recorded_at=dt.datetime.now(dt.UTC),
        )
        await producer.send(profiles, to_cloudevent(died, source="/test", key=event.pseudonym))
        await producer.send(
            profiles,
            CloudEvent(
                type=TOMBSTONE_TYPE,
                source="/test",
                data=None,
                key=event.pseudonym,
                id=str(uuid.uuid4()),
            ),
        )

        async def purged() -> bool:
            held = await db.fetchval(
                "SELECT count(*) FROM citizen_view WHERE pseudonym = $1 AND NOT erased",
                event.pseudonym,
            )
            return held == 0

        await eventually(purged, timeout=60)
        stale = await client.post(
            f"/v1/webhooks/endpoints/{endpoint}/messages/{message_id}/redeliver", headers=manage
        )
        assert (stale.status_code, stale.json()["code"]) == (409, "citizen_not_held")
        assert len(receiver.with_id(message_id)) == 2, "nothing resent"

    # The refusal is in the citizen's trail: a denied webhook access on the access topic.
    records = await read_topic(kafka_bootstrap, ACCESS.full_name(topic_prefix), 1000, 15)
    # Binary-mode CloudEvents: the record's value is the event's data.
    accesses = [json.loads(record.value) for record in records if record.value]
    denials = [access for access in accesses if access.get("reason") == "citizen_not_held"]
    assert denials, "the refused redelivery is audited"
    [denial] = denials
    assert (denial["channel"], denial["outcome"], denial["pseudonym"]) == (
        "webhook",
        "denied",
        event.pseudonym,
    )


async def _some(found: list[Any]) -> list[Any] | None:
    return found or None
