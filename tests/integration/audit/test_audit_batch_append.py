"""Batch appends in PostgreSQL: what is stored hashes to the reference leaves and tree, and a
redelivered or concurrently delivered batch is appended once."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from pymerkle import InmemoryTree

from ikd_audit.bootstrap import AuditRuntime
from ikd_shared import merkle
from tests.support.audit import access


def rfc9162_root(leaves: list[bytes]) -> bytes:
    if not leaves:
        return merkle.EMPTY_ROOT
    if len(leaves) == 1:
        return leaves[0]
    k = merkle.split_point(len(leaves))
    return merkle.node_hash(rfc9162_root(leaves[:k]), rfc9162_root(leaves[k:]))


async def test_a_redelivered_overlapping_batch_appends_only_the_new_entries(
    runtime: AuditRuntime, citizens: Any, audit_db: Any
) -> None:
    events = [access(citizens[i % len(citizens)]) for i in range(700)]
    first = await runtime.log.record(events[:500])
    # the consumer crashed after the commit, before its offsets: the batch comes again, longer
    again = await runtime.log.record(events[300:700])
    assert (first.appended, first.duplicates) == (500, 0)
    assert (again.appended, again.duplicates) == (200, 200)

    async with runtime.uow(snapshot=True) as uow:
        stored = [(e, leaf) async for e, leaf in uow.log.stream(with_hash=True)]
    assert [e.access_id for e, _ in stored] == [e.access_id for e in events]
    assert [e.position for e, _ in stored] == list(range(700))
    # every stored leaf is the reference definition's, recomputed from the stored entry
    leaves = [e.leaf_hash() for e, _ in stored]
    assert [leaf for _, leaf in stored] == leaves
    assert again.root_hash == rfc9162_root(leaves)
    reference = InmemoryTree(algorithm="sha256")
    for e, _ in stored:
        reference.append_entry(e.leaf_data())
    assert bytes(reference.get_root()) == again.root_hash
    async with runtime.uow() as uow:
        nodes = await uow.log.node_hashes(merkle.root_nodes(700))
    assert merkle.range_hash((0, 700), nodes) == again.root_hash
    owner = await asyncpg.connect(audit_db.owner_dsn)
    try:
        # one stored node per completed perfect subtree: n - popcount(n) of them
        assert await owner.fetchval("SELECT count(*) FROM merkle_node") == 700 - bin(700).count("1")
    finally:
        await owner.close()


async def test_the_same_batch_delivered_twice_at_once_is_appended_once(
    runtime: AuditRuntime, citizens: Any
) -> None:
    events = [access(citizens[i % len(citizens)]) for i in range(300)]
    results = await asyncio.gather(runtime.log.record(events), runtime.log.record(events))
    assert sorted(r.appended for r in results) == [0, 300]
    assert sorted(r.duplicates for r in results) == [0, 300]
    stored = [e async for e, _ in runtime.log.stream()]
    assert len(stored) == 300
    assert len({e.access_id for e in stored}) == 300
