"""The unit of work: one transaction; it commits on a clean exit and rolls back otherwise.

The repositories are protocols here; adapters/repository.py implements them with asyncpg and
the unit tests (tests/unit/audit) with in-memory fakes.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from types import TracebackType
from typing import Protocol, Self

from ikd_audit.domain.batch import EntryBatch, NewNodes
from ikd_audit.domain.model import Cosignature
from ikd_audit.domain.search import AgencyCount, SearchFilter
from ikd_shared.merkle import NodeId
from ikd_shared.transparency import Entry, TreeHead


class LogRepository(Protocol):
    """The append-only log: entries, the stored Merkle nodes and signed tree heads.

    Nothing here updates or deletes: the runtime database role may only SELECT, and append
    through functions that take the next positions only.
    """

    async def lock(self) -> None:
        """Hold off other appenders until the unit of work ends (positions stay gapless)."""
        ...

    async def known_access_ids(self, access_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]: ...

    async def size(self) -> int:
        """Entries in the log: the next position."""
        ...

    async def node_hashes(self, nodes: Iterable[NodeId]) -> dict[NodeId, bytes]:
        """Hashes of leaves (level 0) and stored perfect subtrees; LookupError if any is missing."""
        ...

    async def add(self, batch: EntryBatch, nodes: NewNodes) -> None:
        """Insert the batch at its positions with the perfect subtrees it completed.

        Raises if a position or access id is already taken: the unit of work then rolls back.
        """
        ...

    async def add_tree_head(self, head: TreeHead) -> None:
        """Store a signed head; a head of that size already stored wins."""
        ...

    async def latest_tree_head(self) -> TreeHead | None: ...

    async def tree_head(self, size: int) -> TreeHead | None: ...

    async def tree_heads(self) -> list[TreeHead]:
        """All signed heads, smallest first."""
        ...

    async def entry(self, position: int) -> tuple[Entry, bytes] | None:
        """The entry at a position and its leaf hash."""
        ...

    async def search(self, search: SearchFilter, before: int | None, limit: int) -> list[Entry]:
        """Matching entries newest first, below position `before` if given."""
        ...

    def stream(
        self, search: SearchFilter | None = None, *, with_hash: bool = False
    ) -> AsyncIterator[tuple[Entry, bytes | None]]:
        """Matching entries in position order, in constant memory."""
        ...

    async def agency_counts(self, search: SearchFilter) -> list[AgencyCount]: ...

    async def trail(self, pseudonym: str) -> list[tuple[Entry, bytes]]:
        """A citizen's entries in position order, with their leaf hashes."""
        ...

    def entries_between(self, start: int, end: int) -> AsyncIterator[Entry]:
        """Entries at positions [start, end) in order, in constant memory."""
        ...

    async def position_of(self, leaf_hash: bytes) -> int | None:
        """The first position whose stored leaf hash is this one."""
        ...

    async def add_cosignature(self, cosignature: Cosignature) -> bool:
        """Store a verified cosignature; False if it was stored before."""
        ...

    async def cosignatures(self, tree_size: int) -> list[Cosignature]: ...

    async def latest_cosigned_size(self, at_least: int = 0) -> int | None:
        """The largest tree size with a cosignature (None: none at or above `at_least`)."""
        ...


class SeenCredentials(Protocol):
    async def remember(self, jti: str, expires_at: dt.datetime) -> bool:
        """Record a credential id; False if it was seen before (a replay)."""
        ...

    async def prune(self, grace: dt.timedelta) -> int:
        """Forget credentials expired more than `grace` ago (a negative grace counts as zero)."""
        ...


class Auditors(Protocol):
    async def secret_hash(self, client_id: str) -> str | None:
        """The argon2 hash of an enabled auditor's secret."""
        ...

    async def save(self, client_id: str, secret_hash: str) -> None:
        """Create an auditor, or set its secret and enable it again."""
        ...


class UnitOfWork(Protocol):
    # read-only, so an adapter may declare its own repository types
    @property
    def log(self) -> LogRepository: ...

    @property
    def credentials(self) -> SeenCredentials: ...

    @property
    def auditors(self) -> Auditors: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Commit if the block succeeded, roll back otherwise: the only place that does."""
        ...


class UnitOfWorkFactory(Protocol):
    def __call__(self, *, snapshot: bool = False) -> UnitOfWork:
        """A new unit of work; `snapshot`: read-only, every read sees the same moment."""
        ...
