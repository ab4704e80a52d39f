"""Use cases of the audit log: record accesses, sign tree heads, prove, search, citizen trails."""

from __future__ import annotations

import base64
import datetime as dt
import itertools
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ikd_audit.domain.batch import EntryBatch, extend_tree
from ikd_audit.domain.errors import BadProofRequest, NotFound, Unauthenticated
from ikd_audit.domain.model import NewEntry
from ikd_audit.domain.search import AgencyCount, CursorCodec, SearchFilter
from ikd_audit.service_layer.checkpoints import TreeHeadSigner, Witnessing
from ikd_audit.service_layer.unit_of_work import LogRepository, UnitOfWorkFactory
from ikd_shared import checkpoint, merkle, transparency
from ikd_shared.credentials import CredentialError, CredentialVerifier
from ikd_shared.events.access_v1 import AccessRecorded
from ikd_shared.pseudonym import pseudonymize
from ikd_shared.transparency import Entry, TreeHead, key_id, public_key_pem

MAX_SIZE = 2**63 - 1  # positions and tree sizes are PostgreSQL bigint

Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, slots=True)
class AppendResult:
    appended: int
    duplicates: int
    tree_size: int
    root_hash: bytes


@dataclass(frozen=True, slots=True)
class Page:
    entries: list[Entry]
    next_cursor: str | None


@dataclass
class Integrity:
    tree_size: int
    latest: TreeHead | None
    signature_ok: bool
    stored_root_ok: bool
    heads_consistent: bool
    full_check: transparency.Report | None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        full_ok = self.full_check is None or self.full_check.ok
        return (
            self.latest is not None
            and self.signature_ok
            and self.stored_root_ok
            and self.heads_consistent
            and full_ok
        )


def proof_document(
    entry: Entry, leaf: bytes, path: Sequence[bytes], head: TreeHead
) -> dict[str, Any]:
    """An inclusion proof bundle: everything a third party needs besides the public key."""
    return {
        "entry": entry.document(),
        "leaf_data": base64.b64encode(entry.leaf_data()).decode(),
        "leaf_index": entry.position,
        "tree_size": head.tree_size,
        "leaf_hash": leaf.hex(),
        "audit_path": [h.hex() for h in path],
        "tree_head": head.document(),
    }


async def _paths(log: LogRepository, indexes: Sequence[int], size: int) -> list[list[bytes]]:
    ranges = [merkle.inclusion_ranges(i, size) for i in indexes]
    nodes = await log.node_hashes(merkle.nodes_for([r for rs in ranges for r in rs]))
    return [[merkle.range_hash(r, nodes) for r in rs] for rs in ranges]


async def _root(log: LogRepository, size: int) -> bytes:
    return merkle.CompactRange.at(size, await log.node_hashes(merkle.root_nodes(size))).root()


class AuditLog:
    """The log's use cases. It holds no private key: tree heads come from `signer`, which is
    the key's holder only inside `ikd-audit signer` (and in tests), a SignerClient elsewhere."""

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        signer: TreeHeadSigner,
        *,
        pseudonym_key: bytes,
        cursor_key: bytes,
        credentials: CredentialVerifier | None = None,
        credential_max_age: dt.timedelta = dt.timedelta(minutes=5),
        clock: Clock = utc_now,
        witnesses: Sequence[checkpoint.Verifier] = (),
    ) -> None:
        self.uow = uow
        self.signer = signer
        verifier = signer.verifier
        self.origin = verifier.name
        self.vkey = verifier.vkey
        self.witnessing = Witnessing(uow, verifier, witnesses)
        self.public_key = verifier.public_key
        self.key_id = key_id(self.public_key)
        self.public_key_pem = public_key_pem(self.public_key)
        self.pseudonym_key = pseudonym_key
        self.cursors = CursorCodec(cursor_key)
        self.credentials = credentials
        self.credential_max_age = credential_max_age
        self.clock = clock

    # --- recording -------------------------------------------------------------------------

    async def record(self, events: Sequence[AccessRecorded]) -> AppendResult:
        """Append the accesses not yet in the log, in one transaction, at the next positions."""
        ordered: Sequence[AccessRecorded] = events
        if len({e.access_id for e in events}) != len(events):
            seen: set[uuid.UUID] = set()
            ordered = []  # the first event of each access id, in order
            for event in events:
                if event.access_id not in seen:
                    seen.add(event.access_id)
                    ordered.append(event)
        return await self._append(ordered, len(events) - len(ordered))

    async def append(self, entries: Sequence[NewEntry], *, duplicates: int = 0) -> AppendResult:
        """Append entries whose access ids are not in the log yet, at the next positions."""
        unique = list({e.access_id: e for e in entries}.values())
        return await self._append(unique, duplicates)

    async def _append(
        self,
        items: Sequence[AccessRecorded | NewEntry],
        duplicates: int,
    ) -> AppendResult:
        """One transaction: the items (distinct access ids) not in the log yet, appended."""
        now = self.clock()
        async with self.uow() as uow:
            await uow.log.lock()
            known = await uow.log.known_access_ids([e.access_id for e in items])
            fresh = [e for e in items if e.access_id not in known] if known else items
            size = await uow.log.size()
            tree = merkle.CompactRange.at(size, await uow.log.node_hashes(merkle.root_nodes(size)))
            batch = EntryBatch.of_entries(fresh, size, now)
            nodes = extend_tree(tree, batch.leaves)
            if fresh:
                await uow.log.add(batch, nodes)
        return AppendResult(len(fresh), duplicates + len(known), tree.size, tree.root())

    async def sign_tree_head(self) -> TreeHead:
        """A signed head covering the log as it is now, from the signer (a new one if needed)."""
        return await self.signer.sign()

    async def tree_state(self) -> tuple[int, TreeHead | None]:
        """The log's size and its latest signed tree head."""
        async with self.uow(snapshot=True) as uow:
            return await uow.log.size(), await uow.log.latest_tree_head()

    async def unsigned_entries(self) -> int:
        size, latest = await self.tree_state()
        return size - latest.tree_size if latest else size + 1

    async def head_covering(self, position: int) -> TreeHead:
        async with self.uow() as uow:
            latest = await uow.log.latest_tree_head()
        if latest is None or latest.tree_size <= position:
            latest = await self.sign_tree_head()
        return latest

    async def latest_tree_head(self) -> TreeHead:
        async with self.uow() as uow:
            latest = await uow.log.latest_tree_head()
        return latest or await self.sign_tree_head()

    async def prune_seen_credentials(self, grace: dt.timedelta) -> int:
        """Forget replay-protection records of credentials expired more than `grace` ago."""
        async with self.uow() as uow:
            return await uow.credentials.prune(grace)

    # --- proofs ----------------------------------------------------------------------------

    async def inclusion_proof(self, position: int, tree_size: int | None = None) -> dict[str, Any]:
        if not 0 <= position < MAX_SIZE:
            raise NotFound(f"no entry at position {position}")
        if tree_size is not None and not 0 < tree_size <= MAX_SIZE:
            raise BadProofRequest(
                f"no signed tree head of size {tree_size}", code="unknown_tree_size"
            )
        async with self.uow() as uow:
            found = await uow.log.entry(position)
            signed = await uow.log.tree_head(tree_size) if tree_size is not None else None
        if found is None:
            raise NotFound(f"no entry at position {position}")
        entry, leaf = found
        if tree_size is None:
            head = await self.head_covering(position)
        else:
            if signed is None:
                raise BadProofRequest(
                    f"no signed tree head of size {tree_size}", code="unknown_tree_size"
                )
            if position >= tree_size:
                raise BadProofRequest(
                    "the entry is not in a tree of that size", code="position_outside_tree"
                )
            head = signed
        async with self.uow() as uow:
            (path,) = await _paths(uow.log, [position], head.tree_size)
        return proof_document(entry, leaf, path, head)

    async def consistency_proof(self, first: int, second: int) -> dict[str, Any]:
        if not 0 < first <= second <= MAX_SIZE:
            raise BadProofRequest(f"need 0 < first <= second <= {MAX_SIZE}", code="invalid_sizes")
        async with self.uow() as uow:
            older, newer = await uow.log.tree_head(first), await uow.log.tree_head(second)
            if older is None or newer is None:
                raise BadProofRequest(
                    "both sizes must have signed tree heads", code="unknown_tree_size"
                )
            ranges = merkle.consistency_ranges(first, second) if first != second else []
            nodes = await uow.log.node_hashes(merkle.nodes_for(ranges))
        return {
            "first": older.document(),
            "second": newer.document(),
            "consistency_path": [merkle.range_hash(r, nodes).hex() for r in ranges],
        }

    # --- auditor queries -------------------------------------------------------------------

    async def search(self, search: SearchFilter, cursor: str | None, limit: int) -> Page:
        before = self.cursors.decode(cursor, search) if cursor else None
        async with self.uow() as uow:
            entries = await uow.log.search(search, before, limit + 1)
        more = len(entries) > limit
        entries = entries[:limit]
        next_cursor = self.cursors.encode(entries[-1].position, search) if more else None
        return Page(entries, next_cursor)

    async def entry(self, position: int) -> Entry:
        async with self.uow() as uow:
            found = await uow.log.entry(position)
        if found is None:
            raise NotFound(f"no entry at position {position}")
        return found[0]

    async def agency_counts(self, search: SearchFilter) -> list[AgencyCount]:
        async with self.uow() as uow:
            return await uow.log.agency_counts(search)

    async def stream(
        self, search: SearchFilter | None = None
    ) -> AsyncIterator[tuple[Entry, bytes | None]]:
        """Matching entries in position order, all from one snapshot."""
        async with self.uow(snapshot=True) as uow:
            async for item in uow.log.stream(search):
                yield item

    async def export(self) -> AsyncIterator[dict[str, Any]]:
        """The whole log as JSON-lines records, the format `ikd-audit verify` reads."""
        yield {"type": "log", "key_id": self.key_id, "public_key": self.public_key_pem}
        async with self.uow(snapshot=True) as uow:
            for head in await uow.log.tree_heads():
                yield {"type": transparency.TREE_HEAD, **head.document()}
            async for entry, leaf in uow.log.stream(with_hash=True):
                assert leaf is not None
                yield {"type": transparency.ENTRY, **entry.document(), "leaf_hash": leaf.hex()}

    async def integrity(self, *, full_check_limit: int = 200_000) -> Integrity:
        async with self.uow(snapshot=True) as uow:
            heads = await uow.log.tree_heads()
            size = await uow.log.size()
            latest = heads[-1] if heads else None
            nodes = await uow.log.node_hashes(merkle.root_nodes(latest.tree_size)) if latest else {}
        status = Integrity(size, latest, False, False, True, None)
        if latest is None:
            status.problems.append("no signed tree head yet")
            return status
        status.signature_ok = all(h.check_signature(self.public_key) for h in heads)
        if not status.signature_ok:
            status.problems.append("a stored tree head does not carry a valid signature")
        status.stored_root_ok = merkle.range_hash((0, latest.tree_size), nodes) == latest.root_hash
        if not status.stored_root_ok:
            status.problems.append("the stored tree does not match the latest signed root")
        for older, newer in itertools.pairwise(heads):
            if older.tree_size == 0:
                continue
            try:
                proof = await self.consistency_proof(older.tree_size, newer.tree_size)
                transparency.verify_consistency_bundle(proof, self.public_key)
            except (merkle.ProofError, LookupError) as error:
                status.heads_consistent = False
                status.problems.append(
                    f"tree heads {older.tree_size} and {newer.tree_size} are inconsistent: {error}"
                )
                break
        if size <= full_check_limit:
            records = [r async for r in self.export()]
            status.full_check = transparency.verify_log(records, self.public_key)
            status.problems.extend(status.full_check.problems)
        return status

    # --- citizens --------------------------------------------------------------------------

    async def citizen_trail(self, credential: str) -> dict[str, Any]:
        """The citizen's trail, for a fresh credential issued for the trail purpose only.

        Its audience is one identity never accepts, and identity's audiences are refused here:
        a credential shown at a counter or for a consent cannot open the trail.
        """
        if self.credentials is None:
            raise Unauthenticated("citizen trails are not configured", code="not_configured")
        try:
            verified = self.credentials.verify(credential, max_age=self.credential_max_age)
        except CredentialError as error:
            raise Unauthenticated(str(error), code=error.code) from None
        # Committed on its own: a used credential stays used whatever happens next.
        async with self.uow() as uow:
            fresh = await uow.credentials.remember(verified.jti, verified.expires_at)
        if not fresh:
            raise Unauthenticated("this credential was used before", code="credential_replayed")
        pseudonym = pseudonymize(verified.nik, self.pseudonym_key)
        async with self.uow() as uow:
            rows = await uow.log.trail(pseudonym)
        head = await self.trail_head(rows[-1][0].position if rows else None)
        async with self.uow() as uow:
            paths = await _paths(uow.log, [e.position for e, _ in rows], head.tree_size)
        return {
            "pseudonym": pseudonym,
            "tree_head": head.document(),
            "public_key": self.public_key_pem,
            **await self.witnessed(head),
            "accesses": [
                proof_document(entry, leaf, path, head)
                for (entry, leaf), path in zip(rows, paths, strict=True)
            ],
        }

    async def trail_head(self, last_position: int | None) -> TreeHead:
        """The head proofs refer to: the latest one witnesses cosigned, if it covers them."""
        async with self.uow() as uow:
            size = await uow.log.latest_cosigned_size(
                at_least=1 if last_position is None else last_position + 1
            )
            head = await uow.log.tree_head(size) if size is not None else None
        if head is not None:
            return head
        if last_position is None:
            return await self.latest_tree_head()
        return await self.head_covering(last_position)

    async def witnessed(self, head: TreeHead) -> dict[str, Any]:
        """The head's checkpoint (signed note with cosignatures) and who cosigned it."""
        note, cosigned = await self.witnessing.cosigned(head)
        return {
            "checkpoint": note,
            "log_vkey": self.vkey,
            "witnesses": [
                {
                    "name": c.witness,
                    "key_id": f"{c.key_id:08x}",
                    "cosigned_at": transparency.format_time(c.cosigned_at),
                }
                for c in cosigned
            ],
        }


class Auditors:
    """Console sign-in accounts; only argon2 hashes of their secrets are stored."""

    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self.uow = uow

    async def secret_hash(self, client_id: str) -> str | None:
        async with self.uow() as uow:
            return await uow.auditors.secret_hash(client_id)

    async def save(self, client_id: str, secret_hash: str) -> None:
        async with self.uow() as uow:
            await uow.auditors.save(client_id, secret_hash)
