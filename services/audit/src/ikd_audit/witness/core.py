"""What a witness decides, free of HTTP and storage: cosign, or refuse and say why.

A checkpoint is cosigned (c2sp.org/tlog-cosignature, Ed25519) only if the log's key signed it
for the log's origin and a consistency proof shows it extends the last checkpoint cosigned.
Refusals name a kind: a rollback (smaller than what was cosigned), a fork (same size, another
root), a bad proof, a bad signature. A fork, a rollback or a bad proof is evidence against the
log; it is kept as an alarm with both checkpoints.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from ikd_shared import checkpoint, merkle


class RefusalKind(StrEnum):
    ROLLBACK = "rollback"
    FORK = "fork"
    BAD_PROOF = "bad_proof"
    BAD_SIGNATURE = "bad_signature"
    MALFORMED = "malformed"
    STALE_OLD_SIZE = "stale_old_size"  # a client's view, not the log's fault


# Kinds that prove or strongly suggest the log misbehaved: an operator must look.
ALARMING = frozenset(
    {RefusalKind.ROLLBACK, RefusalKind.FORK, RefusalKind.BAD_PROOF, RefusalKind.BAD_SIGNATURE}
)


class Refusal(Exception):
    def __init__(self, kind: RefusalKind, detail: str, *, latest_size: int | None = None) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail
        self.latest_size = latest_size


@dataclass(frozen=True, slots=True)
class Cosigned:
    """The latest checkpoint a witness cosigned: its text and the cosignature line."""

    size: int
    root_hash: bytes
    text: str  # the checkpoint's note text (origin, size, root)
    log_line: str  # the log's signature line: with the text, the log's own statement
    line: str  # our cosignature line
    timestamp: int

    @property
    def note(self) -> str:
        return self.text + "\n" + self.log_line + self.line


def check(
    previous: Cosigned | None,
    note: str | bytes,
    old_size: int,
    proof: Sequence[bytes],
    log: checkpoint.Verifier,
    origin: str,
) -> checkpoint.SignedCheckpoint:
    """The checkpoint if it may be cosigned after `previous`; Refusal otherwise."""
    try:
        opened = checkpoint.open_checkpoint(note, log, origin=origin)
    except checkpoint.NoteError as error:
        raise Refusal(RefusalKind.BAD_SIGNATURE, str(error)) from None
    new = opened.checkpoint
    if new.size == 0 and new.root_hash != merkle.EMPTY_ROOT:
        raise Refusal(RefusalKind.MALFORMED, "an empty tree has the empty root")
    known = previous.size if previous else 0
    if previous is not None and new.size < previous.size:
        raise Refusal(
            RefusalKind.ROLLBACK,
            f"size {new.size} is smaller than the cosigned size {previous.size}",
            latest_size=known,
        )
    if old_size > new.size:
        raise Refusal(RefusalKind.MALFORMED, "the old size is larger than the checkpoint's")
    if old_size != known:
        raise Refusal(
            RefusalKind.STALE_OLD_SIZE,
            f"the last cosigned size is {known}, not {old_size}",
            latest_size=known,
        )
    if previous is None or previous.size == 0:
        if proof:
            raise Refusal(RefusalKind.BAD_PROOF, "no proof is needed from an empty tree")
        return opened
    if new.size == previous.size:
        if proof:
            raise Refusal(RefusalKind.BAD_PROOF, "no proof is needed between equal sizes")
        if not hmac.compare_digest(new.root_hash, previous.root_hash):
            raise Refusal(
                RefusalKind.FORK,
                f"two checkpoints of size {new.size} with different roots",
                latest_size=known,
            )
        return opened
    try:
        merkle.verify_consistency(
            previous.size, new.size, previous.root_hash, new.root_hash, list(proof)
        )
    except merkle.ProofError as error:
        raise Refusal(
            RefusalKind.BAD_PROOF,
            f"size {new.size} does not extend the cosigned size {previous.size}: {error}",
            latest_size=known,
        ) from None
    return opened


def cosign(signer: checkpoint.Signer, opened: checkpoint.SignedCheckpoint, now: int) -> Cosigned:
    text = opened.note.text
    line = signer.signature_line(text, now)
    new = opened.checkpoint
    return Cosigned(new.size, new.root_hash, text, opened.log_signature.signature.line, line, now)


# --- the tlog-witness add-checkpoint body --------------------------------------------------


def parse_add_checkpoint(body: str) -> tuple[int, list[bytes], str]:
    """`old N`, up to 63 base64 proof lines, a blank line, then the checkpoint note."""
    head, sep, note = body.partition("\n\n")
    if not sep:
        raise Refusal(RefusalKind.MALFORMED, "no blank line before the checkpoint")
    lines = head.split("\n")
    first = lines[0]
    if not first.startswith("old ") or not re.fullmatch(r"0|[1-9][0-9]{0,18}", first[4:]):
        raise Refusal(RefusalKind.MALFORMED, "the first line is `old <size>`")
    if len(lines) - 1 > 63:
        raise Refusal(RefusalKind.MALFORMED, "more than 63 proof lines")
    proof = []
    for line in lines[1:]:
        try:
            value = base64.b64decode(line, validate=True)
        except binascii.Error:
            raise Refusal(RefusalKind.MALFORMED, "a proof line is not base64") from None
        if len(value) != merkle.HASH_SIZE:
            raise Refusal(RefusalKind.MALFORMED, "a proof hash is 32 bytes")
        proof.append(value)
    return int(first[4:]), proof, note
