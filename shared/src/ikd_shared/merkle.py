"""Merkle tree hashing, proofs and their verification as RFC 9162 section 2.1 defines them.

Leaves are hashed SHA-256(0x00 || data), interior nodes SHA-256(0x01 || left || right); a tree
of n > 1 leaves splits at k, the largest power of two smaller than n.

Storage model: the hash of every *perfect* subtree (2**level leaves starting at idx * 2**level)
is written once, when its last leaf arrives, and never changes. Any subtree hash that a proof
needs is a fold of at most log2(n) perfect ones, so appends and proofs cost O(log n).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
EMPTY_ROOT = hashlib.sha256(b"").digest()

NodeId = tuple[int, int]
"""(level, idx): the perfect subtree over leaves [idx * 2**level, (idx + 1) * 2**level)."""
Range = tuple[int, int]
"""Leaves [start, end) of a subtree of the RFC 9162 tree."""


class ProofError(ValueError):
    """A proof that does not verify, or a request for an impossible one."""


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(LEAF_PREFIX + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE_PREFIX + left + right).digest()


def split_point(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def perfect_nodes(start: int, end: int) -> list[NodeId]:
    """The perfect subtrees that make up range [start, end), left to right (largest first)."""
    nodes: list[NodeId] = []
    while start < end:
        width = end - start
        level = width.bit_length() - 1
        # Inside an RFC 9162 tree a subtree range starts aligned to its largest part.
        if start % (1 << level):
            raise ValueError(f"range [{start}, {end}) is not a subtree of a Merkle tree")
        nodes.append((level, start >> level))
        start += 1 << level
    return nodes


def fold(hashes: Sequence[bytes]) -> bytes:
    """Combine the hashes of the perfect parts of a range (left to right) into its root."""
    if not hashes:
        return EMPTY_ROOT
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = node_hash(left, result)
    return result


def range_hash(r: Range, nodes: Mapping[NodeId, bytes]) -> bytes:
    return fold([nodes[node] for node in perfect_nodes(*r)])


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """The subtrees whose hashes form PATH(index, D[size]), from the leaf upwards."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    path: list[Range] = []
    start, end = 0, size
    while end - start > 1:
        k = split_point(end - start)
        if index < start + k:
            path.append((start + k, end))
            end = start + k
        else:
            path.append((start, start + k))
            start += k
    path.reverse()
    return path


def consistency_ranges(first: int, second: int) -> list[Range]:
    """The subtrees whose hashes form PROOF(first, D[second]) (RFC 9162 SUBPROOF)."""
    if not 0 < first <= second:
        raise ProofError(f"no consistency proof from size {first} to size {second}")
    path: list[Range] = []
    start, end, m, complete = 0, second, first, True
    while m != end - start:
        k = split_point(end - start)
        if m <= k:
            path.append((start + k, end))
            end = start + k
        else:
            path.append((start, start + k))
            m -= k
            start += k
            complete = False
    if not complete:
        path.append((start, end))
    path.reverse()
    return path


def nodes_for(ranges: Sequence[Range]) -> set[NodeId]:
    return {node for r in ranges for node in perfect_nodes(*r)}


def root_nodes(size: int) -> list[NodeId]:
    return perfect_nodes(0, size)


def verify_inclusion(
    leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes
) -> None:
    """RFC 9162 section 2.1.3.2, step by step; raise ProofError if the proof fails."""
    if not 0 <= index < size:
        raise ProofError("the leaf index is not smaller than the tree size")
    _check_hashes([leaf, root, *path])
    fn, sn = index, size - 1
    r = leaf
    for p in path:
        if sn == 0:
            raise ProofError("the audit path is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the audit path is too short for this tree size")
    if not hmac.compare_digest(r, root):
        raise ProofError("the audit path does not lead to the root hash")


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, path: Sequence[bytes]
) -> None:
    """RFC 9162 section 2.1.4.2, step by step; raise ProofError if the proof fails."""
    if not 0 < first <= second:
        raise ProofError("consistency needs 0 < first <= second")
    _check_hashes([first_root, second_root, *path])
    if first == second:
        if path:
            raise ProofError("a proof between equal sizes is empty")
        if not hmac.compare_digest(first_root, second_root):
            raise ProofError("equal sizes with different roots")
        return
    proof = list(path)
    if first & (first - 1) == 0:  # a power of two: the first tree is a node of the second
        proof.insert(0, first_root)
    if not proof:
        raise ProofError("the consistency path is empty")
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            raise ProofError("the consistency path is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn & 1 == 0 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError("the consistency path is too short")
    if not hmac.compare_digest(fr, first_root):
        raise ProofError("the path does not lead to the first root")
    if not hmac.compare_digest(sr, second_root):
        raise ProofError("the path does not lead to the second root")


def _check_hashes(hashes: Sequence[bytes]) -> None:
    for h in hashes:
        if not isinstance(h, bytes) or len(h) != HASH_SIZE:
            raise ProofError("every hash is 32 bytes of SHA-256")


@dataclass
class CompactRange:
    """The right frontier of a tree: the perfect subtrees of its binary decomposition.

    `append` adds a leaf and returns the perfect subtrees it completed (level >= 1), which is
    what gets stored; `root` folds the frontier. Both are O(log n).
    """

    size: int = 0
    frontier: list[tuple[NodeId, bytes]] = field(default_factory=list)

    @classmethod
    def at(cls, size: int, nodes: Mapping[NodeId, bytes]) -> CompactRange:
        return cls(size, [(node, nodes[node]) for node in root_nodes(size)])

    def append(self, leaf: bytes) -> list[tuple[NodeId, bytes]]:
        completed: list[tuple[NodeId, bytes]] = []
        node, value = (0, self.size), leaf
        while self.frontier and self.frontier[-1][0][0] == node[0]:
            (level, idx), left = self.frontier.pop()
            node, value = (level + 1, idx >> 1), node_hash(left, value)
            completed.append((node, value))
        self.frontier.append((node, value))
        self.size += 1
        return completed

    def root(self) -> bytes:
        return fold([value for _, value in self.frontier])
