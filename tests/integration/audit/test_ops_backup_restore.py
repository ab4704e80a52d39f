"""`ikdctl backup` and `ikdctl restore` against the real servers: databases restored into fresh
ones with their owners and grants, the audit log verifying against its last checkpoint, the
outbox publishing what was not yet published once, and topics and ACLs recreated."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
from aiokafka import TopicPartition
from confluent_kafka import ConsumerGroupTopicPartitions
from confluent_kafka import TopicPartition as KafkaTopicPartition
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported
    AclOperation,
    ConfigResource,
    ResourceType,
)
from typer.testing import CliRunner

from ikd_audit.bootstrap import AuditRuntime, bootstrap
from ikd_gateway.adapters.relay import AccessRelay
from ikd_identity.adapters.relay import outbox_relay
from ikd_ops import backup as backups
from ikd_ops import kafka_security
from ikd_ops.cli import app
from ikd_shared import transparency
from ikd_shared.db import create_pool
from ikd_shared.events.topics import ACCESS, CONSENT, PROFILE
from tests.support.audit import Keys, access, audit_env, make_settings
from tests.support.databases import Database
from tests.support.gateway import MIGRATIONS as GATEWAY_MIGRATIONS
from tests.support.identity import read_topic
from tests.support.kafka import kafka_connection
from tests.support.polling import eventually

IDENTITY_MIGRATIONS = Path(__file__).resolve().parents[3] / "services" / "identity" / "migrations"


async def ikdctl(*args: str) -> tuple[int, str]:
    # In a thread: the command runs its own event loop.
    result = await asyncio.to_thread(CliRunner().invoke, app, list(args))
    return result.exit_code, result.output


def restored(database: Database, name: str) -> Database:
    def swap(dsn: str) -> str:
        return dsn.rsplit("/", 1)[0] + "/" + name

    return dataclasses.replace(
        database,
        name=name,
        owner_dsn=swap(database.owner_dsn),
        app_dsn=swap(database.app_dsn),
        superuser_dsn=swap(database.superuser_dsn),
        signer_dsn=swap(database.signer_dsn) if database.signer_dsn else None,
    )


async def add_outbox_rows(dsn: str, count: int) -> list[str]:
    ids = [str(uuid.uuid4()) for _ in range(count)]
    conn = await asyncpg.connect(dsn)
    try:
        await conn.executemany(
            "INSERT INTO outbox (event_id, topic, key, ce_type, ce_source, payload)"
            " VALUES ($1, $2, $3, 'id.go.mpp.test.v1', '/test', '{}')",
            [(uuid.UUID(i), PROFILE.name, f"p-{i}") for i in ids],
        )
    finally:
        await conn.close()
    return ids


async def relay_until_sent(dsn: str, bootstrap: str, prefix: str) -> None:
    relay = outbox_relay(
        dsn,
        kafka_connection(bootstrap).producer,
        topic_prefix=prefix,
        poll_interval=0.2,
        standby_interval=0.1,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    conn = await asyncpg.connect(dsn)
    try:

        async def all_sent() -> bool:
            return await conn.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL") == 0

        await eventually(all_sent, timeout=30)
    finally:
        stop.set()
        await task
        await conn.close()


async def topic_size(bootstrap: str, topic: str) -> int:
    consumer = kafka_connection(bootstrap).consumer(topic, group=None)
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        ends = await consumer.end_offsets([TopicPartition(topic, p) for p in partitions])
    finally:
        await consumer.stop()
    return sum(ends.values())


async def test_backup_restores_fresh_databases_a_verifying_log_the_outbox_and_topics(
    runtime: AuditRuntime,
    audit_db: Database,
    database_factory: Any,
    keys: Keys,
    origin: str,
    citizens: Any,
    kafka_bootstrap: str,
    topic_prefix: str,
    tmp_path: Path,
) -> None:
    identity_db = await database_factory("identity", IDENTITY_MIGRATIONS)
    gateway_db = await database_factory("gateway", GATEWAY_MIGRATIONS)
    # The audit log: entries and signed checkpoints.
    for start in range(0, 30, 10):
        await runtime.log.record([access(citizens[i % 3]) for i in range(start, start + 10)])
        await runtime.log.sign_tree_head()
    async with runtime.uow() as uow:
        checkpoint = (await uow.log.tree_heads())[-1]
    assert checkpoint.tree_size == 30
    # The outbox: 4 rows published, then 6 committed but not yet published when backed up.
    published = await add_outbox_rows(identity_db.app_dsn, 4)
    await relay_until_sent(identity_db.app_dsn, kafka_bootstrap, topic_prefix)
    pending = await add_outbox_rows(identity_db.app_dsn, 6)
    # The gateway's access outbox: 3 access events not yet published.
    accesses = [access(citizens[i], agency="polres-cirebon") for i in range(3)]
    gateway = await asyncpg.connect(gateway_db.app_dsn)
    try:
        await gateway.executemany(
            "INSERT INTO access_outbox (access_id, record_key, payload) VALUES ($1, $2, $3)",
            [(a.access_id, "k", a.model_dump_json()) for a in accesses],
        )
    finally:
        await gateway.close()
    # Topics and an ACL of a principal of this test only.
    consent = CONSENT.full_name(topic_prefix)
    grants = [
        kafka_security.Grant(f"{topic_prefix}reader", ResourceType.TOPIC, consent, op)
        for op in (AclOperation.READ,)
    ] + [
        kafka_security.Grant(
            f"{topic_prefix}reader", ResourceType.GROUP, f"{topic_prefix}g", AclOperation.READ
        )
    ]
    admin_conn = kafka_connection(kafka_bootstrap)
    await kafka_security.apply_acls(admin_conn, grants)
    try:
        backup = tmp_path / "backup"
        names = [audit_db.name, identity_db.name, gateway_db.name]
        code, output = await ikdctl(
            "backup",
            str(backup),
            *(arg for name in names for arg in ("--database", name)),
            "--topic-prefix",
            topic_prefix,
        )
        assert code == 0, output
        manifest = json.loads((backup / "manifest.json").read_text())
        recorded = {t["name"]: t for t in manifest["kafka"]["topics"]}
        assert recorded[consent]["config"]["cleanup.policy"] == "compact"
        assert {(a["principal"], a["name"]) for a in manifest["kafka"]["acls"]} == {
            (f"User:{topic_prefix}reader", consent),
            (f"User:{topic_prefix}reader", f"{topic_prefix}g"),
        }

        # The disaster: a topic and the ACLs are gone.
        await kafka_security.delete_acls(admin_conn, grants)
        confluent = admin_conn.confluent_admin()
        for future in confluent.delete_topics([consent]).values():
            future.result()

        async def consent_gone() -> bool:
            return consent not in confluent.list_topics(timeout=10).topics

        await eventually(consent_gone, timeout=30)

        renames = {name: f"{name}_r" for name in names}
        started = time.perf_counter()
        code, output = await ikdctl(
            "restore",
            str(backup),
            *(arg for old, new in renames.items() for arg in ("--rename", f"{old}={new}")),
        )
        restore_seconds = time.perf_counter() - started
        assert code == 0, output
        print(f"restore of {len(names)} databases and the topics: {restore_seconds:.1f} s")
        # Restoring again into the same databases is refused: only fresh ones.
        code, output = await ikdctl(
            "restore",
            str(backup),
            "--no-topics",
            *(arg for old, new in renames.items() for arg in ("--rename", f"{old}={new}")),
        )
        assert code == 1
        assert "restore only into a fresh database" in output

        # The topic is back as it was, and the ACLs.
        assert consent in confluent.list_topics(timeout=10).topics
        described = confluent.describe_configs([ConfigResource(ResourceType.TOPIC, consent)])
        values = next(iter(described.values())).result()
        assert values["cleanup.policy"].value == "compact"
        assert values["min.compaction.lag.ms"].value == CONSENT.config["min.compaction.lag.ms"]
        acls = confluent.describe_acls(kafka_security._every_acl_of(f"{topic_prefix}reader"))
        assert {b.name for b in acls.result()} == {consent, f"{topic_prefix}g"}

        # Owners and grants: the runtime role connects, PUBLIC does not.
        audit_restored = restored(audit_db, renames[audit_db.name])
        identity_restored = restored(identity_db, renames[identity_db.name])
        superuser = await asyncpg.connect(audit_db.superuser_dsn)
        try:
            for source, copy in [(audit_db, audit_restored), (identity_db, identity_restored)]:
                row = await superuser.fetchrow(
                    "SELECT pg_get_userbyid(datdba) AS owner,"
                    " has_database_privilege('public', datname, 'CONNECT') AS public"
                    " FROM pg_database WHERE datname = $1",
                    copy.name,
                )
                assert row["owner"] == source.owner_dsn.split("//")[1].split(":")[0]
                assert row["public"] is False
        finally:
            await superuser.close()

        # The audit log verifies against its last checkpoint, with the service's own code.
        settings = make_settings(audit_env(keys, audit_restored.app_dsn, "unused.", origin=origin))
        async with bootstrap(settings) as copy:
            records = [r async for r in copy.log.export()]
            report = transparency.verify_log(records, copy.log.public_key)
            assert report.ok, report.problems
            async with copy.uow() as uow:
                heads = await uow.log.tree_heads()
            assert (heads[-1].tree_size, heads[-1].root_hash) == (30, checkpoint.root_hash)
            integrity = await copy.log.integrity()
            assert integrity.ok, integrity.problems

        # The outbox resumes: what was pending is published once, nothing published twice.
        await relay_until_sent(identity_restored.app_dsn, kafka_bootstrap, topic_prefix)
        profile = PROFILE.full_name(topic_prefix)
        records = await read_topic(kafka_bootstrap, profile, expect=10)
        assert sorted(r.headers["ce_id"].decode() for r in records) == sorted(published + pending)
        assert await topic_size(kafka_bootstrap, profile) == 10
        gateway_restored = restored(gateway_db, renames[gateway_db.name])
        access_topic = ACCESS.full_name(topic_prefix)
        pool = await create_pool(gateway_restored.app_dsn, max_size=1)
        producer = kafka_connection(kafka_bootstrap).producer()
        await producer.start()
        try:
            relay = AccessRelay(pool, producer, topic=access_topic, source="/test")
            await relay.drain()
            assert await relay.backlog() == 0
        finally:
            await producer.stop()
            await pool.close()
        records = await read_topic(kafka_bootstrap, access_topic, expect=3)
        assert sorted(r.headers["ce_id"].decode() for r in records) == sorted(
            str(a.access_id) for a in accesses
        )
        assert await topic_size(kafka_bootstrap, access_topic) == 3

        # A damaged backup is refused before anything is restored.
        dump = backup / f"{identity_db.name}.dump"
        data = bytearray(dump.read_bytes())
        data[len(data) // 2] ^= 0xFF
        dump.write_bytes(bytes(data))
        code, output = await ikdctl("restore", str(backup), "--no-topics")
        assert code == 1
        assert "does not match its checksum" in output
    finally:
        await kafka_security.delete_acls(admin_conn, grants)
        superuser = await asyncpg.connect(audit_db.superuser_dsn)
        try:
            for name in [audit_db.name, identity_db.name, gateway_db.name]:
                await superuser.execute(f'DROP DATABASE IF EXISTS "{name}_r" WITH (FORCE)')
        finally:
            await superuser.close()


async def test_a_rewound_group_reads_again_from_the_backup_on_and_is_never_moved_forward(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    topic = ACCESS.full_name(topic_prefix)
    now = dt.datetime.now(dt.UTC)
    stamps = [now - dt.timedelta(minutes=m) for m in (30, 20, 10, 0)]
    producer = kafka_connection(kafka_bootstrap).producer()
    await producer.start()
    try:
        for stamp in stamps:
            await producer.send_and_wait(
                topic, b"{}", key=b"k", partition=0, timestamp_ms=int(stamp.timestamp() * 1000)
            )
    finally:
        await producer.stop()
    group = f"{topic_prefix}rewound"
    conn = kafka_connection(kafka_bootstrap)
    admin = conn.confluent_admin()
    done = admin.alter_consumer_group_offsets(
        [ConsumerGroupTopicPartitions(group, [KafkaTopicPartition(topic, 0, 4)])]
    )
    for future in done.values():
        future.result()

    def committed() -> int:
        [listed] = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)]).values()
        return {tp.partition: tp.offset for tp in listed.result().topic_partitions}[0]

    # A backup begun 15 minutes ago: the last two records are read again.
    since = now - dt.timedelta(minutes=15)
    assert await asyncio.to_thread(backups.rewind_group, conn, group, since) == 1
    assert committed() == 2
    # Never forward: a later point leaves the group where it is.
    assert await asyncio.to_thread(backups.rewind_group, conn, group, now) == 0
    assert committed() == 2
    for future in admin.delete_consumer_groups([group]).values():
        future.result()
