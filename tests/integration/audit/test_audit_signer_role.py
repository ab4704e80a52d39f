"""The signer apart, on real PostgreSQL: only its role adds tree heads, it can do nothing else,
and the service, which never gets the key, serves checkpoints and proofs the signer made."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ikd_audit.bootstrap import AuditRuntime, SignerRuntime, bootstrap
from ikd_audit.config import AuditSettings, SignerSettings
from ikd_audit.entrypoints.app import create_app
from ikd_shared import checkpoint, transparency
from tests.support.audit import Keys, access, audit_env, make_settings, running_signer

ADD_TREE_HEAD = "SELECT add_tree_head($1, $2, $3, $4, $5, $6)"


@pytest.fixture
async def connections(audit_db: Any) -> AsyncIterator[tuple[asyncpg.Connection, ...]]:
    app = await asyncpg.connect(audit_db.app_dsn)
    signer = await asyncpg.connect(audit_db.signer_dsn)
    try:
        yield app, signer
    finally:
        await app.close()
        await signer.close()


async def test_only_the_signer_role_adds_tree_heads_and_it_may_do_nothing_else(
    runtime: AuditRuntime,
    signer: SignerRuntime,
    connections: tuple[asyncpg.Connection, asyncpg.Connection],
    keys: Keys,
    citizens: Any,
) -> None:
    app, signer_conn = connections
    await runtime.log.record([access(citizens[0]) for _ in range(3)])
    head = await runtime.log.sign_tree_head()  # signed by the signer process, on request
    assert head.tree_size == 3
    # a head the service's role would plant: refused, even one the real key signed
    forged = dataclasses.replace(head, tree_size=4)
    values = (4, head.root_hash, head.timestamp, head.key_id, head.signature, head.checkpoint)
    for sql in (
        ADD_TREE_HEAD,
        "INSERT INTO tree_head (tree_size, root_hash, signed_at, key_id, signature, checkpoint) "
        "VALUES ($1, $2, $3, $4, $5, $6)",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await app.execute(sql, *values)
    assert forged.tree_size not in [h.tree_size for h in await tree_heads(runtime)]

    # the signer's role reads the log and adds heads; it writes nothing else and reads no secret
    assert await signer_conn.fetchval("SELECT count(*) FROM log_entry") == 3
    for sql in (
        "SELECT append_log('{}'::bigint[], '{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}', "
        "'{}', '{}', '{}', '{}', '{}', '{}', '{}', '{}')",
        "INSERT INTO merkle_node VALUES (9, 0, decode(repeat('00', 32), 'hex'))",
        "UPDATE tree_head SET signed_at = now()",
        "DELETE FROM tree_head",
        "SELECT * FROM seen_credential",
        "SELECT * FROM auditor",
        "SELECT * FROM cosignature",
        "SELECT * FROM auth_throttle",
        "SELECT prune_seen_credential('1 day')",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await signer_conn.execute(sql)
    await runtime.log.record([access(citizens[1])])
    assert (await signer.signer.sign()).tree_size == 4
    assert [h.tree_size for h in await tree_heads(runtime)] == [3, 4]


async def tree_heads(runtime: AuditRuntime) -> list[transparency.TreeHead]:
    async with runtime.uow() as uow:
        return await uow.log.tree_heads()


def holds_a_private_key(value: object) -> bool:
    return any(isinstance(v, Ed25519PrivateKey) for v in vars(value).values())


async def test_the_service_runs_without_the_key_and_serves_what_the_signer_signed(
    keys: Keys, audit_db: Any, signer_settings: SignerSettings, citizens: Any
) -> None:
    settings: AuditSettings = make_settings(
        audit_env(
            keys,
            audit_db.app_dsn,
            "unused.",
            IKD_AUDIT_RUN_CONSUMER="false",
            IKD_AUDIT_PRUNE_INTERVAL_SECONDS="0",
            IKD_AUDIT_SIGNER_WAIT_SECONDS="0.5",
        )
    )
    app = create_app(settings)  # the whole service process, lifespan included
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://audit") as client,
    ):
        runtime: AuditRuntime = app.state.runtime
        assert not holds_a_private_key(runtime.log)
        assert not holds_a_private_key(runtime.log.signer)
        await runtime.log.record([access(citizens[0]) for _ in range(5)])

        # no signer running: the service cannot make a head of its own, it says so
        pending = await client.get("/v1/log/checkpoint")
        assert pending.status_code == 503, pending.text
        assert pending.json()["code"] == "tree_head_pending"

        async with running_signer(signer_settings):
            response = await client.get("/v1/log/checkpoint")
            assert response.status_code == 200, response.text
            vkey = (await client.get("/v1/log/vkey")).text
            opened = checkpoint.open_checkpoint(response.text, checkpoint.parse_vkey(vkey))
            assert opened.checkpoint.size == 5
            assert vkey.strip() == signer_settings.note_signer.verifier.vkey

            auth = {"Authorization": f"Bearer {keys.token({'audit:read'})}"}
            await runtime.log.record([access(citizens[1])])
            proof = await client.get("/v1/log/inclusion-proof?position=5", headers=auth)
            assert proof.status_code == 200, proof.text
            transparency.verify_inclusion_bundle(proof.json(), keys.tree_head.public_key())
            trail = await client.post(
                "/v1/citizen/trail", json={"credential": keys.credential(citizens[0])}
            )
            assert trail.status_code == 200, trail.text
            assert len(trail.json()["accesses"]) == 5


async def test_a_second_service_process_shares_the_one_signer(
    settings: AuditSettings, signer: SignerRuntime, citizens: Any
) -> None:
    async with bootstrap(settings) as first, bootstrap(settings) as second:
        await first.log.record([access(citizens[0]) for _ in range(2)])
        await second.log.record([access(citizens[1])])
        heads = [await first.log.sign_tree_head(), await second.log.sign_tree_head()]
    assert [h.tree_size for h in heads] == [3, 3], "one head, made by the signer for both"
    assert heads[0] == heads[1]
