"""Nothing acknowledged is lost, duplicated or reordered when a broker, a worker or a relay dies.

Each test feeds its own thousands of citizens through identity's bulk feed (the Dukcapil
path): first their records, then, once they are related to one or both agencies, revisions of
them, and the fault strikes halfway through the revisions. Afterwards every related view holds
exactly identity's version of each citizen and nothing of the unrelated ones, every access event
the gateways published is in the audit log once, the profile topic holds each citizen's versions
in order without a gap, and no service was restarted to get there.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence

import asyncpg
import httpx
import pytest
from aiokafka import TopicPartition

from ikd_dev.synthetic import iter_citizens
from ikd_shared import codec
from ikd_shared.events import decode, topics
from ikd_shared.events.envelope import CloudEvent, from_kafka
from ikd_shared.events.profile_v1 import EVENTS as PROFILE_EVENTS
from ikd_shared.events.profile_v1 import CitizenProfile
from tests.cluster.conftest import (
    AGENCIES,
    CLIENT_SECRET,
    FEED_CLIENT,
    REPLICATED_AGENCY,
    REPLICATION_FACTOR,
    Cluster,
    ClusterStack,
    wait_for_group,
)
from tests.support.kafka import kafka_connection
from tests.support.polling import eventually

# A fault, the recovery and the checks take minutes on a shared two-core machine.
pytestmark = pytest.mark.timeout(900)
CITIZENS = 2000  # per test
REVISIONS = 2  # versions each citizen gets after its first
BATCH = 500  # profiles per bulk request (one transaction each)
SEED = 13
SETTLE_S = 300.0  # how long the platform may take to catch up after the fault


def _index(test: str) -> int:
    return {"broker": 0, "worker": 1, "relay": 2, "quorum": 3}[test] * 10_000


def related_agencies(i: int) -> tuple[str, ...]:
    """Every fourth citizen is related to no agency, every fourth to polres-cirebon only."""
    return ((), (AGENCIES[0],), AGENCIES, AGENCIES)[i % 4]


SERVICES = {
    "polres-cirebon": ("skck", "legal_obligation"),
    "dinsos-cirebon": ("social-assistance", "public_task"),
}


class Feed:
    """Dukcapil's bulk feed of one test's citizens, and what the test expects of them."""

    def __init__(self, platform: ClusterStack, test: str, n: int = CITIZENS) -> None:
        self.platform = platform
        self.profiles = list(iter_citizens(n, seed=SEED, start=_index(test)))
        self.pseudonyms: list[str] = []
        self.acknowledged = 0

    async def token(self, http: httpx.AsyncClient) -> str:
        response = await http.post(
            f"{self.platform.stack.endpoints.identity}/oauth/token",
            data={
                "grant_type": "client_credentials",
                "client_id": FEED_CLIENT,
                "client_secret": CLIENT_SECRET,
            },
        )
        response.raise_for_status()
        return str(response.json()["access_token"])

    async def send(
        self,
        profiles: Sequence[CitizenProfile],
        *,
        halfway: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Post the profiles in bulk requests; `halfway` runs after half of them were taken."""
        async with httpx.AsyncClient(timeout=120) as http:
            headers = {"Authorization": f"Bearer {await self.token(http)}"}
            batches = [profiles[i : i + BATCH] for i in range(0, len(profiles), BATCH)]
            for number, batch in enumerate(batches):
                if halfway is not None and number == len(batches) // 2:
                    await halfway()
                body = codec.dumps({"profiles": [p.model_dump(mode="json") for p in batch]})
                response = await http.post(
                    f"{self.platform.stack.endpoints.identity}/v1/feed/profiles",
                    content=body,
                    headers={**headers, "Content-Type": "application/json"},
                )
                assert response.status_code == 200, response.text
                result = response.json()
                self.acknowledged += result["created"] + result["updated"]

    async def first_records(self) -> None:
        await self.send(self.profiles)
        rows = await fetch(
            self.platform.identity_db.superuser_dsn,
            "SELECT nik, pseudonym FROM profiles WHERE nik = ANY($1)",
            [p.nik for p in self.profiles],
        )
        by_nik = {row["nik"]: row["pseudonym"] for row in rows}
        self.pseudonyms = [by_nik[p.nik] for p in self.profiles]

    async def relate(self) -> None:
        """Registrations in force at identity (its registration API has its own tests)."""
        rows = [
            (uuid.uuid4(), pseudonym, agency, *SERVICES[agency])
            for i, pseudonym in enumerate(self.pseudonyms)
            for agency in related_agencies(i)
        ]
        connection = await asyncpg.connect(self.platform.identity_db.superuser_dsn)
        try:
            await connection.executemany(
                """INSERT INTO relationships (relationship_id, pseudonym, kind, agency, service,
                       legal_basis, legal_reference, starts_at, expires_at, recorded_by)
                   VALUES ($1, $2, 'registration', $3, $4, $5, 'cluster test', now(),
                           now() + interval '1 year', 'cluster-test')""",
                rows,
            )
        finally:
            await connection.close()

    def revision(self, number: int) -> list[CitizenProfile]:
        return [p.model_copy(update={"occupation": f"Pekerjaan {number}"}) for p in self.profiles]

    async def revisions(self, fault: Callable[[], Awaitable[None]]) -> None:
        """REVISIONS new versions of every citizen; the fault halfway through the first."""
        for number in range(1, REVISIONS + 1):
            await self.send(self.revision(number), halfway=fault if number == 1 else None)

    def expected_views(self, versions: dict[str, int]) -> dict[str, dict[str, int]]:
        views: dict[str, dict[str, int]] = {agency: {} for agency in AGENCIES}
        for i, pseudonym in enumerate(self.pseudonyms):
            for agency in related_agencies(i):
                views[agency][pseudonym] = versions[pseudonym]
        return views


async def fetch(dsn: str, query: str, *args: object) -> list[asyncpg.Record]:
    connection = await asyncpg.connect(dsn)
    try:
        return list(await connection.fetch(query, *args))
    finally:
        await connection.close()


async def count(dsn: str, query: str, *args: object) -> int:
    return int((await fetch(dsn, query, *args))[0][0])


async def read_topic(topic: str, partitions: int) -> list[tuple[int, int, CloudEvent]]:
    """Every record of the topic as (partition, offset, CloudEvent), to its current end."""
    consumer = kafka_connection().consumer(topic, group=None, auto_offset_reset="earliest")
    await consumer.start()
    try:
        assigned = [TopicPartition(topic, p) for p in range(partitions)]
        ends = await consumer.end_offsets(assigned)
        records: list[tuple[int, int, CloudEvent]] = []
        while [tp for tp in assigned if await consumer.position(tp) < ends[tp]]:
            for batch in (await consumer.getmany(timeout_ms=1000, max_records=5000)).values():
                for record in batch:
                    event = from_kafka(record.key, record.value, record.headers)
                    records.append((record.partition, record.offset, event))
        return records
    finally:
        await consumer.stop()


async def assert_exact(platform: ClusterStack, feed: Feed) -> dict[str, float]:
    """Everything acknowledged arrived exactly once and in order; returns how long it took."""
    started = time.monotonic()
    identity = platform.identity_db.superuser_dsn
    ours = feed.pseudonyms
    rows = await fetch(
        identity, "SELECT pseudonym, version FROM profiles WHERE pseudonym = ANY($1)", ours
    )
    versions = {row["pseudonym"]: row["version"] for row in rows}
    assert len(versions) == len(ours)
    assert set(versions.values()) == {1 + REVISIONS}

    async def all_published() -> bool:
        return await count(identity, "SELECT count(*) FROM outbox WHERE sent_at IS NULL") == 0

    await eventually(all_published, timeout=SETTLE_S, interval=1.0)
    published_s = time.monotonic() - started

    expected = feed.expected_views(versions)
    views: dict[str, dict[str, int]] = {}

    async def views_match() -> bool:
        for agency in AGENCIES:
            rows = await fetch(
                platform.gateway_dbs[agency].superuser_dsn,
                "SELECT pseudonym, version FROM citizen_view"
                " WHERE pseudonym = ANY($1) AND NOT erased",
                ours,
            )
            views[agency] = {row["pseudonym"]: row["version"] for row in rows}
        return views == expected

    try:
        await eventually(views_match, timeout=SETTLE_S, interval=1.0)
    except AssertionError:
        for agency in AGENCIES:
            missing = expected[agency].keys() - views[agency].keys()
            phantom = views[agency].keys() - expected[agency].keys()
            stale = {
                p
                for p in expected[agency].keys() & views[agency].keys()
                if views[agency][p] != expected[agency][p]
            }
            print(f"{agency}: {len(missing)} missing, {len(phantom)} phantom, {len(stale)} stale")
        raise
    views_s = time.monotonic() - started

    # Every access event published is in the audit log, once; none waits in an outbox.
    async def outboxes_empty() -> bool:
        for agency in AGENCIES:
            dsn = platform.gateway_dbs[agency].superuser_dsn
            if await count(dsn, "SELECT count(*) FROM access_outbox"):
                return False
        return True

    await eventually(outboxes_empty, timeout=SETTLE_S, interval=1.0)
    access_topic = topics.ACCESS.full_name(platform.topic_prefix)
    mine = set(ours)
    published = {
        event.id
        for _, _, event in await read_topic(access_topic, topics.ACCESS.partitions)
        if event.key in mine
    }
    assert published, "the gateways published no access event"
    logged: list[str] = []

    async def all_logged() -> bool:
        rows = await fetch(
            platform.audit_db.superuser_dsn,
            "SELECT access_id::text FROM log_entry WHERE pseudonym = ANY($1)",
            ours,
        )
        logged[:] = [row[0] for row in rows]
        return set(logged) >= published

    await eventually(all_logged, timeout=SETTLE_S, interval=1.0)
    assert len(logged) == len(set(logged)), "an access event is in the log twice"
    assert set(logged) == published, "the log holds accesses never published"
    audited_s = time.monotonic() - started

    # The profile topic: each citizen's versions in order, none missing (a re-send of an
    # event already on the topic, after a relay died between the ack and the mark, is
    # dropped by id like every consumer drops it).
    profile_topic = topics.PROFILE.full_name(platform.topic_prefix)
    seen: set[str] = set()
    order: dict[str, list[int]] = defaultdict(list)
    for _, _, event in sorted(
        await read_topic(profile_topic, topics.PROFILE.partitions), key=lambda r: (r[0], r[1])
    ):
        if event.key not in mine or event.id in seen:
            continue
        seen.add(event.id)
        order[event.key].append(decode(event, PROFILE_EVENTS).version)
    out_of_order = {k: v for k, v in order.items() if v != list(range(1, versions[k] + 1))}
    assert not out_of_order, f"{len(out_of_order)} citizens' versions out of order or missing"
    assert len(order) == len(ours)
    return {"published_s": published_s, "views_s": views_s, "audited_s": audited_s}


async def first_sent_after(platform: ClusterStack, moment: float) -> float:
    """Seconds from `moment` (epoch) until the relay next had a publication acknowledged."""

    async def sent() -> float | None:
        rows = await fetch(
            platform.identity_db.superuser_dsn,
            "SELECT extract(epoch FROM min(sent_at)) FROM outbox WHERE sent_at > to_timestamp($1)",
            moment,
        )
        value = rows[0][0]
        return None if value is None else float(value) - moment

    return await eventually(sent, timeout=SETTLE_S, interval=0.5)


async def test_topics_are_replicated_three_times_with_two_in_sync(
    platform: ClusterStack, cluster: Cluster
) -> None:
    topic = topics.PROFILE.full_name(platform.topic_prefix)

    def describe() -> tuple[set[int], str]:
        from confluent_kafka.admin import ConfigResource  # type: ignore[attr-defined]

        admin = kafka_connection().confluent_admin()
        metadata = admin.list_topics(topic=topic, timeout=15).topics[topic]
        replicas = {len(p.replicas) for p in metadata.partitions.values()}
        resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
        configs = admin.describe_configs([resource])[resource].result(timeout=15)
        return replicas, configs["min.insync.replicas"].value

    replicas, min_isr = await asyncio.to_thread(describe)
    assert replicas == {REPLICATION_FACTOR} == {3}
    assert min_isr == "2"
    leaders = await cluster.leaders(topic)
    assert len(set(leaders.values())) > 1, "the partitions' leaders are spread over the brokers"


async def test_the_leading_broker_killed_during_the_feed(
    platform: ClusterStack, cluster: Cluster
) -> None:
    feed = Feed(platform, "broker")
    await feed.first_records()
    await feed.relate()
    topic = topics.PROFILE.full_name(platform.topic_prefix)
    victim: list[int] = []
    killed_at: list[float] = []

    async def kill_leader() -> None:
        leaders = await cluster.leaders(topic)
        node = max(set(leaders.values()), key=list(leaders.values()).count)
        victim.append(node)
        killed_at.append(time.time())
        await asyncio.to_thread(cluster.kill, node)

    started = time.monotonic()
    await feed.revisions(kill_leader)
    relay_resumed_s = await first_sent_after(platform, killed_at[0])

    async def led_by_others() -> bool:
        # Leadership moves once the controller fences the dead broker (its session timeout),
        # which a short feed on a quiet machine can finish before.
        return victim[0] not in (await cluster.leaders(topic)).values()

    await eventually(led_by_others, timeout=60, interval=0.5)
    figures = await assert_exact(platform, feed)
    await asyncio.to_thread(cluster.start, victim[0])  # back, as an operator would
    print(
        f"\nleader kill: node {victim[0]}, {feed.acknowledged} acknowledged records, relay "
        f"published again after {relay_resumed_s:.1f}s, all published/viewed/audited "
        f"{figures['published_s']:.0f}/{figures['views_s']:.0f}/{figures['audited_s']:.0f}s "
        f"after the feed, test {time.monotonic() - started:.0f}s"
    )
    for name, process in platform.stack.processes.items():
        assert process.poll() is None, f"{name} exited: {platform.log(name)[-2000:]}"


async def test_one_of_two_gateway_replicas_killed_during_the_feed(
    platform: ClusterStack,
) -> None:
    feed = Feed(platform, "worker")
    await feed.first_records()
    await feed.relate()
    group = f"ikd-gateway-{REPLICATED_AGENCY}"
    await asyncio.to_thread(wait_for_group, group, 2)
    killed = f"worker-{REPLICATED_AGENCY}-1"

    async def kill_replica() -> None:
        await asyncio.to_thread(platform.kill, killed)

    started = time.monotonic()
    await feed.revisions(kill_replica)
    # Its partitions moved to the other replica, which alone is left in the group.
    await asyncio.to_thread(wait_for_group, group, 1)
    figures = await assert_exact(platform, feed)
    print(
        f"\nworker kill: {feed.acknowledged} acknowledged records, all viewed/audited "
        f"{figures['views_s']:.0f}/{figures['audited_s']:.0f}s after the feed, "
        f"test {time.monotonic() - started:.0f}s"
    )
    platform.restart(killed)
    await asyncio.to_thread(wait_for_group, group, 2)


async def test_the_active_relay_killed_during_the_feed(platform: ClusterStack) -> None:
    feed = Feed(platform, "relay")
    await feed.first_records()
    await feed.relate()
    killed: list[str] = []
    killed_at: list[float] = []

    async def kill_relay() -> None:
        name = platform.active_relay()
        killed.append(name)
        killed_at.append(time.time())
        await asyncio.to_thread(platform.kill, name)

    started = time.monotonic()
    await feed.revisions(kill_relay)
    standby_s = await first_sent_after(platform, killed_at[0])
    figures = await assert_exact(platform, feed)  # includes the per-citizen order on the topic
    assert platform.active_relay() != killed[0]
    print(
        f"\nrelay kill: the standby published after {standby_s:.1f}s, "
        f"{feed.acknowledged} acknowledged records in order, all published "
        f"{figures['published_s']:.0f}s after the feed, test {time.monotonic() - started:.0f}s"
    )
    platform.restart(killed[0])  # it stands by now


async def test_two_brokers_down_nothing_is_reported_published(
    platform: ClusterStack, cluster: Cluster
) -> None:
    feed = Feed(platform, "quorum", n=CITIZENS // 2)
    await feed.first_records()
    await feed.relate()
    identity = platform.identity_db.superuser_dsn
    await eventually(lambda: _no_unsent(identity), timeout=SETTLE_S, interval=1.0)
    started = time.monotonic()
    down_at = time.time()
    await asyncio.to_thread(cluster.kill, 2, 3)
    # Identity still takes the feed: its writes and their outbox rows commit together ...
    await feed.send(feed.revision(1))
    await asyncio.sleep(20)  # longer than a broker session and a producer's request timeout
    # ... but no broker acknowledged them, so the relay marked none published.
    sent = await count(
        identity,
        "SELECT count(*) FROM outbox WHERE created_at >= to_timestamp($1) AND sent_at IS NOT NULL",
        down_at,
    )
    waiting = await count(identity, "SELECT count(*) FROM outbox WHERE sent_at IS NULL")
    assert sent == 0
    assert waiting == len(feed.profiles)
    back_at = time.time()
    await asyncio.to_thread(cluster.start, 2, 3)
    restart_s = time.time() - back_at
    resumed_s = await first_sent_after(platform, back_at)
    for _ in range(REVISIONS - 1):
        await feed.send(feed.revision(REVISIONS))
    figures = await assert_exact(platform, feed)
    print(
        f"\ntwo brokers down: {waiting} events kept unpublished; the two nodes took "
        f"{restart_s:.0f}s to start and rejoin, the relay published {resumed_s:.1f}s after "
        f"their start began, views/audit "
        f"{figures['views_s']:.0f}/{figures['audited_s']:.0f}s, "
        f"test {time.monotonic() - started:.0f}s"
    )


async def _no_unsent(dsn: str) -> bool:
    return await count(dsn, "SELECT count(*) FROM outbox WHERE sent_at IS NULL") == 0
