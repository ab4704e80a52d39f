"""Outbox relay against the real broker: crashes lose nothing, two relays keep order."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections import defaultdict
from collections.abc import Sequence

import pytest

from ikd_dev.synthetic import generate_citizens
from ikd_identity.adapters.postgres import NOTIFY_CHANNEL, OutboxRow
from ikd_identity.adapters.relay import OutboxRelay, RelayHooks, outbox_relay
from ikd_identity.bootstrap import bootstrap, build_relay
from ikd_identity.domain import commands
from ikd_identity.service_layer import handlers
from ikd_shared.events.profile_v1 import TOMBSTONE_TYPE, CitizenDied, ProfileVerified
from ikd_shared.events.topics import PROFILE
from ikd_shared.kafka import KafkaConnection
from tests.support.identity import read_topic
from tests.support.polling import eventually


class SimulatedCrash(Exception):
    pass


async def _crash(_: Sequence[OutboxRow]) -> None:
    raise SimulatedCrash


def _relay(
    api, *, hooks: RelayHooks[OutboxRow] | None = None, name: str = "relay", batch_size: int = 1000
) -> OutboxRelay:
    settings = api.settings
    return outbox_relay(
        settings.app_dsn,
        KafkaConnection.from_settings(settings).producer,
        topic_prefix=settings.kafka_topic_prefix,
        batch_size=batch_size,
        poll_interval=0.2,
        standby_interval=0.1,
        hooks=hooks,
        name=name,
    )


async def _load(api, count: int, *, seed: int, start: int = 0) -> None:
    await handlers.load_profiles(
        commands.LoadProfiles(generate_citizens(count, seed=seed, start=start)),
        api.container.deps,
    )


async def _run_until_sent(relay: OutboxRelay, db, total: int) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:

        async def all_sent() -> bool:
            unsent = await db.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
            return unsent == 0 and await db.fetchval("SELECT count(*) FROM outbox") >= total

        await eventually(all_sent)
    finally:
        stop.set()
        await task


async def test_crash_after_commit_before_publish_then_restart_publishes(
    api, db, topic_prefix, kafka_bootstrap
) -> None:
    await _load(api, 3, seed=101)
    ids = [
        str(r["event_id"]) for r in await db.fetch("SELECT event_id FROM outbox ORDER BY position")
    ]

    with pytest.raises(SimulatedCrash):
        await _relay(api, hooks=RelayHooks(before_publish=_crash)).run(asyncio.Event())
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL") == 3

    await _run_until_sent(_relay(api), db, 3)
    records = await read_topic(kafka_bootstrap, PROFILE.full_name(topic_prefix), expect=3)
    assert sorted(r.headers["ce_id"].decode() for r in records) == sorted(ids)


async def test_crash_after_ack_before_mark_republishes_with_same_ids(
    api, db, topic_prefix, kafka_bootstrap
) -> None:
    await _load(api, 3, seed=102)
    ids = [
        str(r["event_id"]) for r in await db.fetch("SELECT event_id FROM outbox ORDER BY position")
    ]

    with pytest.raises(SimulatedCrash):
        await _relay(api, hooks=RelayHooks(after_publish=_crash)).run(asyncio.Event())
    # Kafka acknowledged the batch, but the rows were not marked sent.
    assert await db.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL") == 3
    first = await read_topic(kafka_bootstrap, PROFILE.full_name(topic_prefix), expect=3)
    assert sorted(r.headers["ce_id"].decode() for r in first) == sorted(ids)

    await _run_until_sent(_relay(api), db, 3)
    records = await read_topic(kafka_bootstrap, PROFILE.full_name(topic_prefix), expect=6)
    seen: dict[str, int] = defaultdict(int)
    for record in records:
        seen[record.headers["ce_id"].decode()] += 1
    # Every event appears again with the same id: no loss, consumers deduplicate by id.
    assert seen == {event_id: 2 for event_id in ids}


async def test_two_relays_publish_each_row_once_in_order(
    api, db, topic_prefix, kafka_bootstrap
) -> None:
    stop_a, stop_b = asyncio.Event(), asyncio.Event()
    relay_a = _relay(api, name="a", batch_size=50)
    relay_b = _relay(api, name="b", batch_size=50)
    task_a = asyncio.create_task(relay_a.run(stop_a))
    task_b = asyncio.create_task(relay_b.run(stop_b))
    try:
        # Many transactions while both relays run; one citizen changes often (versions 1..11).
        await _load(api, 1, seed=103)
        nik = (await db.fetchval("SELECT nik FROM profiles")).strip()
        for batch in range(6):
            await _load(api, 40, seed=104, start=batch * 40)
            for change in range(2):
                await handlers.update_profile(
                    commands.UpdateProfile(nik, {"occupation": f"Pekerjaan {batch}-{change}"}),
                    api.container.deps,
                )
        total = await db.fetchval("SELECT count(*) FROM outbox")
        assert total == 1 + 6 * 40 + 12

        # Stop whichever relay is active: the standby takes over and nothing is lost.
        first_active, first_stop, first_task = (
            (relay_a, stop_a, task_a) if relay_a.active.is_set() else (relay_b, stop_b, task_b)
        )
        first_stop.set()
        await first_task
        await _load(api, 40, seed=104, start=1000)
        total += 40

        async def all_sent() -> bool:
            return not await db.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL")

        await eventually(all_sent)
        assert not (relay_a.active.is_set() and relay_b.active.is_set())
        print(f"published: a={relay_a.published} b={relay_b.published}, first={first_active.name}")
    finally:
        stop_a.set()
        stop_b.set()
        await asyncio.gather(task_a, task_b)

    records = await read_topic(kafka_bootstrap, PROFILE.full_name(topic_prefix), expect=total)
    rows = await db.fetch(
        "SELECT position, event_id::text AS id, key FROM outbox ORDER BY position"
    )
    position = {row["id"]: row["position"] for row in rows}
    ids = [r.headers["ce_id"].decode() for r in records]
    assert len(ids) == len(set(ids)) == total  # each row exactly once, none missing
    assert set(ids) == set(position)
    by_partition: dict[int, list[int]] = defaultdict(list)
    for record in sorted(records, key=lambda r: (r.partition, r.offset)):
        by_partition[record.partition].append(position[record.headers["ce_id"].decode()])
    for positions in by_partition.values():
        assert positions == sorted(positions)  # outbox order within each partition
    assert relay_a.published + relay_b.published == total


async def test_relay_from_settings_uses_notify(api, db, topic_prefix, kafka_bootstrap) -> None:
    relay = build_relay(api.settings.model_copy(update={"relay_poll_interval_s": 30.0}))
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        async with asyncio.timeout(10):
            await relay.active.wait()
        await _load(api, 2, seed=105)
        # With a 30 s fallback poll, only the NOTIFY wake-up can publish this in time.
        await read_topic(kafka_bootstrap, PROFILE.full_name(topic_prefix), expect=2, timeout=10)
    finally:
        stop.set()
        await task


async def test_the_relay_in_process_is_woken_without_notify(
    api, db, topic_prefix, kafka_bootstrap
) -> None:
    settings = api.settings.model_copy(update={"relay_poll_interval_s": 30.0})
    notified: list[str] = []
    await db.add_listener(NOTIFY_CHANNEL, lambda *args: notified.append(args[2]))
    async with bootstrap(settings, relay=True) as runtime:
        assert runtime.relay is not None
        async with asyncio.timeout(10):
            await runtime.relay.active.wait()
        await handlers.load_profiles(
            commands.LoadProfiles(generate_citizens(2, seed=107)), runtime.deps
        )
        # With a 30 s fallback poll and no NOTIFY, only the direct wake-up publishes in time.
        await read_topic(kafka_bootstrap, PROFILE.full_name(topic_prefix), expect=2, timeout=10)
        assert notified == []
    assert not runtime.relay.active.is_set()  # leaving bootstrap stopped the relay


async def test_death_ends_in_a_tombstone_on_the_topic(api, db, topic_prefix, kafka_bootstrap):
    (profile,) = generate_citizens(1, seed=106)
    await handlers.load_profiles(commands.LoadProfiles([profile]), api.container.deps)
    await handlers.record_death(
        commands.RecordDeath(profile.nik, dt.date(2025, 1, 1)), api.container.deps
    )
    await _run_until_sent(_relay(api), db, 3)
    records = await read_topic(kafka_bootstrap, PROFILE.full_name(topic_prefix), expect=3)
    records.sort(key=lambda r: r.offset)
    assert [r.headers["ce_type"].decode() for r in records] == [
        ProfileVerified.event_type,
        CitizenDied.event_type,
        TOMBSTONE_TYPE,
    ]
    assert records[2].value is None
    assert len({r.key for r in records}) == 1
    assert len({r.partition for r in records}) == 1
