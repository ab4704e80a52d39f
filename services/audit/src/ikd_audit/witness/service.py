"""The witness at work: takes checkpoints (polled from the log or submitted), cosigns or alarms.

A refusal that implicates the log (rollback, fork, bad proof or signature) is logged at error
level, counted in ikd_witness_alarms_total and kept with its evidence in the witness's file.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections.abc import Callable, Sequence

import httpx
from prometheus_client import Counter, Gauge

from ikd_audit.witness.core import (
    ALARMING,
    Cosigned,
    Refusal,
    RefusalKind,
    check,
    cosign,
)
from ikd_audit.witness.store import WitnessStore
from ikd_shared import checkpoint

log = logging.getLogger("ikd_audit.witness")

ALARMS = Counter(
    "ikd_witness_alarms_total", "Checkpoints refused as evidence against the log", ["kind"]
)
ALARMS_RECORDED = Gauge("ikd_witness_alarms_recorded", "Alarms recorded in the witness's file")
COSIGNED_SIZE = Gauge(
    "ikd_witness_cosigned_tree_size", "Tree size of the latest cosigned checkpoint"
)
POLLS = Counter("ikd_witness_polls_total", "Polls of the log's checkpoint", ["result"])


class Witness:
    def __init__(
        self,
        store: WitnessStore,
        signer: checkpoint.Signer,
        log_verifier: checkpoint.Verifier,
        origin: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if signer.signature_type != checkpoint.COSIGNATURE_V1:
            raise ValueError("a witness cosigns with a cosignature/v1 key")
        self.store = store
        self.signer = signer
        self.log_verifier = log_verifier
        self.origin = origin
        self.clock = clock
        ALARMS_RECORDED.set(len(store.alarms()))
        latest = store.latest(origin)
        COSIGNED_SIZE.set(latest.size if latest else 0)

    @property
    def vkey(self) -> str:
        return self.signer.verifier.vkey

    def latest(self) -> Cosigned | None:
        return self.store.latest(self.origin)

    def add_checkpoint(
        self, note: str, old_size: int, proof: Sequence[bytes], *, from_log: bool = True
    ) -> Cosigned:
        """Cosign `note` if it extends the latest cosigned checkpoint; Refusal otherwise.

        What the log itself served is evidence; a submission from anyone is evidence only of a
        fork (two notes the log signed), since an old checkpoint or a wrong proof may be the
        submitter's own.
        """

        def decide(previous: Cosigned | None) -> Cosigned:
            opened = check(previous, note, old_size, proof, self.log_verifier, self.origin)
            return cosign(self.signer, opened, int(self.clock()))

        try:
            cosigned = self.store.advance(self.origin, decide)
        except Refusal as refusal:
            if refusal.kind in ALARMING and (from_log or refusal.kind is RefusalKind.FORK):
                self._alarm(refusal, note, proof)
            raise
        COSIGNED_SIZE.set(cosigned.size)
        log.info(
            "checkpoint cosigned",
            extra={"fields": {"origin": self.origin, "tree_size": cosigned.size}},
        )
        return cosigned

    def _alarm(self, refusal: Refusal, note: str, proof: Sequence[bytes]) -> None:
        previous = self.latest()
        offered = note
        try:  # keep the log's own note as evidence, without others' cosignatures
            opened = checkpoint.open_checkpoint(note, self.log_verifier, origin=self.origin)
            offered = opened.note.text + "\n" + opened.log_signature.signature.line
        except checkpoint.NoteError:
            pass
        recorded = self.store.add_alarm(
            self.origin,
            refusal.kind.value,
            refusal.detail,
            previous.note if previous else None,
            offered,
            "\n".join(base64.b64encode(h).decode() for h in proof),
        )
        if recorded:
            ALARMS.labels(refusal.kind.value).inc()
            ALARMS_RECORDED.set(len(self.store.alarms()))
            log.error(
                "the log's checkpoint was refused: %s",
                refusal.detail,
                extra={
                    "fields": {
                        "origin": self.origin,
                        "kind": refusal.kind.value,
                        "cosigned_size": previous.size if previous else 0,
                    }
                },
            )

    async def poll_once(self, client: httpx.AsyncClient, *, post_back: bool = True) -> Cosigned:
        """Fetch the log's checkpoint and the proof from what we cosigned; cosign or refuse."""
        response = await client.get("/v1/log/checkpoint")
        response.raise_for_status()
        note = response.text
        previous = self.latest()
        old = previous.size if previous else 0
        proof: list[bytes] = []
        try:
            size = checkpoint.Checkpoint.parse(checkpoint.parse_note(note).text).size
        except checkpoint.NoteError:
            size = old  # check() refuses it and says why
        if 0 < old < size:
            found = await client.get(
                "/v1/log/proof/consistency", params={"first": old, "second": size}
            )
            if found.status_code == 400 and previous is not None:
                # the log no longer knows the checkpoint we cosigned: it cannot prove it
                # extends it
                found_proof: list[str] = []
            else:
                found.raise_for_status()
                found_proof = found.json()["hashes"]
            proof = [base64.b64decode(h) for h in found_proof]
        cosigned = await asyncio.to_thread(self.add_checkpoint, note, old, proof)
        if post_back:
            posted = await client.post(
                "/v1/log/cosignatures",
                json={"tree_size": cosigned.size, "signatures": cosigned.line},
            )
            if posted.status_code != 200:
                log.warning(
                    "the log did not take the cosignature",
                    extra={"fields": {"status": posted.status_code, "tree_size": cosigned.size}},
                )
        return cosigned

    async def run(self, client: httpx.AsyncClient, interval: float, *, post_back: bool) -> None:
        while True:
            try:
                await self.poll_once(client, post_back=post_back)
                POLLS.labels("cosigned").inc()
            except asyncio.CancelledError:
                raise
            except Refusal as refusal:
                POLLS.labels(refusal.kind.value).inc()
            except (httpx.HTTPError, ValueError, KeyError) as error:
                POLLS.labels("unreachable").inc()
                log.warning("polling the log failed: %s", error)
            await asyncio.sleep(interval)


def refusal_status(refusal: Refusal) -> int:
    """The HTTP status c2sp.org/tlog-witness gives each refusal of add-checkpoint."""
    return {
        RefusalKind.BAD_SIGNATURE: 403,
        RefusalKind.STALE_OLD_SIZE: 409,
        RefusalKind.ROLLBACK: 409,
        RefusalKind.MALFORMED: 400,
    }.get(refusal.kind, 422)
