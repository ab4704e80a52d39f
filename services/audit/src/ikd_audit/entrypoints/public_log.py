"""The log's public face, without authentication: checkpoints, its key, proofs of hashes only.

Anyone may keep copies of the checkpoints (c2sp.org/tlog-checkpoint signed notes) and check
that each extends the last; witnesses do so and return cosignatures here. Nothing served here
names an entry: proofs carry hashes, entries stay behind `audit:read`.
"""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, Field

from ikd_audit.domain.errors import BadProofRequest, NotFound, NoTreeHead
from ikd_audit.entrypoints.api import RuntimeDep
from ikd_audit.service_layer.checkpoints import consistency_hashes, inclusion_by_hash
from ikd_audit.service_layer.services import MAX_SIZE
from ikd_shared.transparency import TreeHead

NOTE_TYPE = "text/plain; charset=utf-8"

router = APIRouter(prefix="/v1/log", tags=["public log"])


def _b64(hashes: list[bytes]) -> list[str]:
    return [base64.b64encode(h).decode() for h in hashes]


async def _note(runtime: RuntimeDep, head: TreeHead) -> PlainTextResponse:
    note, _ = await runtime.log.witnessing.cosigned(head)
    if note is None:
        raise NoTreeHead(f"the tree head of size {head.tree_size} has no checkpoint")
    return PlainTextResponse(note, media_type=NOTE_TYPE)


@router.get("/checkpoint", response_class=PlainTextResponse)
async def latest_checkpoint(runtime: RuntimeDep) -> PlainTextResponse:
    """The latest checkpoint: a C2SP signed note signed by the log, with witness cosignatures."""
    return await _note(runtime, await runtime.log.latest_tree_head())


@router.get("/checkpoints/{tree_size}", response_class=PlainTextResponse)
async def checkpoint_of_size(
    runtime: RuntimeDep, tree_size: Annotated[int, Path(ge=0, le=MAX_SIZE)]
) -> PlainTextResponse:
    """The checkpoint the log signed for this tree size, with its cosignatures."""
    async with runtime.uow() as uow:
        head = await uow.log.tree_head(tree_size)
    if head is None:
        raise NotFound(f"no checkpoint of size {tree_size}")
    return await _note(runtime, head)


@router.get("/vkey", response_class=PlainTextResponse)
async def verifier_key(runtime: RuntimeDep) -> PlainTextResponse:
    """The log's verifier key (c2sp.org/signed-note vkey); its name is the checkpoints' origin."""
    return PlainTextResponse(runtime.log.vkey + "\n", media_type=NOTE_TYPE)


@router.get("/info")
async def log_info(runtime: RuntimeDep) -> dict[str, Any]:
    """Origin, verifier key, the same key in PEM, and the witnesses this log accepts."""
    return {
        "origin": runtime.log.origin,
        "vkey": runtime.log.vkey,
        "public_key": runtime.log.public_key_pem,
        "witnesses": [w.vkey for w in runtime.log.witnessing.witnesses],
    }


@router.get("/proof/consistency")
async def public_consistency_proof(
    runtime: RuntimeDep,
    first: Annotated[int, Query(ge=0, le=MAX_SIZE)],
    second: Annotated[int, Query(ge=0, le=MAX_SIZE)],
) -> dict[str, Any]:
    """RFC 9162 consistency proof between two checkpointed sizes (base64 hashes)."""
    hashes = await consistency_hashes(runtime.uow, first, second)
    return {"first": first, "second": second, "hashes": _b64(hashes)}


@router.get("/proof/inclusion")
async def public_inclusion_proof(
    runtime: RuntimeDep,
    leaf_hash: Annotated[str, Query(min_length=44, max_length=64, description="hex or base64")],
    tree_size: Annotated[int, Query(ge=1, le=MAX_SIZE)],
) -> dict[str, Any]:
    """RFC 9162 inclusion proof of a leaf hash in the checkpoint of `tree_size`."""
    try:
        raw = (
            bytes.fromhex(leaf_hash)
            if len(leaf_hash) == 64
            else base64.b64decode(leaf_hash, validate=True)
        )
    except (ValueError, binascii.Error):
        raw = b""
    if len(raw) != 32:
        raise BadProofRequest("leaf_hash is 32 bytes in hex or base64", code="invalid_leaf_hash")
    index, hashes = await inclusion_by_hash(runtime.uow, raw, tree_size)
    return {"leaf_index": index, "tree_size": tree_size, "hashes": _b64(hashes)}


class CosignatureSubmission(BaseModel):
    tree_size: int = Field(ge=0, le=MAX_SIZE)
    signatures: str = Field(
        min_length=1,
        max_length=16 * 1024,
        description="note signature lines (c2sp.org/tlog-cosignature) over that checkpoint",
    )


@router.post("/cosignatures")
async def add_cosignatures(runtime: RuntimeDep, body: CosignatureSubmission) -> dict[str, Any]:
    """A witness returns its cosignature; kept only if it verifies with a configured witness key."""
    found = await runtime.log.witnessing.add(body.tree_size, body.signatures)
    return {"tree_size": body.tree_size, "witnesses": [c.witness for c in found]}
