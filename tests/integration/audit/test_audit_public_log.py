"""The public log on real PostgreSQL: checkpoints anyone can fetch and check with Go's packages,
cosignatures kept only from configured witnesses, appends only through the log's functions,
and a signer that refuses to sign a tree it did not compute."""

from __future__ import annotations

import base64
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ikd_audit.bootstrap import AuditRuntime, SignerRuntime, bootstrap_signer
from ikd_audit.config import AuditSettings, SignerSettings
from ikd_audit.service_layer.checkpoints import IntegrityError
from ikd_shared import checkpoint, merkle
from tests.support.audit import Keys, access, audit_env, make_settings
from tests.support.interop import build_note_verify, go_binary, note_verify

ORIGIN = "audit.test.example/log"
WITNESS = checkpoint.Signer("witness.test.example/w1", Ed25519PrivateKey.generate(), 0x04)


@pytest.fixture
def origin() -> str:
    return ORIGIN


@pytest.fixture
def settings(keys: Keys, audit_db: Any) -> AuditSettings:
    return make_settings(
        audit_env(
            keys,
            audit_db.app_dsn,
            "unused.",
            origin=ORIGIN,
            IKD_AUDIT_WITNESS_KEYS=WITNESS.verifier.vkey,
        )
    )


@pytest.fixture(scope="session")
def go_checker(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if go_binary() is None:
        pytest.skip("Go is not installed: the interop check needs `go` (1.25 or later)")
    return build_note_verify(tmp_path_factory.mktemp("go"))


async def fill(runtime: AuditRuntime, citizens: list[Any], n: int) -> None:
    await runtime.log.record([access(citizens[i % len(citizens)]) for i in range(n)])
    await runtime.log.sign_tree_head()


async def public_checkpoint(client: httpx.AsyncClient, size: int | None = None) -> str:
    path = "/v1/log/checkpoint" if size is None else f"/v1/log/checkpoints/{size}"
    response = await client.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


async def cosign(client: httpx.AsyncClient, note: str) -> None:
    opened = checkpoint.parse_note(note)
    size = checkpoint.Checkpoint.parse(opened.text).size
    line = WITNESS.signature_line(opened.text, int(time.time()))
    response = await client.post(
        "/v1/log/cosignatures", json={"tree_size": size, "signatures": line}
    )
    assert response.status_code == 200, response.text
    assert response.json()["witnesses"] == [WITNESS.name]


async def test_checkpoints_key_and_proofs_are_public_and_name_no_entry(
    client: httpx.AsyncClient, runtime: AuditRuntime, citizens: Any
) -> None:
    await fill(runtime, citizens, 5)
    await fill(runtime, citizens, 6)
    vkey = (await client.get("/v1/log/vkey")).text.strip()
    info = (await client.get("/v1/log/info")).json()
    assert info["origin"] == ORIGIN
    assert info["vkey"] == vkey
    assert info["witnesses"] == [WITNESS.verifier.vkey]
    log_key = checkpoint.parse_vkey(vkey)
    assert log_key.name == ORIGIN

    latest = checkpoint.open_checkpoint(await public_checkpoint(client), log_key)
    older = checkpoint.open_checkpoint(await public_checkpoint(client, 5), log_key)
    assert (older.checkpoint.size, latest.checkpoint.size) == (5, 11)

    proof = (await client.get("/v1/log/proof/consistency?first=5&second=11")).json()
    merkle.verify_consistency(
        5,
        11,
        older.checkpoint.root_hash,
        latest.checkpoint.root_hash,
        [base64.b64decode(h) for h in proof["hashes"]],
    )
    entry = await runtime.log.entry(3)
    for encoded in (entry.leaf_hash().hex(), base64.b64encode(entry.leaf_hash()).decode()):
        response = await client.get(
            "/v1/log/proof/inclusion", params={"leaf_hash": encoded, "tree_size": 11}
        )
        assert response.status_code == 200, response.text
        found = response.json()
        assert set(found) == {"leaf_index", "tree_size", "hashes"}, "hashes only, no entry"
        merkle.verify_inclusion(
            entry.leaf_hash(),
            found["leaf_index"],
            11,
            [base64.b64decode(h) for h in found["hashes"]],
            latest.checkpoint.root_hash,
        )
    # entries themselves stay behind audit:read
    assert (await client.get("/v1/entries/3")).status_code == 401
    for bad in (
        "/v1/log/proof/consistency?first=5&second=7",  # no checkpoint of size 7
        "/v1/log/proof/inclusion?tree_size=11&leaf_hash=" + "0" * 64,
        "/v1/log/checkpoints/7",
    ):
        assert (await client.get(bad)).status_code in (400, 404), bad


async def test_go_sumdb_note_verifies_the_public_checkpoint_and_its_cosignature(
    client: httpx.AsyncClient,
    runtime: AuditRuntime,
    citizens: Any,
    go_checker: Path,
    tmp_path: Path,
) -> None:
    await fill(runtime, citizens, 7)
    first = await public_checkpoint(client)
    await cosign(client, first)
    cosigned = await public_checkpoint(client)
    assert cosigned.startswith(first), "the cosignature is appended to the log's note"
    vkey = (await client.get("/v1/log/vkey")).text.strip()

    verdict = note_verify(go_checker, cosigned, vkey, [WITNESS.verifier.vkey])
    assert verdict.ok, verdict.error
    root = checkpoint.Checkpoint.parse(checkpoint.parse_note(first).text).root_hash
    assert verdict.lines[0] == f"checkpoint {ORIGIN} 7 {base64.b64encode(root).decode()}"
    assert verdict.lines[1].startswith(f"cosigned {WITNESS.name} ")

    # and Go checks that the next checkpoint extends it, with the public consistency proof
    await fill(runtime, citizens, 9)
    second = await public_checkpoint(client)
    proof = (await client.get("/v1/log/proof/consistency?first=7&second=16")).json()
    (tmp_path / "old").write_text(first)
    (tmp_path / "proof").write_text("\n".join(proof["hashes"]) + "\n")
    verdict = note_verify(go_checker, second, vkey, old=tmp_path / "old", proof=tmp_path / "proof")
    assert verdict.ok, verdict.error
    assert verdict.lines[-1] == "consistent 7 16"

    # Go refuses what it must: a changed root, another key, a proof that does not fit
    forged = second.replace(second.split("\n")[2], base64.b64encode(bytes(32)).decode())
    assert not note_verify(go_checker, forged, vkey).ok
    other = checkpoint.Signer(ORIGIN, Ed25519PrivateKey.generate()).verifier.vkey
    assert not note_verify(go_checker, second, other).ok
    (tmp_path / "proof").write_text("\n".join(reversed(proof["hashes"])) + "\n")
    bad = note_verify(go_checker, second, vkey, old=tmp_path / "old", proof=tmp_path / "proof")
    assert not bad.ok
    assert "does not extend" in bad.error


async def test_cosignatures_are_kept_only_from_configured_witnesses(
    client: httpx.AsyncClient, runtime: AuditRuntime, citizens: Any
) -> None:
    await fill(runtime, citizens, 3)
    text = checkpoint.parse_note(await public_checkpoint(client)).text
    stranger = checkpoint.Signer(WITNESS.name, Ed25519PrivateKey.generate(), 0x04)
    for signatures in (
        stranger.signature_line(text, int(time.time())),  # same name, unknown key
        WITNESS.signature_line(text.replace("\n3\n", "\n4\n"), int(time.time())),  # other text
        WITNESS.signature_line(text, int(time.time()) + 86400),  # from the future
        "— not a signature\n",
    ):
        response = await client.post(
            "/v1/log/cosignatures", json={"tree_size": 3, "signatures": signatures}
        )
        assert response.status_code in (400, 403), (signatures, response.text)
    assert "witness.test.example" not in await public_checkpoint(client)
    response = await client.post(
        "/v1/log/cosignatures",
        json={"tree_size": 99, "signatures": WITNESS.signature_line(text, 1)},
    )
    assert response.status_code == 404


@pytest.fixture
async def app_conn(audit_db: Any) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(audit_db.app_dsn)
    try:
        yield conn
    finally:
        await conn.close()


async def test_the_runtime_role_appends_only_through_the_log_functions(
    runtime: AuditRuntime, citizens: Any, app_conn: asyncpg.Connection
) -> None:
    await fill(runtime, citizens, 4)
    for sql in (
        "INSERT INTO log_entry SELECT 4, gen_random_uuid(), occurred_at, recorded_at, agency, "
        "service, pseudonym, fields, purpose, legal_basis, channel, outcome, reason, leaf_hash "
        "FROM log_entry WHERE position = 0",
        "INSERT INTO merkle_node VALUES (5, 0, decode(repeat('00', 32), 'hex'))",
        "INSERT INTO tree_head VALUES (99, decode(repeat('00', 32), 'hex'), now(), 'k', '\\x00')",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await app_conn.execute(sql)

    async def append(positions: list[int], nodes: list[tuple[int, int]]) -> Any:
        n = len(positions)
        return await app_conn.fetchval(
            "SELECT append_log($1::bigint[], $2::uuid[], $3::timestamptz[], $4::timestamptz[],"
            " $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],"
            " $11::text[], $12::text[], $13::text[], $14::bytea[], $15::smallint[],"
            " $16::bigint[], $17::bytea[])",
            positions,
            [access(citizens[0]).access_id for _ in range(n)],
            *([[entry.occurred_at] * n] * 2),
            ["a"] * n,
            [None] * n,
            [None] * n,
            ["[]"] * n,
            [None] * n,
            [None] * n,
            ["prefill"] * n,
            ["served"] * n,
            [None] * n,
            [bytes(32)] * n,
            [level for level, _ in nodes],
            [idx for _, idx in nodes],
            [bytes(32) for _ in nodes],
        )

    entry = await runtime.log.entry(0)
    with pytest.raises(asyncpg.CheckViolationError, match="continue the log at position 4"):
        await append([5], [])  # a gap
    with pytest.raises(asyncpg.CheckViolationError, match="continue the log"):
        await append([3], [])  # an old position
    with pytest.raises(asyncpg.CheckViolationError, match="outside the appended"):
        await append([4], [(3, 0)])  # a node over leaves 0..7, not completed by leaf 4
    with pytest.raises(asyncpg.UniqueViolationError):
        await append([4, 5], [(1, 2), (1, 2)])
    assert await append([4, 5], [(1, 2)]) == 2


async def test_the_signer_refuses_a_stored_tree_it_did_not_compute(
    runtime: AuditRuntime,
    signer: SignerRuntime,
    signer_settings: SignerSettings,
    audit_db: Any,
    citizens: Any,
) -> None:
    await fill(runtime, citizens, 6)
    await runtime.log.record([access(citizens[0]) for _ in range(3)])
    superuser = await asyncpg.connect(audit_db.superuser_dsn)
    try:
        await superuser.execute("ALTER TABLE merkle_node DISABLE TRIGGER USER")
        # node (3, 0) covers leaves 0..7, completed after the last signed head (size 6)
        await superuser.execute(
            "UPDATE merkle_node SET hash = decode(repeat('ab', 32), 'hex') "
            "WHERE level = 3 AND idx = 0"
        )
    finally:
        await superuser.close()
    with pytest.raises(IntegrityError, match="does not match its entries"):
        await signer.signer.sign()

    # a signer starting afresh checks the stored frontier against the head its key signed
    superuser = await asyncpg.connect(audit_db.superuser_dsn)
    try:
        await superuser.execute(
            "UPDATE merkle_node SET hash = decode(repeat('cd', 32), 'hex') "
            "WHERE level = 2 AND idx = 0"
        )
    finally:
        await superuser.close()
    async with bootstrap_signer(signer_settings) as fresh:
        with pytest.raises(IntegrityError, match="does not fold to the signed root of size 6"):
            await fresh.signer.sign()
    async with runtime.uow() as uow:
        assert (await uow.log.latest_tree_head()).tree_size == 6, "nothing was signed"
