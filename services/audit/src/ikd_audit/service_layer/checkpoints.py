"""Signing checkpoints over a tree the signer computed itself, and the witnesses' cosignatures.

The signer trusts no stored hash: it keeps the frontier (compact range) of the last tree it
signed, appends the leaves added since, each hashed again from the entry's own content, and
signs the root it computed. A signer that starts without a frontier takes the stored one only
if it folds to the root of a head its own key signed. If the stored tree then disagrees with
the computed one (the nodes proofs are built from), it refuses to sign.

The key lives in one process, `ikd-audit signer` (CheckpointSigner); the service itself holds
only the log's verifier key and asks the signer for a head when it needs one (SignerClient).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from tenacity import AsyncRetrying, retry_if_result, stop_after_delay, wait_exponential

from ikd_audit.domain.errors import AuditError, BadProofRequest, NotFound, TreeHeadPending
from ikd_audit.domain.model import Cosignature
from ikd_audit.service_layer.unit_of_work import LogRepository, UnitOfWorkFactory
from ikd_shared import checkpoint, merkle
from ikd_shared.transparency import TreeHead

log = logging.getLogger("ikd_audit.checkpoints")

DEFAULT_ORIGIN = "ikd-mpp.local/audit-log"
MAX_CLOCK_SKEW = dt.timedelta(minutes=10)


class IntegrityError(RuntimeError):
    """The stored log no longer matches what the signer signed or computed: nothing is signed."""


class BadCosignature(AuditError):
    status_code = 403
    code = "invalid_cosignature"


async def stored_root(log_repo: LogRepository, size: int) -> bytes:
    nodes = await log_repo.node_hashes(merkle.root_nodes(size))
    return merkle.CompactRange.at(size, nodes).root()


class TreeHeadSigner(Protocol):
    """Where tree heads come from: CheckpointSigner where the key is, SignerClient elsewhere."""

    @property
    def verifier(self) -> checkpoint.Verifier:
        """The log's note key: its name is the checkpoints' origin."""
        ...

    async def sign(self) -> TreeHead:
        """A signed head covering every entry appended so far (the latest one if it does)."""
        ...


class CheckpointSigner:
    """Signs tree heads (the JSON form) and checkpoints (C2SP notes) with one Ed25519 key."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        key: Ed25519PrivateKey,
        origin: str,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self.uow = uow
        self.key = key
        self.note_signer = checkpoint.Signer(origin, key)
        self.clock = clock
        self._retained: tuple[TreeHead, merkle.CompactRange] | None = None
        self._lock = asyncio.Lock()

    @property
    def verifier(self) -> checkpoint.Verifier:
        return self.note_signer.verifier

    async def unsigned_entries(self) -> int:
        """Entries no tree head covers yet; one more while the log has no head at all."""
        async with self.uow(snapshot=True) as uow:
            size, latest = await uow.log.size(), await uow.log.latest_tree_head()
        return size - latest.tree_size if latest else size + 1

    async def sign(self) -> TreeHead:
        """Sign the tree as it is now (or return the head that already signs this size)."""
        async with self._lock:
            return await self._sign()

    async def _sign(self) -> TreeHead:
        async with self.uow(snapshot=True) as uow:
            size = await uow.log.size()
            latest = await uow.log.latest_tree_head()
            if latest is not None and latest.tree_size == size:
                return latest
            tree = await self._frontier(uow.log, latest)
            async for entry in uow.log.entries_between(tree.size, size):
                if entry.position != tree.size:
                    raise IntegrityError(f"position {tree.size} is missing from the log")
                tree.append(entry.leaf_hash())  # hashed again from the entry itself
            if tree.size != size:
                raise IntegrityError(f"the log ends at {tree.size}, not at its size {size}")
            stored = await stored_root(uow.log, size)
        root = tree.root()
        if stored != root:
            log.error(
                "the stored Merkle tree disagrees with the entries; not signing",
                extra={"fields": {"tree_size": size}},
            )
            raise IntegrityError(f"the stored tree of size {size} does not match its entries")
        timestamp = self.clock()
        head = TreeHead.sign(self.key, size, root, timestamp)
        note = self.note_signer.sign(checkpoint.Checkpoint(self.verifier.name, size, root).text())
        head = dataclasses.replace(head, checkpoint=note)
        async with self.uow() as uow:
            await uow.log.add_tree_head(head)
            # another signer may have signed this size first: its head is the one stored
            stored_head = await uow.log.tree_head(size) or head
        if stored_head.root_hash == root:
            self._retained = (stored_head, tree)
        return stored_head

    async def _frontier(
        self, log_repo: LogRepository, latest: TreeHead | None
    ) -> merkle.CompactRange:
        if latest is None:
            if self._retained is not None:
                raise IntegrityError("the log lost every tree head this signer signed")
            return merkle.CompactRange()
        if self._retained is not None:
            head, tree = self._retained
            if latest.tree_size < head.tree_size:
                raise IntegrityError(
                    f"the latest tree head has size {latest.tree_size}, but this signer "
                    f"signed size {head.tree_size}: the log was rolled back"
                )
            if latest == head:
                return merkle.CompactRange(tree.size, list(tree.frontier))
        # Start over from a head this key signed: its stored frontier must fold to its root.
        if not latest.check_signature(self.key.public_key()):
            raise IntegrityError(f"the tree head of size {latest.tree_size} is not ours")
        nodes = await log_repo.node_hashes(merkle.root_nodes(latest.tree_size))
        tree = merkle.CompactRange.at(latest.tree_size, nodes)
        if tree.root() != latest.root_hash:
            raise IntegrityError(
                f"the stored frontier does not fold to the signed root of size {latest.tree_size}"
            )
        return tree


class SignerClient:
    """Tree heads for a process without the key: it asks the signer process and waits.

    `request` wakes the signer (a NOTIFY it listens for); the log is then read until a head
    covers what was appended before the request. Past `wait` seconds the caller gets
    TreeHeadPending (503, retry later) rather than a head that leaves its entries out.
    """

    REQUEST_AGAIN_SECONDS = 1.0  # a signer that was reconnecting missed the first request

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        verifier: checkpoint.Verifier,
        request: Callable[[], Awaitable[None]],
        *,
        wait: float = 10.0,
    ) -> None:
        self.uow = uow
        self._verifier = verifier
        self.request = request
        self.wait = wait

    @property
    def verifier(self) -> checkpoint.Verifier:
        return self._verifier

    async def sign(self) -> TreeHead:
        size, head = await self._state()
        if head is not None and head.tree_size >= size:
            return head
        loop = asyncio.get_running_loop()
        requested = loop.time()
        await self.request()

        async def covering() -> TreeHead | None:
            nonlocal requested
            _, latest = await self._state()
            if latest is not None and latest.tree_size >= size:
                return latest
            if loop.time() - requested >= self.REQUEST_AGAIN_SECONDS:
                requested = loop.time()
                await self.request()
            return None

        retrying = AsyncRetrying(
            stop=stop_after_delay(self.wait),
            wait=wait_exponential(multiplier=0.01, max=0.2),
            retry=retry_if_result(lambda found: found is None),
            retry_error_callback=lambda _: None,
        )
        found: TreeHead | None = await retrying(covering)
        if found is None:
            raise TreeHeadPending(
                f"the signer has not signed the log up to size {size} yet; try again shortly"
            )
        return found

    async def _state(self) -> tuple[int, TreeHead | None]:
        async with self.uow(snapshot=True) as uow:
            return await uow.log.size(), await uow.log.latest_tree_head()


class Witnessing:
    """Cosignatures of configured witnesses, verified before they are kept."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        log_verifier: checkpoint.Verifier,
        witnesses: Sequence[checkpoint.Verifier],
    ) -> None:
        self.uow = uow
        self.log_verifier = log_verifier
        self.witnesses = list(witnesses)

    async def add(self, tree_size: int, lines: str) -> list[Cosignature]:
        """Signature lines for the checkpoint of `tree_size`; those of known witnesses kept."""
        async with self.uow() as uow:
            head = await uow.log.tree_head(tree_size)
        if head is None or head.checkpoint is None:
            raise NotFound(f"no checkpoint of size {tree_size}")
        try:
            opened = checkpoint.open_checkpoint(
                head.checkpoint.rstrip("\n") + "\n" + lines, self.log_verifier, self.witnesses
            )
        except checkpoint.NoteError as error:
            raise BadCosignature(str(error)) from None
        if not opened.cosignatures:
            raise BadCosignature("no cosignature of a configured witness")
        latest = (dt.datetime.now(dt.UTC) + MAX_CLOCK_SKEW).timestamp()
        if any(v.timestamp > latest for v in opened.cosignatures):
            raise BadCosignature("a cosignature is dated in the future")
        found = [
            Cosignature(
                tree_size=tree_size,
                witness=v.verifier.name,
                key_id=v.verifier.key_id,
                cosigned_at=dt.datetime.fromtimestamp(v.timestamp, dt.UTC),
                line=v.signature.line,
            )
            for v in opened.cosignatures
        ]
        async with self.uow() as uow:
            for cosignature in found:
                await uow.log.add_cosignature(cosignature)
        return found

    async def cosigned(self, head: TreeHead) -> tuple[str | None, list[Cosignature]]:
        """The head's checkpoint with its cosignatures appended, and the cosignatures."""
        async with self.uow() as uow:
            found = await uow.log.cosignatures(head.tree_size)
        if head.checkpoint is None:
            return None, found
        return head.checkpoint + "".join(c.line for c in found), found


async def consistency_hashes(uow: UnitOfWorkFactory, first: int, second: int) -> list[bytes]:
    """PROOF(first, D[second]) between two signed sizes (public: hashes only)."""
    if not 0 <= first <= second:
        raise BadProofRequest("need 0 <= first <= second", code="invalid_sizes")
    async with uow(snapshot=True) as unit:
        for size in {first, second} - {0}:
            if await unit.log.tree_head(size) is None:
                raise BadProofRequest(
                    f"no signed checkpoint of size {size}", code="unknown_tree_size"
                )
        if first in (0, second):
            return []
        ranges = merkle.consistency_ranges(first, second)
        nodes = await unit.log.node_hashes(merkle.nodes_for(ranges))
    return [merkle.range_hash(r, nodes) for r in ranges]


async def inclusion_by_hash(
    uow: UnitOfWorkFactory, leaf_hash: bytes, tree_size: int
) -> tuple[int, list[bytes]]:
    """The leaf's index and audit path in the signed tree of `tree_size` (hashes only)."""
    async with uow(snapshot=True) as unit:
        if await unit.log.tree_head(tree_size) is None:
            raise BadProofRequest(f"no checkpoint of size {tree_size}", code="unknown_tree_size")
        index = await unit.log.position_of(leaf_hash)
        if index is None or index >= tree_size:
            raise NotFound("no such leaf in a tree of that size")
        ranges = merkle.inclusion_ranges(index, tree_size)
        nodes = await unit.log.node_hashes(merkle.nodes_for(ranges))
    return index, [merkle.range_hash(r, nodes) for r in ranges]
