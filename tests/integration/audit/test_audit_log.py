"""The log in PostgreSQL: idempotent appends, append-only rules, proofs, tamper detection."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from cryptography.hazmat.primitives import serialization
from pymerkle import InmemoryTree
from typer.testing import CliRunner

from ikd_audit.bootstrap import AuditRuntime
from ikd_audit.cli import app as cli
from ikd_shared import merkle, transparency
from ikd_shared.transparency import TreeHead
from tests.support.audit import access


async def fill(runtime: AuditRuntime, n: int, citizens: list[Any]) -> None:
    for start in range(0, n, 7):
        batch = [access(citizens[i % len(citizens)]) for i in range(start, min(n, start + 7))]
        await runtime.log.record(batch)
        if start % 14 == 0:
            await runtime.log.sign_tree_head()
    await runtime.log.sign_tree_head()


async def tree_heads(runtime: AuditRuntime) -> list[TreeHead]:
    async with runtime.uow() as uow:
        return await uow.log.tree_heads()


async def test_the_unit_of_work_commits_on_a_clean_exit_and_rolls_back_otherwise(
    runtime: AuditRuntime,
) -> None:
    async with runtime.uow() as uow:
        await uow.auditors.save("kept-auditor", "hash-1")

    async def failing_block() -> None:
        async with runtime.uow() as uow:
            await uow.auditors.save("lost-auditor", "hash-2")
            assert await uow.auditors.secret_hash("lost-auditor") == "hash-2"
            raise RuntimeError("the block failed")

    with pytest.raises(RuntimeError):
        await failing_block()
    assert await runtime.auditors.secret_hash("kept-auditor") == "hash-1"
    assert await runtime.auditors.secret_hash("lost-auditor") is None

    async def write_in_snapshot() -> None:
        async with runtime.uow(snapshot=True) as uow:
            await uow.auditors.save("read-only-auditor", "hash-3")

    with pytest.raises(asyncpg.ReadOnlySQLTransactionError):
        await write_in_snapshot()


async def test_the_same_event_twice_gives_one_entry(runtime: AuditRuntime, citizens: Any) -> None:
    event = access(citizens[0])
    other = access(citizens[1])
    first = await runtime.log.record([event, event, other])
    again = await runtime.log.record([other, event])
    assert (first.appended, first.duplicates) == (2, 1)
    assert (again.appended, again.duplicates) == (0, 2)
    rows = [e async for e, _ in runtime.log.stream()]
    assert [e.position for e in rows] == [0, 1]
    assert [e.access_id for e in rows] == [event.access_id, other.access_id]


async def test_the_app_role_can_only_insert_and_select(
    runtime: AuditRuntime, audit_db: Any, citizens: Any
) -> None:
    await fill(runtime, 3, citizens)
    app = await asyncpg.connect(audit_db.app_dsn)
    owner = await asyncpg.connect(audit_db.owner_dsn)
    try:
        for sql in (
            "UPDATE log_entry SET purpose = 'x'",
            "DELETE FROM log_entry",
            "UPDATE tree_head SET tree_size = 99",
            "DELETE FROM merkle_node",
            "TRUNCATE log_entry",
        ):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await app.execute(sql)
        # Even the owner is stopped by the trigger.
        for sql in (
            "UPDATE log_entry SET purpose = 'x'",
            "DELETE FROM log_entry",
            "DELETE FROM tree_head",
            "TRUNCATE log_entry",
        ):
            with pytest.raises(asyncpg.PostgresError, match="append-only"):
                await owner.execute(sql)
    finally:
        await app.close()
        await owner.close()


async def test_proofs_from_the_database_verify_independently(
    runtime: AuditRuntime, citizens: Any
) -> None:
    await fill(runtime, 45, citizens)
    heads = await tree_heads(runtime)
    latest = heads[-1]
    assert latest.tree_size == 45
    entries = [e async for e, _ in runtime.log.stream()]
    reference = InmemoryTree(algorithm="sha256")
    for entry in entries:
        reference.append_entry(entry.leaf_data())
    assert reference.get_root(45) == latest.root_hash
    for position in range(45):
        bundle = await runtime.log.inclusion_proof(position)
        transparency.verify_inclusion_bundle(bundle, runtime.log.public_key)
        theirs = reference.prove_inclusion(position + 1, 45)
        assert [h.hex() for h in theirs.path[1:]] == bundle["audit_path"]
    for older in heads[1:-1]:
        proof = await runtime.log.consistency_proof(older.tree_size, latest.tree_size)
        transparency.verify_consistency_bundle(proof, runtime.log.public_key)
        assert reference.get_root(older.tree_size) == older.root_hash
    status = await runtime.log.integrity()
    assert status.ok, status.problems


async def export_and_verify(runtime: AuditRuntime) -> transparency.Report:
    records = [r async for r in runtime.log.export()]
    return transparency.verify_log(records, runtime.log.public_key)


@pytest.mark.parametrize(
    ("tamper", "first_bad"),
    [
        ("UPDATE log_entry SET purpose = 'marketing' WHERE position = 17", 17),
        ("UPDATE log_entry SET fields = array_append(fields, 'religion') WHERE position = 3", 3),
        ("DELETE FROM log_entry WHERE position = 21", 21),
        # reorder: swap two rows' positions (through a free slot)
        (
            "UPDATE log_entry SET position = -1 WHERE position = 9;"
            "UPDATE log_entry SET position = 9 WHERE position = 30;"
            "UPDATE log_entry SET position = 30 WHERE position = -1",
            9,
        ),
        # insert: shift the tail up one place and slip a forged row into the gap
        (
            "UPDATE log_entry SET position = position + 1000 WHERE position >= 12;"
            "UPDATE log_entry SET position = position - 999 WHERE position >= 1000;"
            "INSERT INTO log_entry SELECT 12, gen_random_uuid(), occurred_at, recorded_at, agency,"
            " service, pseudonym, fields, purpose, legal_basis, channel, outcome, reason, leaf_hash"
            " FROM log_entry WHERE position = 11",
            12,
        ),
    ],
    ids=["alter", "alter-fields", "delete", "reorder", "insert"],
)
async def test_tampering_as_superuser_is_detected_at_the_first_bad_position(
    runtime: AuditRuntime,
    audit_db: Any,
    citizens: Any,
    tamper: str,
    first_bad: int,
    tmp_path: Path,
) -> None:
    await fill(runtime, 40, citizens)
    assert (await export_and_verify(runtime)).ok
    superuser = await asyncpg.connect(audit_db.superuser_dsn)
    try:
        await superuser.execute("ALTER TABLE log_entry DISABLE TRIGGER USER")
        async with superuser.transaction():
            await superuser.execute(
                "ALTER TABLE log_entry DROP CONSTRAINT IF EXISTS log_entry_position_check"
            )
            for statement in tamper.split(";"):
                await superuser.execute(statement)
    finally:
        await superuser.close()
    report = await export_and_verify(runtime)
    print(report.summary())
    assert not report.ok
    assert report.first_bad_position == first_bad

    # The CLI gives the same verdict from an export file and the public key alone.
    export = tmp_path / "log.jsonl"
    runner = CliRunner()
    lines = [r async for r in runtime.log.export()]
    from ikd_shared import codec

    export.write_bytes(b"".join(codec.dumps(r) + b"\n" for r in lines))
    key = tmp_path / "log.pub.pem"
    key.write_bytes(
        runtime.log.public_key.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    result = runner.invoke(cli, ["verify", "--public-key", str(key), "--log", str(export)])
    assert result.exit_code == 1, result.output
    assert f"first bad position: {first_bad}" in result.output


async def test_rewriting_an_entry_and_its_hash_still_fails_against_signed_heads(
    runtime: AuditRuntime, audit_db: Any, citizens: Any
) -> None:
    await fill(runtime, 40, citizens)
    forged = dataclasses.replace(await runtime.log.entry(25), purpose="marketing")
    superuser = await asyncpg.connect(audit_db.superuser_dsn)
    try:
        await superuser.execute("ALTER TABLE log_entry DISABLE TRIGGER USER")
        await superuser.execute(
            "UPDATE log_entry SET purpose = 'marketing', leaf_hash = $1 WHERE position = 25",
            forged.leaf_hash(),
        )
    finally:
        await superuser.close()
    report = await export_and_verify(runtime)
    assert not report.ok
    heads = [h.tree_size for h in await tree_heads(runtime)]
    previous = max(size for size in heads if size <= 25)
    assert report.first_bad_position == previous
    with pytest.raises(merkle.ProofError):
        transparency.verify_inclusion_bundle(
            await runtime.log.inclusion_proof(25), runtime.log.public_key
        )
