"""The signer as its own process, with fakes: when its loop signs, and how the service, which
holds no key, gets a head from it (or a 503, never a head it made up)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import ValidationError

from ikd_audit.domain.errors import TreeHeadPending
from ikd_audit.domain.model import NewEntry
from ikd_audit.entrypoints.signer import ListenerLost, run_signer
from ikd_audit.service_layer.checkpoints import DEFAULT_ORIGIN, CheckpointSigner, SignerClient
from ikd_audit.service_layer.services import AuditLog
from ikd_dev.issuer import generate_issuer_key
from ikd_shared import checkpoint
from ikd_shared.auth import TokenIssuer
from tests.support.audit import (
    Keys,
    audit_env,
    make_settings,
    make_signer_settings,
    signer_env,
)
from tests.support.audit_fakes import FakeDatabase

T0 = dt.datetime(2025, 3, 1, 8, 0, tzinfo=dt.UTC)
DSN = "postgresql://nobody@127.0.0.1:1/none"


def entries(n: int) -> list[NewEntry]:
    return [
        NewEntry(
            access_id=uuid.uuid4(),
            occurred_at=T0,
            agency="bpjs-kesehatan",
            service="daftar-peserta",
            pseudonym="a" * 64,
            fields=("full_name",),
            purpose="enrolment",
            legal_basis="legal_obligation",
            channel="prefill",
            outcome="served",
            reason=None,
        )
        for _ in range(n)
    ]


class Requests:
    """The service's NOTIFYs to the signer: counted, and passed on to `wake` if given."""

    def __init__(self, wake: Callable[[], Any] | None = None) -> None:
        self.count = 0
        self.wake = wake

    async def __call__(self) -> None:
        self.count += 1
        if self.wake is not None:
            self.wake()


@pytest.fixture
def db() -> FakeDatabase:
    return FakeDatabase(now=T0)


@pytest.fixture
def key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def signer(db: FakeDatabase, key: Ed25519PrivateKey) -> CheckpointSigner:
    return CheckpointSigner(db, key, DEFAULT_ORIGIN, lambda: T0)


def service(db: FakeDatabase, client: SignerClient) -> AuditLog:
    """The audit service's log: the verifier key and the client, no private key."""
    return AuditLog(db, client, pseudonym_key=b"p" * 32, cursor_key=b"c" * 32, clock=lambda: T0)


@pytest.fixture
async def requested() -> asyncio.Event:
    return asyncio.Event()


@pytest.fixture
async def signing(
    signer: CheckpointSigner, requested: asyncio.Event
) -> AsyncIterator[asyncio.Task[None]]:
    """The signer process's loop, which signs here only when asked."""
    task = asyncio.create_task(run_signer(signer, requested, interval=3600, max_entries=10**6))
    yield task
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def eventually(check: Callable[[], Awaitable[bool]], seconds: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not await check():
        assert loop.time() < deadline, "not within the deadline"
        await asyncio.sleep(0.01)


def holds_a_private_key(value: object) -> bool:
    return any(isinstance(v, Ed25519PrivateKey) for v in vars(value).values())


async def test_the_service_asks_the_signer_and_gets_the_head_it_signed(
    db: FakeDatabase,
    key: Ed25519PrivateKey,
    signer: CheckpointSigner,
    requested: asyncio.Event,
    signing: asyncio.Task[None],
) -> None:
    requests = Requests(requested.set)
    log = service(db, SignerClient(db, signer.verifier, requests, wait=5))
    assert not holds_a_private_key(log)
    assert not holds_a_private_key(log.signer)
    await log.append(entries(3))
    head = await log.sign_tree_head()
    assert (head.tree_size, requests.count) == (3, 1)
    assert head.check_signature(key.public_key())
    opened = checkpoint.open_checkpoint(head.checkpoint or "", checkpoint.parse_vkey(log.vkey))
    assert opened.checkpoint.size == 3
    # a proof for an entry no head covers yet: the service asks again and waits
    await log.append(entries(2))
    proof = await log.inclusion_proof(4)
    assert (proof["tree_size"], requests.count) == (5, 2)
    # covered already: no request
    assert (await log.sign_tree_head()).tree_size == 5
    assert requests.count == 2


async def test_without_a_signer_the_service_answers_pending_and_signs_nothing(
    db: FakeDatabase, signer: CheckpointSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SignerClient, "REQUEST_AGAIN_SECONDS", 0.05)
    requests = Requests()
    log = service(db, SignerClient(db, signer.verifier, requests, wait=0.3))
    await log.append(entries(2))
    with pytest.raises(TreeHeadPending) as pending:
        await log.inclusion_proof(1)
    assert (pending.value.status_code, pending.value.code) == (503, "tree_head_pending")
    with pytest.raises(TreeHeadPending):
        await log.latest_tree_head()
    assert db.committed.heads == {}, "the service signed nothing itself"
    assert requests.count >= 4, "each wait asked more than once"


async def test_a_request_the_signer_missed_is_sent_again(
    db: FakeDatabase, signer: CheckpointSigner, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(SignerClient, "REQUEST_AGAIN_SECONDS", 0.05)
    answered: list[asyncio.Task[Any]] = []

    async def second_heard() -> None:
        requests.count += 1
        if requests.count == 2:  # the first NOTIFY came while the signer was reconnecting
            answered.append(asyncio.create_task(signer.sign()))

    requests = Requests()
    log = service(db, SignerClient(db, signer.verifier, second_heard, wait=5))
    await log.append(entries(4))
    assert (await log.sign_tree_head()).tree_size == 4
    assert requests.count == 2


async def test_the_loop_signs_when_due_or_when_enough_entries_wait(
    db: FakeDatabase, signer: CheckpointSigner
) -> None:
    log = service(db, SignerClient(db, signer.verifier, Requests(), wait=1))

    async def heads() -> list[int]:
        return sorted(db.committed.heads)

    await signer.sign()  # the empty log's head: a log without any counts one more unsigned
    requested = asyncio.Event()
    by_count = asyncio.create_task(run_signer(signer, requested, interval=3600, max_entries=3))
    try:
        await log.append(entries(2))
        await asyncio.sleep(0.2)
        assert await heads() == [0], "two unsigned entries, not due, not asked"
        await log.append(entries(1))
        await eventually(lambda: _equals(heads(), [0, 3]))
    finally:
        by_count.cancel()
    by_time = asyncio.create_task(run_signer(signer, requested, interval=0.05, max_entries=10**6))
    try:
        await log.append(entries(1))
        await eventually(lambda: _equals(heads(), [0, 3, 4]))
    finally:
        by_time.cancel()


async def _equals(found: Awaitable[list[int]], expected: list[int]) -> bool:
    return await found == expected


async def test_an_empty_log_gets_its_first_head_when_asked(
    db: FakeDatabase, signer: CheckpointSigner, requested: asyncio.Event, signing: Any
) -> None:
    log = service(db, SignerClient(db, signer.verifier, Requests(requested.set), wait=5))
    head = await log.latest_tree_head()
    assert (head.tree_size, sorted(db.committed.heads)) == (0, [0])


async def test_the_loop_stops_when_its_listening_connection_is_gone(
    signer: CheckpointSigner,
) -> None:
    alive = [True]
    loop = asyncio.create_task(
        run_signer(
            signer, asyncio.Event(), interval=0.01, max_entries=1, listening=lambda: alive[0]
        )
    )
    await asyncio.sleep(0.05)
    assert not loop.done()
    alive[0] = False
    with pytest.raises(ListenerLost):
        await asyncio.wait_for(loop, timeout=5)


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(
        tree_head=Ed25519PrivateKey.generate(),
        tokens=TokenIssuer(Ed25519PrivateKey.generate(), kid="t", issuer="ikd-identity"),
        dukcapil=generate_issuer_key("EdDSA"),
    )


def test_the_service_settings_have_no_place_for_the_signing_key(keys: Keys) -> None:
    # a stale variable from before the split is ignored, not kept
    env = audit_env(keys, DSN, "t.", IKD_AUDIT_TREE_HEAD_SIGNING_KEY=keys.tree_head_pem)
    settings = make_settings(env)
    revealed = json.dumps(settings.model_dump(mode="json"), default=str)
    assert "PRIVATE KEY" not in revealed
    assert not any("signing_key" in name for name in type(settings).model_fields)
    signer = make_signer_settings(signer_env(keys, DSN))
    assert settings.log_vkey == signer.note_signer.verifier.vkey == keys.log_vkey()
    assert settings.log_verifier.public_key == keys.tree_head.public_key()


def test_the_log_vkey_is_read_from_a_file_and_must_be_a_note_key(
    keys: Keys, tmp_path: Path
) -> None:
    path = tmp_path / "log.vkey"
    path.write_text(keys.log_vkey("audit.example/log") + "\n")
    settings = make_settings(audit_env(keys, DSN, "t.", IKD_AUDIT_LOG_VKEY=f"@{path}"))
    assert settings.log_verifier.name == "audit.example/log"
    cosigner = checkpoint.Signer("w.example", keys.tree_head, checkpoint.COSIGNATURE_V1)
    for bad in (cosigner.verifier.vkey, "not-a-vkey", f"@{tmp_path / 'missing'}"):
        with pytest.raises(ValidationError, match="log_vkey"):
            make_settings(audit_env(keys, DSN, "t.", IKD_AUDIT_LOG_VKEY=bad))


def test_outside_development_the_signer_refuses_a_placeholder_database_password(
    keys: Keys,
) -> None:
    env = signer_env(keys, "postgresql://ikd_audit_signer:dev-signer-password@db/ikd_audit")
    assert make_signer_settings(env).database_url.startswith("postgresql://")  # development
    with pytest.raises(ValidationError, match="IKD_SIGNER_DATABASE_URL"):
        make_signer_settings({**env, "IKD_ENVIRONMENT": "production"})
