"""The access log's public format and the checks a third party runs without trusting it.

The log is an RFC 9162 Merkle tree (`ikd_shared.merkle`) of entries; an entry's canonical JSON
is its leaf, and signed tree heads (Ed25519) commit to the tree's size and root. The checks take
an exported log (JSON lines) or proof bundles, plus the log's public key obtained out of band:
every leaf hash is recomputed from the entry itself, the tree is rebuilt, and each signed tree
head must match the tree of its size; the report names the first bad position.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ikd_shared import codec, merkle

LEAF_VERSION = 1
STH_VERSION = 1


def format_time(value: dt.datetime) -> str:
    """RFC 3339 UTC with microseconds: the one textual form of a time inside a leaf."""
    if value.tzinfo is None:
        raise ValueError("times in the log are timezone-aware")
    utc = value if value.tzinfo is dt.UTC else value.astimezone(dt.UTC)
    if utc.year < 1000:  # strftime's %Y does not pad: keep its form for such years
        return utc.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    # isoformat is C code and several times faster than strftime: one call per leaf time
    return utc.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_time(value: str) -> dt.datetime:
    return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class Entry:
    """One leaf of the log. Field *names* only: the log never holds a citizen's data."""

    position: int
    access_id: uuid.UUID
    occurred_at: dt.datetime
    recorded_at: dt.datetime
    agency: str
    service: str | None
    pseudonym: str | None
    fields: tuple[str, ...]
    purpose: str | None
    legal_basis: str | None
    channel: str
    outcome: str
    reason: str | None

    def document(self) -> dict[str, Any]:
        """The entry as a JSON object; its canonical bytes are the Merkle leaf."""
        return {
            "v": LEAF_VERSION,
            "position": self.position,
            "access_id": str(self.access_id),
            "occurred_at": format_time(self.occurred_at),
            "recorded_at": format_time(self.recorded_at),
            "agency": self.agency,
            "service": self.service,
            "pseudonym": self.pseudonym,
            "fields": list(self.fields),
            "purpose": self.purpose,
            "legal_basis": self.legal_basis,
            "channel": self.channel,
            "outcome": self.outcome,
            "reason": self.reason,
        }

    def leaf_data(self) -> bytes:
        return codec.dumps(self.document(), sort_keys=True)

    def leaf_hash(self) -> bytes:
        return merkle.leaf_hash(self.leaf_data())

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> Entry:
        if doc.get("v") != LEAF_VERSION:
            raise ValueError(f"unknown leaf version {doc.get('v')!r}")
        return cls(
            position=int(doc["position"]),
            access_id=uuid.UUID(doc["access_id"]),
            occurred_at=parse_time(doc["occurred_at"]),
            recorded_at=parse_time(doc["recorded_at"]),
            agency=doc["agency"],
            service=doc["service"],
            pseudonym=doc["pseudonym"],
            fields=tuple(doc["fields"]),
            purpose=doc["purpose"],
            legal_basis=doc["legal_basis"],
            channel=doc["channel"],
            outcome=doc["outcome"],
            reason=doc["reason"],
        )


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def public_key_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def load_public_key(pem: str | bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem.encode() if isinstance(pem, str) else pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


@dataclass(frozen=True, slots=True)
class TreeHead:
    """A signed tree head: the log's size and root at a time, signed by the log's key."""

    tree_size: int
    root_hash: bytes
    timestamp: dt.datetime
    key_id: str
    signature: bytes
    checkpoint: str | None = None
    """The same tree as a C2SP checkpoint (signed note), signed by the same key; None on old
    heads."""

    @staticmethod
    def signed_bytes(tree_size: int, root_hash: bytes, timestamp: dt.datetime, kid: str) -> bytes:
        return codec.dumps(
            {
                "v": STH_VERSION,
                "tree_size": tree_size,
                "root_hash": root_hash.hex(),
                "timestamp": format_time(timestamp),
                "key_id": kid,
            },
            sort_keys=True,
        )

    @classmethod
    def sign(
        cls, key: Ed25519PrivateKey, tree_size: int, root_hash: bytes, timestamp: dt.datetime
    ) -> TreeHead:
        # Microseconds are what PostgreSQL keeps; sign exactly what will be stored.
        timestamp = timestamp.astimezone(dt.UTC)
        kid = key_id(key.public_key())
        signature = key.sign(cls.signed_bytes(tree_size, root_hash, timestamp, kid))
        return cls(tree_size, root_hash, timestamp, kid, signature)

    def check_signature(self, public_key: Ed25519PublicKey) -> bool:
        if key_id(public_key) != self.key_id:
            return False
        data = self.signed_bytes(self.tree_size, self.root_hash, self.timestamp, self.key_id)
        try:
            public_key.verify(self.signature, data)
        except InvalidSignature:
            return False
        return True

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "v": STH_VERSION,
            "tree_size": self.tree_size,
            "root_hash": self.root_hash.hex(),
            "timestamp": format_time(self.timestamp),
            "key_id": self.key_id,
            "signature": self.signature.hex(),
        }
        if self.checkpoint is not None:
            doc["checkpoint"] = self.checkpoint
        return doc

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> TreeHead:
        return cls(
            tree_size=int(doc["tree_size"]),
            root_hash=bytes.fromhex(doc["root_hash"]),
            timestamp=parse_time(doc["timestamp"]),
            key_id=str(doc["key_id"]),
            signature=bytes.fromhex(doc["signature"]),
            checkpoint=doc.get("checkpoint"),
        )


# --- offline verification ------------------------------------------------------------------

ENTRY = "entry"
TREE_HEAD = "tree_head"


@dataclass
class Report:
    entries: int = 0
    tree_heads_checked: int = 0
    verified_size: int = 0
    first_bad_position: int | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def fail(self, message: str, position: int | None = None) -> None:
        if position is not None and self.first_bad_position is None:
            self.first_bad_position = position
        self.problems.append(message)

    def summary(self) -> str:
        if self.ok:
            return (
                f"OK: {self.entries} entries, {self.tree_heads_checked} signed tree heads "
                f"verified; the log is consistent up to size {self.verified_size}"
            )
        where = (
            f"first bad position {self.first_bad_position}"
            if self.first_bad_position is not None
            else "no position could be named"
        )
        return f"FAILED ({where}): " + "; ".join(self.problems[:5])


def verify_log(records: Iterable[dict[str, Any]], public_key: Ed25519PublicKey) -> Report:
    """Verify an exported log: tree heads first or anywhere, entries in position order."""
    report = Report()
    heads: list[TreeHead] = []
    entries: list[dict[str, Any]] = []
    for record in records:
        kind = record.get("type")
        if kind == TREE_HEAD:
            try:
                heads.append(TreeHead.from_document(record))
            except (KeyError, ValueError, TypeError) as error:
                report.fail(f"unreadable tree head: {error}")
        elif kind == ENTRY:
            entries.append(record)
    signed: dict[int, TreeHead] = {}
    for head in heads:
        if not head.check_signature(public_key):
            report.fail(f"tree head of size {head.tree_size} has a bad signature or key")
            continue
        previous = signed.get(head.tree_size)
        if previous is not None and previous.root_hash != head.root_hash:
            report.fail(f"two signed tree heads of size {head.tree_size} disagree (fork)")
        signed[head.tree_size] = head
    if not signed:
        report.fail("no validly signed tree head to verify against")

    tree = merkle.CompactRange()
    pending = sorted(signed)
    last_good = 0
    if pending and pending[0] == 0:
        _check_root(report, signed[0], tree, 0)
        pending.pop(0)
    for expected, record in enumerate(entries):
        problem = _check_entry(record, expected)
        if problem is not None:
            report.fail(f"position {expected}: {problem}", expected)
            break
        tree.append(bytes.fromhex(record["leaf_hash"]))
        report.entries = tree.size
        if pending and pending[0] == tree.size:
            if not _check_root(report, signed[pending.pop(0)], tree, last_good):
                break
            last_good = tree.size
    else:
        if pending:
            report.fail(
                f"the log has {tree.size} entries but a tree head signs {pending[-1]}: "
                f"position {tree.size} onwards is missing",
                tree.size,
            )
    report.verified_size = last_good
    return report


def _check_entry(record: dict[str, Any], expected: int) -> str | None:
    try:
        entry = Entry.from_document(record)
    except (KeyError, ValueError, TypeError) as error:
        return f"unreadable entry ({error})"
    if entry.position != expected:
        return f"found position {entry.position} where {expected} belongs (missing or moved row)"
    stored = record.get("leaf_hash")
    if not isinstance(stored, str) or stored != entry.leaf_hash().hex():
        return "the entry's content does not match its leaf hash (altered row)"
    return None


def _check_root(report: Report, head: TreeHead, tree: merkle.CompactRange, last_good: int) -> bool:
    report.tree_heads_checked += 1
    if tree.root() == head.root_hash:
        return True
    report.fail(
        f"the first {tree.size} entries do not hash to the signed root of that size; "
        f"the first changed entry is at or after position {last_good}",
        last_good,
    )
    return False


def verify_inclusion_bundle(bundle: dict[str, Any], public_key: Ed25519PublicKey) -> str:
    """Check an inclusion proof as served by the API; return a one-line verdict or raise."""
    head = TreeHead.from_document(bundle["tree_head"])
    if not head.check_signature(public_key):
        raise merkle.ProofError("the tree head's signature does not verify with this key")
    index, size = int(bundle["leaf_index"]), int(bundle["tree_size"])
    if size != head.tree_size:
        raise merkle.ProofError("the proof is for another tree size than the tree head")
    leaf = bytes.fromhex(bundle["leaf_hash"])
    if "entry" in bundle:
        entry = Entry.from_document(bundle["entry"])
        if entry.position != index or entry.leaf_hash() != leaf:
            raise merkle.ProofError("the entry does not match the proven leaf")
    path = [bytes.fromhex(h) for h in bundle["audit_path"]]
    merkle.verify_inclusion(leaf, index, size, path, head.root_hash)
    return f"OK: leaf {index} is included in the signed tree of size {size}"


def verify_consistency_bundle(bundle: dict[str, Any], public_key: Ed25519PublicKey) -> str:
    first = TreeHead.from_document(bundle["first"])
    second = TreeHead.from_document(bundle["second"])
    for head in (first, second):
        if not head.check_signature(public_key):
            raise merkle.ProofError(f"tree head of size {head.tree_size} has a bad signature")
    path = [bytes.fromhex(h) for h in bundle["consistency_path"]]
    merkle.verify_consistency(
        first.tree_size, second.tree_size, first.root_hash, second.root_hash, path
    )
    return f"OK: the tree of size {second.tree_size} extends the tree of size {first.tree_size}"
