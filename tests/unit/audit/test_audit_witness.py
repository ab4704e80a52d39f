"""The witness against a log of its own making: it cosigns extensions and alarms on the rest."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ikd_audit.witness.app import create_app
from ikd_audit.witness.config import WitnessSettings
from ikd_audit.witness.core import Refusal, RefusalKind
from ikd_audit.witness.service import ALARMS, Witness
from ikd_audit.witness.store import WitnessStore
from ikd_shared import checkpoint, merkle

ORIGIN = "log.test.example/audit"


class Log:
    """A Merkle log with the RFC 9162 proofs, signing checkpoints with its own key."""

    def __init__(self, key: Ed25519PrivateKey | None = None, prefix: bytes = b"entry") -> None:
        self.signer = checkpoint.Signer(ORIGIN, key or Ed25519PrivateKey.generate())
        self.prefix = prefix
        self.leaves: list[bytes] = []

    def append(self, n: int) -> None:
        start = len(self.leaves)
        self.leaves += [
            merkle.leaf_hash(self.prefix + str(i).encode()) for i in range(start, start + n)
        ]

    def _nodes(self) -> dict[merkle.NodeId, bytes]:
        tree = merkle.CompactRange()
        nodes = {(0, i): leaf for i, leaf in enumerate(self.leaves)}
        for leaf in self.leaves:
            nodes.update(tree.append(leaf))
        return nodes

    def root(self, size: int) -> bytes:
        return merkle.range_hash((0, size), self._nodes()) if size else merkle.EMPTY_ROOT

    def checkpoint(self, size: int | None = None) -> str:
        size = len(self.leaves) if size is None else size
        return self.signer.sign(checkpoint.Checkpoint(ORIGIN, size, self.root(size)).text())

    def proof(self, first: int, second: int) -> list[bytes]:
        if first in (0, second):
            return []
        nodes = self._nodes()
        return [merkle.range_hash(r, nodes) for r in merkle.consistency_ranges(first, second)]


@pytest.fixture
def log() -> Log:
    return Log()


@pytest.fixture
def store(tmp_path: Path) -> WitnessStore:
    return WitnessStore(tmp_path / "witness.sqlite3")


@pytest.fixture
def witness(log: Log, store: WitnessStore) -> Witness:
    signer = checkpoint.Signer("witness.test.example/w", Ed25519PrivateKey.generate(), 0x04)
    return Witness(store, signer, log.signer.verifier, ORIGIN, clock=lambda: 1_700_000_000)


def alarm_count(kind: RefusalKind) -> float:
    return ALARMS.labels(kind.value)._value.get()


def test_it_cosigns_each_checkpoint_that_extends_the_last(log: Log, witness: Witness) -> None:
    log.append(3)
    first = witness.add_checkpoint(log.checkpoint(), 0, [])
    log.append(10)
    second = witness.add_checkpoint(log.checkpoint(), 3, log.proof(3, 13))
    assert (first.size, second.size) == (3, 13)
    opened = checkpoint.open_checkpoint(
        log.checkpoint() + second.line, log.signer.verifier, [witness.signer.verifier]
    )
    (cosigned,) = opened.cosignatures
    assert cosigned.timestamp == 1_700_000_000
    # the cosignature is over the log's text exactly as c2sp.org/tlog-cosignature words it
    message = b"cosignature/v1\ntime 1700000000\n" + opened.note.text.encode()
    witness.signer.private_key.public_key().verify(cosigned.signature.signature[8:], message)
    # the same checkpoint again is cosigned again (a fresh statement), not an alarm
    assert witness.add_checkpoint(log.checkpoint(), 13, []).size == 13
    assert witness.store.alarms() == []


def test_a_rollback_is_refused_and_alarmed(log: Log, witness: Witness) -> None:
    log.append(8)
    witness.add_checkpoint(log.checkpoint(), 0, [])
    before = alarm_count(RefusalKind.ROLLBACK)
    with pytest.raises(Refusal) as refused:
        witness.add_checkpoint(log.checkpoint(5), 8, [])
    assert refused.value.kind is RefusalKind.ROLLBACK
    (alarm,) = witness.store.alarms()
    assert alarm.kind == "rollback"
    assert "\n8\n" in (alarm.cosigned or "")
    assert "\n5\n" in alarm.offered
    assert alarm_count(RefusalKind.ROLLBACK) == before + 1
    assert witness.latest().size == 8  # type: ignore[union-attr]


def test_a_fork_of_the_same_size_is_refused_with_both_checkpoints_kept(
    log: Log, witness: Witness
) -> None:
    log.append(6)
    witness.add_checkpoint(log.checkpoint(), 0, [])
    forked = Log(log.signer.private_key, prefix=b"rewritten")  # the real key, other entries
    forked.append(6)
    with pytest.raises(Refusal) as refused:
        witness.add_checkpoint(forked.checkpoint(), 6, [])
    assert refused.value.kind is RefusalKind.FORK
    (alarm,) = witness.store.alarms()
    assert alarm.kind == "fork"
    # the evidence: two notes the log's key signed for size 6 with different roots
    a = checkpoint.open_checkpoint(alarm.cosigned or "", log.signer.verifier).checkpoint
    b = checkpoint.open_checkpoint(alarm.offered, log.signer.verifier).checkpoint
    assert a.size == b.size == 6
    assert a.root_hash != b.root_hash
    # polled again, the same evidence is not recorded twice
    with pytest.raises(Refusal):
        witness.add_checkpoint(forked.checkpoint(), 6, [])
    assert len(witness.store.alarms()) == 1


@pytest.mark.parametrize("case", ["rewritten-history", "wrong-proof", "no-proof", "reversed"])
def test_a_bigger_tree_without_a_valid_consistency_proof_is_refused(
    log: Log, witness: Witness, case: str
) -> None:
    log.append(5)
    witness.add_checkpoint(log.checkpoint(), 0, [])
    if case == "rewritten-history":
        # rewrite an old entry, recompute everything, sign with the real key
        other = Log(log.signer.private_key)
        other.leaves = list(log.leaves)
        other.leaves[2] = merkle.leaf_hash(b"forged")
        other.append(7)
        note, proof = other.checkpoint(), other.proof(5, 12)
    else:
        log.append(7)
        note, proof = log.checkpoint(), log.proof(5, 12)
        if case == "wrong-proof":
            proof[0] = hashlib.sha256(b"x").digest()
        elif case == "no-proof":
            proof = []
        else:
            proof.reverse()
    with pytest.raises(Refusal) as refused:
        witness.add_checkpoint(note, 5, proof)
    assert refused.value.kind is RefusalKind.BAD_PROOF
    assert [a.kind for a in witness.store.alarms()] == ["bad_proof"]
    assert witness.latest().size == 5  # type: ignore[union-attr]


def test_a_checkpoint_the_log_did_not_sign_is_refused(log: Log, witness: Witness) -> None:
    log.append(2)
    impostor = Log()
    impostor.leaves = list(log.leaves)
    with pytest.raises(Refusal) as refused:
        witness.add_checkpoint(impostor.checkpoint(), 0, [])
    assert refused.value.kind is RefusalKind.BAD_SIGNATURE
    assert witness.latest() is None


def test_what_was_cosigned_survives_a_restart(log: Log, tmp_path: Path) -> None:
    signer = checkpoint.Signer("witness.test.example/w", Ed25519PrivateKey.generate(), 0x04)
    log.append(4)
    first = Witness(WitnessStore(tmp_path / "w.db"), signer, log.signer.verifier, ORIGIN)
    first.add_checkpoint(log.checkpoint(), 0, [])
    first.store.close()
    again = Witness(WitnessStore(tmp_path / "w.db"), signer, log.signer.verifier, ORIGIN)
    with pytest.raises(Refusal) as refused:
        again.add_checkpoint(log.checkpoint(2), 4, [])
    assert refused.value.kind is RefusalKind.ROLLBACK


# --- over HTTP: the tlog-witness protocol and the poller ------------------------------------


def settings(log: Log, tmp_path: Path) -> WitnessSettings:
    from cryptography.hazmat.primitives import serialization

    pem = (
        Ed25519PrivateKey.generate()
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    return WitnessSettings(
        name="witness.test.example/w",
        signing_key=pem,  # type: ignore[arg-type]
        log_url="http://log.test",
        log_vkey=log.signer.verifier.vkey,
        database=tmp_path / "w.db",
    )


def add_body(old: int, proof: list[bytes], note: str) -> str:
    lines = [f"old {old}", *(base64.b64encode(h).decode() for h in proof)]
    return "\n".join(lines) + "\n\n" + note


async def test_add_checkpoint_answers_as_tlog_witness_says(log: Log, tmp_path: Path) -> None:
    app = create_app(settings(log, tmp_path), poll=False)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://w") as client,
    ):
        log.append(3)
        ok = await client.post("/add-checkpoint", content=add_body(0, [], log.checkpoint()))
        assert ok.status_code == 200, ok.text
        assert ok.text.startswith("— witness.test.example/w ")
        vkey = (await client.get("/vkey")).text.strip()
        checkpoint.open_checkpoint(
            log.checkpoint() + ok.text, log.signer.verifier, [checkpoint.parse_vkey(vkey)]
        )
        log.append(2)
        stale = await client.post("/add-checkpoint", content=add_body(1, [], log.checkpoint()))
        assert (stale.status_code, stale.text) == (409, "3\n")
        assert stale.headers["content-type"].startswith("text/x.tlog.size")
        bad = await client.post(
            "/add-checkpoint", content=add_body(3, [bytes(32)], log.checkpoint())
        )
        assert bad.status_code == 422
        impostor = Log()  # the same tree, another key
        impostor.leaves = list(log.leaves)
        unsigned = await client.post(
            "/add-checkpoint", content=add_body(3, log.proof(3, 5), impostor.checkpoint())
        )
        assert unsigned.status_code == 403
        assert (await client.post("/add-checkpoint", content="old x\n\n")).status_code == 400
        good = await client.post(
            "/add-checkpoint", content=add_body(3, log.proof(3, 5), log.checkpoint())
        )
        assert good.status_code == 200
        assert "\n5\n" in (await client.get("/checkpoint")).text
        # a submitter's wrong proof is no evidence against the log: no alarm
        assert (await client.get("/v1/alarms")).json()["alarms"] == []


async def test_the_poller_fetches_checkpoint_and_proof_and_returns_the_cosignature(
    log: Log, witness: Witness
) -> None:
    posted: list[dict[str, object]] = []
    state = {"rewritten": False}

    def handler(request: httpx.Request) -> httpx.Response:
        source = log
        if state["rewritten"]:
            source = Log(log.signer.private_key, prefix=b"rewritten")
            source.append(len(log.leaves))
        if request.url.path == "/v1/log/checkpoint":
            return httpx.Response(200, text=source.checkpoint())
        if request.url.path == "/v1/log/proof/consistency":
            first, second = int(request.url.params["first"]), int(request.url.params["second"])
            hashes = [base64.b64encode(h).decode() for h in source.proof(first, second)]
            return httpx.Response(200, json={"hashes": hashes})
        if request.url.path == "/v1/log/cosignatures":
            import json

            posted.append(json.loads(request.content))
            return httpx.Response(200, json={})
        return httpx.Response(404)

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler), base_url="http://log")
    log.append(4)
    assert (await witness.poll_once(client)).size == 4
    log.append(9)
    assert (await witness.poll_once(client)).size == 13
    assert [p["tree_size"] for p in posted] == [4, 13]
    # the operator rewrites history and re-signs with the real key: the witness refuses
    state["rewritten"] = True
    log.append(1)
    with pytest.raises(Refusal) as refused:
        await witness.poll_once(client)
    assert refused.value.kind is RefusalKind.BAD_PROOF
    assert [a.kind for a in witness.store.alarms()] == ["bad_proof"]
    assert len(posted) == 2, "nothing cosigned, nothing returned"
