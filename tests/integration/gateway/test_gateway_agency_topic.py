"""The agency topic on the real database and broker: each change of the view is published once,
with exactly what prefill and webhooks disclose, a purge as a fieldless tombstone, every
publication audited, and the example agency consumer ends with the view."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import asyncpg

from ikd_gateway.domain.model import SourcePosition
from ikd_gateway.entrypoints.agency_consumer import consume
from ikd_gateway.service_layer.prefill import prefill
from ikd_gateway.service_layer.stream import ProfileRecord, apply_profiles
from ikd_gateway.service_layer.unit_of_work import Endpoint
from ikd_shared import codec
from ikd_shared.events.agency_v1 import PURGED_TYPE, AgencyRecordChanged
from ikd_shared.events.envelope import from_kafka
from ikd_shared.events.profile_v1 import CitizenDied
from ikd_shared.events.topics import agency_topic
from tests.support.gateway import read_topic, running_gateway
from tests.support.gateway_factories import POLICY, Tokens, profile, verified
from tests.support.kafka import kafka_connection

AGENCY = "dinsos-cirebon"


class Capturing:
    """A webhook receiver that accepts everything and keeps the bodies."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    async def post(self, url: str, request: Any) -> Any:
        self.bodies.append(json.loads(request.body))

        class Ok:
            status_code, error, duration_ms = 200, None, 1.0

        return Ok()


def _json(value: Any) -> Any:
    return codec.loads(codec.dumps(value))


async def test_agency_topic_carries_the_view_purges_and_is_audited(
    gateway_db: Any,
    db: asyncpg.Connection,
    topic_prefix: str,
    kafka_bootstrap: str,
    tokens: Tokens,
    tmp_path: Path,
) -> None:
    topic = agency_topic(AGENCY).full_name(topic_prefix)
    sender = Capturing()
    kept, purged = profile(61), profile(62)
    now = dt.datetime.now(dt.UTC)
    first = [verified(kept, 1, now), verified(purged, 1, now)]
    async with running_gateway(
        AGENCY, gateway_db, topic_prefix, tokens, tmp_path, sender=sender
    ) as gw:
        assert gw.agency_relay is not None
        async with gw.uow() as uow:
            for service in gw.ctx.agency.services:
                await uow.webhooks.add_endpoint(
                    Endpoint(
                        uuid.uuid4(),
                        "https://agency.example/hook",
                        service.code,
                        "whsec_" + "A" * 44,
                        True,
                    ),
                    "test",
                )
        records = [
            ProfileRecord(f"p-{i}", e.pseudonym, e, SourcePosition(0, i))
            for i, e in enumerate(first)
        ]
        await apply_profiles(gw.uow(), gw.ctx, records)
        await apply_profiles(gw.uow(), gw.ctx, records)  # a redelivery publishes nothing
        stop = asyncio.Event()
        relaying = asyncio.create_task(gw.agency_relay.run(stop))
        try:
            published = await read_topic(kafka_bootstrap, topic, 2)
            assert len(published) == 2

            # Exactly what prefill answers and webhooks carry, per service.
            answers: dict[str, dict[str, Any]] = {}
            for service in gw.ctx.agency.services:
                answer = await prefill(
                    gw.uow(),
                    gw.ctx,
                    service_code=service.code,
                    nik=None,
                    pseudonym=first[0].pseudonym,
                )
                answers[service.code] = _json(answer.fields)
            by_key = {r.key.decode(): from_kafka(r.key, r.value, r.headers) for r in published}
            event = AgencyRecordChanged.model_validate_json(by_key[first[0].pseudonym].data or b"")
            on_topic = {g.service: _json(g.fields) for g in event.services}
            assert on_topic == answers
            policy = POLICY.agency(AGENCY)
            assert {s: set(f) for s, f in on_topic.items()} == {
                s.code: set(s.fields) for s in policy.services
            }
            assert await gw.dispatcher.run_once() == 4
            for body in sender.bodies:
                if body["data"]["pseudonym"] == first[0].pseudonym:
                    assert body["data"]["fields"] == on_topic[body["data"]["service"]]

            # A death purges: a tombstone with no fields.
            died = CitizenDied(
                pseudonym=first[1].pseudonym, version=2, date_of_death=now.date(), recorded_at=now
            )
            await apply_profiles(
                gw.uow(), gw.ctx, [ProfileRecord("p-died", died.pseudonym, died, None)]
            )
            gw.agency_relay.wake()
            published = await read_topic(kafka_bootstrap, topic, 3)
            assert len(published) == 3
            last = from_kafka(published[-1].key, published[-1].value, published[-1].headers)
            if last.key != first[1].pseudonym:  # other partitions may come back in any order
                last = next(
                    from_kafka(r.key, r.value, r.headers)
                    for r in published
                    if r.key.decode() == first[1].pseudonym and r.value is None
                )
            assert (last.type, last.data, last.key) == (PURGED_TYPE, None, first[1].pseudonym)
            for _ in range(50):
                if await db.fetchval("SELECT count(*) FROM agency_outbox") == 0:
                    break
                await asyncio.sleep(0.1)
            assert await db.fetchval("SELECT count(*) FROM agency_outbox") == 0, "sent and gone"
        finally:
            stop.set()
            await relaying

        # Every publication is an access event, one per service it discloses to.
        audited = [
            r["payload"] if isinstance(r["payload"], dict) else json.loads(r["payload"])
            for r in await db.fetch("SELECT payload FROM access_outbox ORDER BY position")
        ]
        topic_access = [a for a in audited if a["channel"] == "agency_topic"]
        ids = {from_kafka(r.key, r.value, r.headers).id for r in published}
        assert {a["correlation_id"] for a in topic_access} == ids
        for record in published:
            cloud = from_kafka(record.key, record.value, record.headers)
            mine = [a for a in topic_access if a["correlation_id"] == cloud.id]
            if cloud.is_tombstone:
                assert [(a["fields"], a["reason"]) for a in mine] == [([], "purged")]
            else:
                changed = AgencyRecordChanged.model_validate_json(cloud.data or b"")
                assert sorted((a["service"], tuple(a["fields"])) for a in mine) == sorted(
                    (g.service, tuple(sorted(g.fields))) for g in changed.services
                )

    # The example agency consumer ends with the view: the kept citizen, nothing of the other.
    lines: list[str] = []
    mirror = await consume(
        kafka_connection(kafka_bootstrap),
        topic,
        group=f"{topic_prefix}agency-example",
        idle_exit=2.0,
        out=lines.append,
    )
    assert mirror.citizens == {first[0].pseudonym: answers}
    assert any(line.startswith("purged") for line in lines)
