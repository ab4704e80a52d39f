"""Checks a third party runs without trusting the audit database.

Inputs are an exported log (JSON lines), or proof bundles, plus the log's public key obtained
out of band. Every leaf hash is recomputed from the entry itself, the tree is rebuilt, and each
signed tree head must match the tree of its size; the report names the first bad position.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ikd_audit.domain import merkle
from ikd_audit.domain.model import Entry, TreeHead

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
