"""Auditors are audited: a query naming a citizen lands in the log and in the citizen's trail,
and the trail says which witnesses cosigned the checkpoint its proofs refer to."""

from __future__ import annotations

import time
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ikd_audit.bootstrap import AuditRuntime
from ikd_shared import checkpoint, transparency
from ikd_shared.pseudonym import pseudonymize
from tests.support.audit import PSEUDONYM_KEY, Keys, access


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def trail(client: httpx.AsyncClient, keys: Keys, citizen: Any) -> dict[str, Any]:
    response = await client.post("/v1/citizen/trail", json={"credential": keys.credential(citizen)})
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def test_an_auditors_lookups_of_a_citizen_appear_in_that_citizens_trail(
    client: httpx.AsyncClient, keys: Keys, runtime: AuditRuntime, citizens: Any
) -> None:
    alice, bob = citizens[0], citizens[1]
    await runtime.log.record([access(alice), access(bob), access(alice)])
    await runtime.log.sign_tree_head()
    before = await trail(client, keys, alice)
    assert [a["entry"]["channel"] for a in before["accesses"]] == ["prefill", "prefill"]

    auth = bearer(keys.token({"audit:read"}))  # the token's client is auditor-1
    mine = pseudonymize(alice.nik, PSEUDONYM_KEY)
    assert (await client.get("/v1/entries", params={"pseudonym": mine}, headers=auth)).is_success
    assert (await client.get("/v1/entries/2", headers=auth)).is_success
    assert (await client.get("/v1/export.csv", params={"pseudonym": mine}, headers=auth)).is_success
    # queries naming no citizen, or another one, are not in her trail
    assert (await client.get("/v1/entries", params={"agency": "dukcapil"}, headers=auth)).is_success
    assert (await client.get("/v1/entries/1", headers=auth)).is_success

    after = await trail(client, keys, alice)
    lookups = [a["entry"] for a in after["accesses"] if a["entry"]["channel"] == "auditor"]
    assert [(e["agency"], e["purpose"]) for e in lookups] == [
        ("auditor:auditor-1", "search"),
        ("auditor:auditor-1", "entry"),
        ("auditor:auditor-1", "export"),
    ]
    assert all(e["pseudonym"] == mine and e["fields"] == [] for e in lookups)
    for item in after["accesses"]:  # each with its proof, like every other access
        transparency.verify_inclusion_bundle(item, runtime.log.public_key)
    bobs = await trail(client, keys, bob)
    assert [a["entry"]["agency"] for a in bobs["accesses"]] == [
        "bpjs-kesehatan",
        "auditor:auditor-1",
    ]


async def test_the_trail_names_the_witnesses_of_its_checkpoint(
    client: httpx.AsyncClient, keys: Keys, runtime: AuditRuntime, citizens: Any
) -> None:
    await runtime.log.record([access(citizens[0]) for _ in range(3)])
    head = await runtime.log.sign_tree_head()
    unwitnessed = await trail(client, keys, citizens[0])
    assert unwitnessed["witnesses"] == []
    log_key = checkpoint.parse_vkey(unwitnessed["log_vkey"])
    assert checkpoint.open_checkpoint(unwitnessed["checkpoint"], log_key).checkpoint.size == 3

    # a witness the log trusts cosigns size 3 (configured in this runtime below)
    witness = checkpoint.Signer("witness.test.example/t", Ed25519PrivateKey.generate(), 0x04)
    runtime.log.witnessing.witnesses.append(witness.verifier)
    text = checkpoint.parse_note(head.checkpoint or "").text
    added = await runtime.log.witnessing.add(3, witness.signature_line(text, int(time.time())))
    assert [c.witness for c in added] == ["witness.test.example/t"]
    # more entries and a newer, uncosigned head: her proofs still refer to the cosigned one
    await runtime.log.record([access(citizens[1])])
    await runtime.log.sign_tree_head()
    witnessed = await trail(client, keys, citizens[0])
    assert witnessed["tree_head"]["tree_size"] == 3
    assert [w["name"] for w in witnessed["witnesses"]] == ["witness.test.example/t"]
    opened = checkpoint.open_checkpoint(witnessed["checkpoint"], log_key, [witness.verifier])
    assert [c.verifier.name for c in opened.cosignatures] == ["witness.test.example/t"]
    for item in witnessed["accesses"]:
        assert item["tree_size"] == 3
        transparency.verify_inclusion_bundle(item, runtime.log.public_key)
