"""The log's use cases against the in-memory unit of work: what is appended, signed and proved."""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Awaitable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pymerkle import InmemoryTree

from ikd_audit.domain.errors import BadCursor, BadProofRequest, NotFound
from ikd_audit.domain.search import SearchFilter
from ikd_audit.service_layer.checkpoints import DEFAULT_ORIGIN, CheckpointSigner
from ikd_audit.service_layer.services import AuditLog, Auditors
from ikd_shared import transparency
from ikd_shared.events.access_v1 import AccessRecorded, Channel, Outcome
from ikd_shared.legal import LegalBasis
from tests.support.audit_fakes import FakeDatabase

T0 = dt.datetime(2025, 3, 1, 8, 0, tzinfo=dt.UTC)
ALICE, BOB = "a" * 64, "b" * 64


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> dt.datetime:
        self.now += dt.timedelta(milliseconds=1)
        return self.now


def access(
    pseudonym: str | None = ALICE,
    *,
    agency: str = "bpjs-kesehatan",
    outcome: Outcome = Outcome.SERVED,
    minute: int = 0,
) -> AccessRecorded:
    return AccessRecorded(
        access_id=uuid.uuid4(),
        occurred_at=T0 + dt.timedelta(minutes=minute),
        agency=agency,
        service="daftar-peserta",
        pseudonym=pseudonym,
        fields=["full_name"],
        purpose="enrolment",
        legal_basis=LegalBasis.LEGAL_OBLIGATION,
        channel=Channel.PREFILL,
        outcome=outcome,
        reason="not_in_policy" if outcome is Outcome.DENIED else None,
    )


def rfc9162_root(leaves: list[bytes]) -> bytes:
    """MTH from RFC 9162 section 2.1.1, written from the text."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + rfc9162_root(leaves[:k]) + rfc9162_root(leaves[k:])).digest()


def pymerkle_root(leaves: list[bytes]) -> bytes:
    tree = InmemoryTree(algorithm="sha256")
    for leaf in leaves:
        tree.append_entry(leaf)
    return bytes(tree.get_root())


@pytest.fixture
def db() -> FakeDatabase:
    return FakeDatabase(now=T0 + dt.timedelta(days=10))


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def audit_log(db: FakeDatabase, key: Ed25519PrivateKey) -> AuditLog:
    """The log with its signer in the same process, as `ikd-audit signer` has it."""
    clock = Clock()
    signer = CheckpointSigner(db, key, DEFAULT_ORIGIN, clock)
    return AuditLog(db, signer, pseudonym_key=b"p" * 32, cursor_key=b"c" * 32, clock=clock)


@pytest.fixture
def audit(db: FakeDatabase, key: Ed25519PrivateKey) -> AuditLog:
    return audit_log(db, key)


async def leaf_data(audit: AuditLog) -> list[bytes]:
    return [entry.leaf_data() async for entry, _ in audit.stream()]


async def test_appending_is_idempotent_by_access_id(db: FakeDatabase, audit: AuditLog) -> None:
    event, other = access(), access(BOB)
    first = await audit.record([event, event, other])
    again = await audit.record([other, event])
    assert (first.appended, first.duplicates, first.tree_size) == (2, 1, 2)
    assert (again.appended, again.duplicates, again.tree_size) == (0, 2, 2)
    assert again.root_hash == first.root_hash
    assert [e.access_id async for e, _ in audit.stream()] == [event.access_id, other.access_id]


async def test_positions_are_gapless_across_batches_with_redeliveries(audit: AuditLog) -> None:
    events = [access(minute=i) for i in range(30)]
    for start in range(0, 30, 7):
        # each batch redelivers part of the one before it
        await audit.record(events[max(0, start - 3) : start + 7])
    entries = [e async for e, _ in audit.stream()]
    assert [e.position for e in entries] == list(range(30))
    assert [e.access_id for e in entries] == [e.access_id for e in events]


async def test_a_failed_append_leaves_nothing_and_the_next_one_fills_the_gap(
    db: FakeDatabase, audit: AuditLog
) -> None:
    await audit.record([access(), access()])
    before = db.committed
    db.fail_next_add = True
    lost = [access(), access(), access()]
    with pytest.raises(ConnectionError):
        await audit.record(lost)
    assert db.committed is before
    assert db.committed.rollbacks == 1
    result = await audit.record(lost)  # the consumer's retry of the same batch
    assert (result.appended, result.tree_size) == (3, 5)
    assert sorted(db.committed.entries) == list(range(5))


@pytest.mark.parametrize("batches", [[1], [3, 4, 1], [8, 8], [5, 1, 1, 9, 16, 2]])
async def test_size_and_root_match_an_independent_rfc9162_computation(
    audit: AuditLog, batches: list[int]
) -> None:
    for n in batches:
        result = await audit.record([access() for _ in range(n)])
        leaves = await leaf_data(audit)
        assert result.tree_size == len(leaves)
        assert result.root_hash == rfc9162_root(leaves) == pymerkle_root(leaves)


async def test_tree_heads_sign_exactly_what_was_appended(
    db: FakeDatabase, audit: AuditLog, key: Ed25519PrivateKey
) -> None:
    empty = await audit.sign_tree_head()
    assert (empty.tree_size, empty.root_hash) == (0, rfc9162_root([]))
    await audit.record([access() for _ in range(5)])
    assert await audit.unsigned_entries() == 5
    head = await audit.sign_tree_head()
    assert head.tree_size == 5
    assert head.root_hash == rfc9162_root(await leaf_data(audit))
    assert head.check_signature(key.public_key())
    assert not head.check_signature(Ed25519PrivateKey.generate().public_key())
    assert await audit.unsigned_entries() == 0
    # nothing new: the same head, no second one stored
    assert await audit.sign_tree_head() == head
    assert sorted(db.committed.heads) == [0, 5]
    await audit.record([access()])
    assert (await audit.sign_tree_head()).tree_size == 6
    assert sorted(db.committed.heads) == [0, 5, 6]


async def test_a_tree_head_signed_elsewhere_first_is_the_one_returned(
    db: FakeDatabase, audit: AuditLog, key: Ed25519PrivateKey
) -> None:
    await audit.record([access()])
    other = audit_log(db, key)
    first = await other.sign_tree_head()
    assert await audit.sign_tree_head() == first


async def test_proofs_from_the_service_verify_independently(
    audit: AuditLog, key: Ed25519PrivateKey
) -> None:
    sizes = []
    for n in (1, 2, 5, 8, 3):
        await audit.record([access() for _ in range(n)])
        sizes.append((await audit.sign_tree_head()).tree_size)
    public = key.public_key()
    for position in range(sizes[-1]):
        bundle = await audit.inclusion_proof(position)
        transparency.verify_inclusion_bundle(bundle, public)
        assert bundle["tree_size"] == sizes[-1]
        for size in sizes:
            if position < size:
                older = await audit.inclusion_proof(position, size)
                assert older["tree_size"] == size
                transparency.verify_inclusion_bundle(older, public)
    for i, first in enumerate(sizes):
        for second in sizes[i:]:
            proof = await audit.consistency_proof(first, second)
            transparency.verify_consistency_bundle(proof, public)
    status = await audit.integrity()
    assert status.ok, status.problems
    report = transparency.verify_log([r async for r in audit.export()], public)
    assert report.ok
    assert report.entries == sizes[-1]


async def test_a_proof_for_an_unsigned_entry_signs_a_head_covering_it(audit: AuditLog) -> None:
    await audit.record([access()])
    await audit.sign_tree_head()
    await audit.record([access()])
    bundle = await audit.inclusion_proof(1)
    assert bundle["tree_size"] == 2


async def test_impossible_proofs_are_refused(audit: AuditLog) -> None:
    async def refused(call: Awaitable[Any], error: type[Exception], code: str) -> None:
        with pytest.raises(error) as raised:
            await call
        assert getattr(raised.value, "code", None) == code

    await audit.record([access() for _ in range(3)])
    await audit.sign_tree_head()
    await refused(audit.inclusion_proof(3), NotFound, "not_found")
    await refused(audit.inclusion_proof(0, 2), BadProofRequest, "unknown_tree_size")
    await refused(audit.consistency_proof(1, 3), BadProofRequest, "unknown_tree_size")
    await refused(audit.consistency_proof(3, 1), BadProofRequest, "invalid_sizes")
    await audit.record([access()])
    await audit.sign_tree_head()
    await refused(audit.inclusion_proof(3, 3), BadProofRequest, "position_outside_tree")


async def test_search_filters_and_pages_newest_first_without_overlap(audit: AuditLog) -> None:
    events = [
        access(ALICE if i % 2 else BOB, agency="dinsos" if i % 3 else "bpjs-kesehatan", minute=i)
        for i in range(23)
    ]
    events.append(access(ALICE, outcome=Outcome.DENIED, minute=30))
    await audit.record(events)
    search = SearchFilter(pseudonym=ALICE, since=T0 + dt.timedelta(minutes=5))
    expected = [
        i
        for i, e in enumerate(events)
        if e.pseudonym == ALICE and e.occurred_at >= T0 + dt.timedelta(minutes=5)
    ][::-1]
    seen: list[int] = []
    cursor = None
    while True:
        page = await audit.search(search, cursor, 4)
        assert len(page.entries) <= 4
        seen.extend(e.position for e in page.entries)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert seen == expected
    denied = await audit.search(SearchFilter(outcome="denied"), None, 10)
    assert [e.position for e in denied.entries] == [23]
    first = await audit.search(search, None, 4)
    assert first.next_cursor is not None
    with pytest.raises(BadCursor):  # a cursor is bound to its filter
        await audit.search(SearchFilter(pseudonym=BOB), first.next_cursor, 4)
    counts = {c.agency: (c.accesses, c.denials) for c in await audit.agency_counts(SearchFilter())}
    assert counts == {"bpjs-kesehatan": (9, 1), "dinsos": (15, 0)}


async def test_pruning_forgets_only_credentials_expired_past_the_grace(
    db: FakeDatabase, audit: AuditLog
) -> None:
    now = db.now
    ages = {"long-expired": 3 * 86400, "just-expired": 3600, "live": -300}
    for jti, expired_ago in ages.items():
        async with db() as uow:
            assert await uow.credentials.remember(jti, now - dt.timedelta(seconds=expired_ago))
    assert await audit.prune_seen_credentials(dt.timedelta(days=1)) == 1
    assert sorted(db.committed.seen) == ["just-expired", "live"]
    assert await audit.prune_seen_credentials(dt.timedelta(days=-1)) == 1
    assert sorted(db.committed.seen) == ["live"]
    async with db() as uow:  # a live credential is still refused as a replay
        assert not await uow.credentials.remember("live", now + dt.timedelta(minutes=5))


async def test_auditors_are_saved_through_the_unit_of_work(db: FakeDatabase) -> None:
    auditors = Auditors(db)
    await auditors.save("auditor-1", "hash-1")
    await auditors.save("auditor-1", "hash-2")
    assert await auditors.secret_hash("auditor-1") == "hash-2"
    assert await auditors.secret_hash("nobody") is None
    assert db.committed.commits == 4
