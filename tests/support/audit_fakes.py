"""An in-memory unit of work for the audit log: committed on a clean exit only.

It keeps the database's constraints (unique positions, access ids, Merkle nodes and tree-head
sizes; nothing updated or deleted; read-only snapshots), so a use case that breaks one fails.
"""

from __future__ import annotations

import copy
import datetime as dt
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self

from ikd_audit.domain.batch import EntryBatch, NewNodes
from ikd_audit.domain.model import Cosignature
from ikd_audit.domain.search import AgencyCount, SearchFilter
from ikd_shared.merkle import NodeId
from ikd_shared.transparency import Entry, TreeHead


@dataclass
class LogState:
    entries: dict[int, Entry] = field(default_factory=dict)
    nodes: dict[NodeId, bytes] = field(default_factory=dict)
    heads: dict[int, TreeHead] = field(default_factory=dict)
    cosignatures: dict[tuple[int, str, int], Cosignature] = field(default_factory=dict)
    seen: dict[str, dt.datetime] = field(default_factory=dict)
    auditors: dict[str, str] = field(default_factory=dict)
    commits: int = 0
    rollbacks: int = 0


def _matches(entry: Entry, search: SearchFilter) -> bool:
    for column in ("pseudonym", "agency", "service", "channel", "outcome"):
        wanted = getattr(search, column)
        if wanted is not None and getattr(entry, column) != wanted:
            return False
    if search.since is not None and entry.occurred_at < search.since:
        return False
    return search.until is None or entry.occurred_at <= search.until


class ReadOnly(Exception):
    """A write inside a snapshot (PostgreSQL: read-only transaction)."""


class FakeLog:
    def __init__(self, uow: FakeUnitOfWork) -> None:
        self.uow = uow
        self.state = uow.pending

    async def lock(self) -> None:
        self.uow.locked = True

    async def known_access_ids(self, access_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        wanted = set(access_ids)
        return {e.access_id for e in self.state.entries.values() if e.access_id in wanted}

    async def size(self) -> int:
        return max(self.state.entries, default=-1) + 1

    async def node_hashes(self, nodes: Iterable[NodeId]) -> dict[NodeId, bytes]:
        found: dict[NodeId, bytes] = {}
        for level, idx in nodes:
            if level == 0 and idx in self.state.entries:
                found[(level, idx)] = self.state.entries[idx].leaf_hash()
            elif level > 0 and (level, idx) in self.state.nodes:
                found[(level, idx)] = self.state.nodes[(level, idx)]
            else:
                raise LookupError("the stored Merkle tree state is incomplete")
        return found

    async def add(self, batch: EntryBatch, nodes: NewNodes) -> None:
        self.uow.write()
        entries = batch.entries()
        # the batch's own leaf hashes must be the reference definition's, byte for byte
        if batch.leaves != [e.leaf_hash() for e in entries]:
            raise AssertionError("leaf hashes passed along differ from the entries'")
        if not self.uow.locked:
            raise AssertionError("appended without holding the log lock")
        if self.uow.fail_add:
            raise ConnectionError("connection lost mid-transaction")
        ids = {e.access_id for e in self.state.entries.values()}
        # as append_log() in migrations/0003: the next positions only, nodes inside them
        first = max(self.state.entries, default=-1) + 1
        if [e.position for e in entries] != list(range(first, first + len(entries))):
            raise ValueError(f"entries must continue the log at position {first}")
        for (level, idx), _ in nodes.pairs():
            if not first <= (idx + 1) * (1 << level) - 1 < first + len(entries):
                raise ValueError("a tree node outside the appended entries")
        for entry in entries:
            if entry.position in self.state.entries or entry.access_id in ids:
                raise ValueError(f"position {entry.position} or its access id is taken")
            self.state.entries[entry.position] = entry
            ids.add(entry.access_id)
        for node, value in nodes.pairs():
            if node in self.state.nodes:
                raise ValueError(f"Merkle node {node} is already stored")
            self.state.nodes[node] = value

    async def add_tree_head(self, head: TreeHead) -> None:
        self.uow.write()
        self.state.heads.setdefault(head.tree_size, head)

    async def latest_tree_head(self) -> TreeHead | None:
        return self.state.heads[max(self.state.heads)] if self.state.heads else None

    async def tree_head(self, size: int) -> TreeHead | None:
        return self.state.heads.get(size)

    async def tree_heads(self) -> list[TreeHead]:
        return [self.state.heads[size] for size in sorted(self.state.heads)]

    async def entry(self, position: int) -> tuple[Entry, bytes] | None:
        found = self.state.entries.get(position)
        return (found, found.leaf_hash()) if found else None

    async def search(self, search: SearchFilter, before: int | None, limit: int) -> list[Entry]:
        found = [
            e
            for p, e in sorted(self.state.entries.items(), reverse=True)
            if (before is None or p < before) and _matches(e, search)
        ]
        return found[:limit]

    async def stream(
        self, search: SearchFilter | None = None, *, with_hash: bool = False
    ) -> AsyncIterator[tuple[Entry, bytes | None]]:
        for _, entry in sorted(self.state.entries.items()):
            if _matches(entry, search or SearchFilter()):
                yield entry, (entry.leaf_hash() if with_hash else None)

    async def agency_counts(self, search: SearchFilter) -> list[AgencyCount]:
        counts: dict[str, list[int]] = {}
        for entry in self.state.entries.values():
            if _matches(entry, search):
                count = counts.setdefault(entry.agency, [0, 0])
                count[0] += 1
                count[1] += entry.outcome == "denied"
        return [AgencyCount(a, n, d) for a, (n, d) in sorted(counts.items())]

    async def trail(self, pseudonym: str) -> list[tuple[Entry, bytes]]:
        return [
            (e, e.leaf_hash())
            for _, e in sorted(self.state.entries.items())
            if e.pseudonym == pseudonym
        ]

    async def entries_between(self, start: int, end: int) -> AsyncIterator[Entry]:
        for position in range(start, end):
            if position in self.state.entries:
                yield self.state.entries[position]

    async def position_of(self, leaf_hash: bytes) -> int | None:
        found = [p for p, e in self.state.entries.items() if e.leaf_hash() == leaf_hash]
        return min(found, default=None)

    async def add_cosignature(self, cosignature: Cosignature) -> bool:
        self.uow.write()
        if cosignature.tree_size not in self.state.heads:
            raise ValueError("no tree head of that size")
        key = (cosignature.tree_size, cosignature.witness, cosignature.key_id)
        if key in self.state.cosignatures:
            return False
        self.state.cosignatures[key] = cosignature
        return True

    async def cosignatures(self, tree_size: int) -> list[Cosignature]:
        return [c for k, c in sorted(self.state.cosignatures.items()) if k[0] == tree_size]

    async def latest_cosigned_size(self, at_least: int = 0) -> int | None:
        sizes = [k[0] for k in self.state.cosignatures if k[0] >= at_least]
        return max(sizes, default=None)


class FakeSeenCredentials:
    def __init__(self, uow: FakeUnitOfWork) -> None:
        self.uow = uow
        self.state = uow.pending

    async def remember(self, jti: str, expires_at: dt.datetime) -> bool:
        self.uow.write()
        if jti in self.state.seen:
            return False
        self.state.seen[jti] = expires_at
        return True

    async def prune(self, grace: dt.timedelta) -> int:
        # as prune_seen_credential() in migrations/0002: a negative grace counts as zero
        self.uow.write()
        cutoff = self.uow.now() - max(grace, dt.timedelta(0))
        gone = [jti for jti, expires in self.state.seen.items() if expires < cutoff]
        for jti in gone:
            del self.state.seen[jti]
        return len(gone)


class FakeAuditors:
    def __init__(self, uow: FakeUnitOfWork) -> None:
        self.uow = uow
        self.state = uow.pending

    async def secret_hash(self, client_id: str) -> str | None:
        return self.state.auditors.get(client_id)

    async def save(self, client_id: str, secret_hash: str) -> None:
        self.uow.write()
        self.state.auditors[client_id] = secret_hash


class FakeUnitOfWork:
    """Works on a copy of the committed state; only a clean exit replaces it."""

    def __init__(self, database: FakeDatabase, *, snapshot: bool) -> None:
        self.database = database
        self.snapshot = snapshot
        self.fail_add = database.fail_next_add
        database.fail_next_add = False
        self.locked = False

    def now(self) -> dt.datetime:
        return self.database.now

    def write(self) -> None:
        if self.snapshot:
            raise ReadOnly("a snapshot is read-only")

    async def __aenter__(self) -> Self:
        self.pending = copy.deepcopy(self.database.committed)
        self.log = FakeLog(self)
        self.credentials = FakeSeenCredentials(self)
        self.auditors = FakeAuditors(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.pending.commits = self.database.committed.commits + 1
            self.database.committed = self.pending
        else:
            self.database.committed.rollbacks += 1


class FakeDatabase:
    """The UnitOfWorkFactory of the fake: `committed` is what a new unit of work sees."""

    def __init__(self, now: dt.datetime) -> None:
        self.committed = LogState()
        self.now = now
        self.fail_next_add = False

    def __call__(self, *, snapshot: bool = False) -> FakeUnitOfWork:
        return FakeUnitOfWork(self, snapshot=snapshot)
