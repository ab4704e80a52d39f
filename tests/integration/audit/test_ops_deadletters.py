"""`ikdctl deadletters` against the real broker: a record the audit log refused is set aside
with its reason, listed and shown, and once the cause is fixed replayed into the log once."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from aiokafka import TopicPartition
from typer.testing import CliRunner

from ikd_audit.bootstrap import AuditRuntime
from ikd_audit.entrypoints.consumer import AccessConsumer
from ikd_ops import deadletters
from ikd_ops.cli import app
from ikd_shared.events import to_cloudevent
from ikd_shared.events.topics import ACCESS, AUDIT_DEAD_LETTER
from ikd_shared.kafka import send_event
from tests.support.audit import access
from tests.support.kafka import kafka_connection
from tests.support.polling import eventually

HELD = "held-agency"
# The cause of the failure, fixed later: the log refuses one agency's entries for a while.
REFUSE = f"""
CREATE FUNCTION refuse_held() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.agency = '{HELD}' THEN RAISE EXCEPTION 'entries of {HELD} are held'; END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER refuse_held BEFORE INSERT ON log_entry
    FOR EACH ROW EXECUTE FUNCTION refuse_held();
"""


async def ikdctl(*args: str) -> str:
    # In a thread: the command runs its own event loop.
    result = await asyncio.to_thread(CliRunner().invoke, app, list(args))
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


async def committed(bootstrap: str, group: str, partition: TopicPartition) -> int:
    admin = kafka_connection(bootstrap).admin()
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group, partitions=[partition])
    finally:
        await admin.close()
    found = offsets.get(partition)
    return found.offset if found is not None else -1


def replayed_to(output: str) -> tuple[TopicPartition, int]:
    """Where `ikdctl deadletters replay` sent a record, and the next offset after it."""
    topic, partition, offset = output.split(" -> ")[1].split()[0].rsplit(":", 2)
    return TopicPartition(topic, int(partition)), int(offset) + 1


async def test_a_refused_record_is_listed_shown_and_replayed_once_after_the_fix(
    runtime: AuditRuntime, audit_db: Any, kafka_bootstrap: str, topic_prefix: str, citizens: Any
) -> None:
    superuser = await asyncpg.connect(audit_db.superuser_dsn)
    try:
        await superuser.execute(REFUSE)
    finally:
        await superuser.close()
    topic, dead_topic = ACCESS.full_name(topic_prefix), AUDIT_DEAD_LETTER.full_name(topic_prefix)
    good = [access(citizens[i]) for i in range(3)]
    held = access(citizens[0], agency=HELD)
    producer = kafka_connection(kafka_bootstrap).producer()
    await producer.start()
    try:
        for event in [*good, held]:
            cloud = to_cloudevent(event, source="/test", key="k", event_id=str(event.access_id))
            await send_event(producer, topic, cloud)
    finally:
        await producer.stop()

    group = f"{topic_prefix}audit"
    consumer = AccessConsumer(
        runtime.log, kafka_connection(kafka_bootstrap), topic_prefix=topic_prefix, group_id=group
    )
    task = asyncio.create_task(consumer.run())
    try:

        async def one_dead_letter() -> deadletters.DeadLetters | None:
            letters = await deadletters.read(kafka_connection(kafka_bootstrap), dead_topic)
            return letters if letters.records else None

        letters = await eventually(one_dead_letter, timeout=30)
        assert (await runtime.log.tree_state())[0] == 3
        [letter] = letters.records
        assert letter.reason_code == "apply-failed"
        assert f"entries of {HELD} are held" in letter.reason
        assert letter.source_topic == topic
        assert letter.header("ce_id") == str(held.access_id)

        listed = await ikdctl("deadletters", "list", "--prefix", topic_prefix)
        assert f"{dead_topic}\t{letter.ref}\tk\t" in listed
        assert "apply-failed" in listed
        assert "not replayed" in listed
        shown = await ikdctl(
            "deadletters", "show", AUDIT_DEAD_LETTER.name, letter.ref, "--prefix", topic_prefix
        )
        assert "dlq_reason_code: apply-failed" in shown
        assert f"ce_id: {held.access_id}" in shown

        superuser = await asyncpg.connect(audit_db.superuser_dsn)
        try:
            await superuser.execute("DROP TRIGGER refuse_held ON log_entry")
        finally:
            await superuser.close()
        replayed = await ikdctl(
            "deadletters", "replay", AUDIT_DEAD_LETTER.name, "--prefix", topic_prefix
        )
        assert f"{letter.ref}\treplayed -> {topic}:" in replayed

        async def held_recorded() -> bool:
            return (await runtime.log.tree_state())[0] == 4

        await eventually(held_recorded, timeout=30)
        # A second replay skips what was replayed; a forced one changes nothing in the log.
        again = await ikdctl(
            "deadletters", "replay", AUDIT_DEAD_LETTER.name, "--prefix", topic_prefix
        )
        assert "already replayed" in again
        forced = await ikdctl(
            "deadletters", "replay", AUDIT_DEAD_LETTER.name, "--again", "--prefix", topic_prefix
        )
        partition, after = replayed_to(forced)

        async def forced_consumed() -> bool:
            return await committed(kafka_bootstrap, group, partition) >= after

        await eventually(forced_consumed, timeout=30)
        listed = await ikdctl("deadletters", "list", "--prefix", topic_prefix)
        assert f"replayed to {topic}:" in listed
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    entries = [e async for e, _ in runtime.log.stream()]
    assert len(entries) == 4
    assert [e.access_id for e in entries].count(held.access_id) == 1
    after = await deadletters.read(kafka_connection(kafka_bootstrap), dead_topic)
    assert [r.ref for r in after.records] == [letter.ref], "markers are not dead letters"
