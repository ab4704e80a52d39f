"""An independent check of the log by anyone holding one of its earlier checkpoints.

A fork is proven by two checkpoints the log's key signed for the same size with different
roots; anyone holding the log's verifier key can check that proof without trusting us, the
log or its database.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field

import httpx

from ikd_shared import checkpoint, merkle


@dataclass
class CheckResult:
    ok: bool
    verdict: str  # consistent | fork | rollback | inconsistent
    detail: str
    evidence: list[str] = field(default_factory=list)  # the signed notes that prove it


def fork_proven(first: str, second: str, log: checkpoint.Verifier) -> bool:
    """Both notes signed by the log for one size, with different roots."""
    a = checkpoint.open_checkpoint(first, log).checkpoint
    b = checkpoint.open_checkpoint(second, log).checkpoint
    return a.size == b.size and a.root_hash != b.root_hash


def _evidence(opened: checkpoint.SignedCheckpoint) -> str:
    return opened.note.text + "\n" + opened.log_signature.signature.line


async def check_log(client: httpx.AsyncClient, held: str, log: checkpoint.Verifier) -> CheckResult:
    """Is the log's current tree an extension of the checkpoint `held`?"""
    mine = checkpoint.open_checkpoint(held, log)
    response = await client.get("/v1/log/checkpoint")
    response.raise_for_status()
    latest = checkpoint.open_checkpoint(response.text, log)
    n, m = mine.checkpoint.size, latest.checkpoint.size
    same_size = await client.get(f"/v1/log/checkpoints/{n}")
    if same_size.status_code == 200:
        theirs = checkpoint.open_checkpoint(same_size.text, log)
        if theirs.checkpoint.root_hash != mine.checkpoint.root_hash:
            return CheckResult(
                False,
                "fork",
                f"the log signed two different trees of size {n}",
                [_evidence(mine), _evidence(theirs)],
            )
    if m < n:
        return CheckResult(
            False,
            "rollback",
            f"the log's latest checkpoint has size {m}, smaller than the held {n}",
            [_evidence(mine), _evidence(latest)],
        )
    if m == n:
        if latest.checkpoint.root_hash != mine.checkpoint.root_hash:
            return CheckResult(
                False, "fork", f"two trees of size {n}", [_evidence(mine), _evidence(latest)]
            )
        return CheckResult(True, "consistent", f"the log is still at size {n}")
    found = await client.get("/v1/log/proof/consistency", params={"first": n, "second": m})
    hashes = (
        [base64.b64decode(h) for h in found.json()["hashes"]] if found.status_code == 200 else []
    )
    try:
        merkle.verify_consistency(
            n, m, mine.checkpoint.root_hash, latest.checkpoint.root_hash, hashes
        )
    except merkle.ProofError as error:
        return CheckResult(
            False,
            "inconsistent",
            f"the log cannot prove size {m} extends the held size {n}: {error}",
            [_evidence(mine), _evidence(latest)],
        )
    return CheckResult(True, "consistent", f"size {m} extends the held size {n}")
