"""The witnessed log on real PostgreSQL: the operator with the database superuser and the real
signing key rewrites history, and the witness and an independent checker both catch it."""

from __future__ import annotations

import dataclasses
import datetime as dt
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from ikd_audit.adapters.repository import _entry
from ikd_audit.bootstrap import AuditRuntime
from ikd_audit.cli import app as cli
from ikd_audit.config import AuditSettings
from ikd_audit.witness.checker import check_log, fork_proven
from ikd_audit.witness.core import Refusal, RefusalKind
from ikd_audit.witness.service import ALARMS, Witness
from ikd_audit.witness.store import WitnessStore
from ikd_shared import checkpoint, merkle
from ikd_shared.transparency import TreeHead
from tests.support.audit import Keys, access, audit_env, make_settings

ORIGIN = "audit.test.example/witnessed"
WITNESS_KEY = Ed25519PrivateKey.generate()
WITNESS_NAME = "witness.other-org.example/w1"


@pytest.fixture
def origin() -> str:
    return ORIGIN


@pytest.fixture
def settings(keys: Keys, audit_db: Any) -> AuditSettings:
    vkey = checkpoint.Signer(WITNESS_NAME, WITNESS_KEY, checkpoint.COSIGNATURE_V1).verifier.vkey
    return make_settings(
        audit_env(keys, audit_db.app_dsn, "unused.", origin=ORIGIN, IKD_AUDIT_WITNESS_KEYS=vkey)
    )


@pytest.fixture
def witness(tmp_path: Path, runtime: AuditRuntime) -> Witness:
    signer = checkpoint.Signer(WITNESS_NAME, WITNESS_KEY, checkpoint.COSIGNATURE_V1)
    log_key = checkpoint.parse_vkey(runtime.log.vkey)
    return Witness(WitnessStore(tmp_path / "witness.sqlite3"), signer, log_key, ORIGIN)


async def grow(runtime: AuditRuntime, citizens: list[Any], n: int) -> int:
    await runtime.log.record([access(citizens[i % len(citizens)]) for i in range(n)])
    return (await runtime.log.sign_tree_head()).tree_size


async def rewrite_history(audit_db: Any, keys: Keys, position: int, sizes: list[int]) -> None:
    """As the database superuser with the real signing key: alter an old entry, recompute every
    leaf, node and tree head, and sign the same sizes again."""
    superuser = await asyncpg.connect(audit_db.superuser_dsn)
    try:
        for table in ("log_entry", "merkle_node", "tree_head", "cosignature"):
            await superuser.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        async with superuser.transaction():
            await superuser.execute(
                "UPDATE log_entry SET purpose = 'marketing' WHERE position = $1", position
            )
            rows = await superuser.fetch("SELECT * FROM log_entry ORDER BY position")
            tree = merkle.CompactRange()
            nodes: list[tuple[merkle.NodeId, bytes]] = []
            roots: dict[int, bytes] = {}
            for row in rows:
                entry = _entry(row)
                await superuser.execute(
                    "UPDATE log_entry SET leaf_hash = $1 WHERE position = $2",
                    entry.leaf_hash(),
                    entry.position,
                )
                nodes += tree.append(entry.leaf_hash())
                roots[tree.size] = tree.root()
            await superuser.execute("DELETE FROM cosignature")
            await superuser.execute("DELETE FROM tree_head")
            await superuser.execute("DELETE FROM merkle_node")
            await superuser.executemany(
                "INSERT INTO merkle_node VALUES ($1, $2, $3)",
                [(level, idx, value) for (level, idx), value in nodes],
            )
            signer = checkpoint.Signer(ORIGIN, keys.tree_head)
            for size in sizes:
                head = TreeHead.sign(keys.tree_head, size, roots[size], dt.datetime.now(dt.UTC))
                note = signer.sign(checkpoint.Checkpoint(ORIGIN, size, roots[size]).text())
                head = dataclasses.replace(head, checkpoint=note)
                await superuser.execute(
                    "INSERT INTO tree_head VALUES ($1, $2, $3, $4, $5, $6)",
                    head.tree_size,
                    head.root_hash,
                    head.timestamp,
                    head.key_id,
                    head.signature,
                    head.checkpoint,
                )
    finally:
        await superuser.close()


async def test_a_rewritten_history_is_refused_by_the_witness_and_proven_a_fork(
    runtime: AuditRuntime,
    client: httpx.AsyncClient,
    witness: Witness,
    audit_db: Any,
    keys: Keys,
    citizens: Any,
    tmp_path: Path,
) -> None:
    first = await grow(runtime, citizens, 12)
    assert (await witness.poll_once(client)).size == first
    # an independent checker keeps the public checkpoint of that day
    held = (await client.get("/v1/log/checkpoint")).text
    assert WITNESS_NAME in held, "the witness returned its cosignature to the log"
    second = await grow(runtime, citizens, 9)
    assert (await witness.poll_once(client)).size == second
    log_key = checkpoint.parse_vkey((await client.get("/v1/log/vkey")).text)
    assert (await check_log(client, held, log_key)).ok

    await rewrite_history(audit_db, keys, 4, [first, second])
    # the forged log is self-consistent: every signature verifies, its own proofs check out
    forged = checkpoint.open_checkpoint((await client.get("/v1/log/checkpoint")).text, log_key)
    assert forged.checkpoint.size == second

    forks = ALARMS.labels("fork")._value.get()
    with pytest.raises(Refusal) as refused:
        await witness.poll_once(client)
    assert refused.value.kind is RefusalKind.FORK
    assert ALARMS.labels("fork")._value.get() == forks + 1
    (alarm,) = witness.store.alarms()
    assert alarm.kind == "fork"
    assert fork_proven(alarm.cosigned or "", alarm.offered, log_key)
    assert WITNESS_NAME not in (await client.get("/v1/log/checkpoint")).text, "not cosigned"

    # the checker with the earlier checkpoint proves the fork with two notes the log signed
    verdict = await check_log(client, held, log_key)
    assert (verdict.ok, verdict.verdict) == (False, "fork")
    assert fork_proven(*verdict.evidence, log_key)

    # the log goes on growing on top of the forgery: no proof can connect it to what was seen
    await grow(runtime, citizens, 5)
    with pytest.raises(Refusal) as refused:
        await witness.poll_once(client)
    assert refused.value.kind is RefusalKind.BAD_PROOF
    assert [a.kind for a in witness.store.alarms()] == ["fork", "bad_proof"]

    # an operator reads the alarms from the witness's own file
    witness.store.close()
    result = CliRunner().invoke(
        cli, ["witness", "alarms", "--database", str(tmp_path / "witness.sqlite3")]
    )
    assert result.exit_code == 1, result.output
    assert "fork: two checkpoints of size" in result.output
    assert "bad_proof" in result.output
