"""Auditor API and citizen trail over HTTP (in process, real PostgreSQL)."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from typing import Any

import httpx
import pytest

from ikd_audit.bootstrap import AuditRuntime
from ikd_audit.domain.errors import AuditError
from ikd_audit.entrypoints.console import hash_secret
from ikd_dev.issuer import generate_issuer_key
from ikd_shared import transparency
from ikd_shared.credentials import DEFAULT_AUDIENCES, Purpose
from ikd_shared.events.access_v1 import Channel, Outcome
from ikd_shared.pseudonym import pseudonymize
from tests.support.audit import PSEUDONYM_KEY, Keys, access


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def seed(runtime: AuditRuntime, citizens: list[Any]) -> None:
    events = [
        access(
            citizens[i % 3],
            agency=("bpjs-kesehatan", "dukcapil")[i % 2],
            outcome=Outcome.DENIED if i % 5 == 0 else Outcome.SERVED,
            channel=Channel.PREFILL if i % 3 else Channel.WEBHOOK,
        )
        for i in range(30)
    ]
    await runtime.log.record(events)
    await runtime.log.sign_tree_head()


async def test_auditor_routes_reject_everyone_else(client: httpx.AsyncClient, keys: Keys) -> None:
    routes = [
        "/v1/entries",
        "/v1/entries/0",
        "/v1/export.csv",
        "/v1/stats/agencies",
        "/v1/log/tree-head",
        "/v1/log/export",
        "/v1/log/public-key",
        "/v1/log/inclusion-proof?position=0",
        "/v1/log/consistency-proof?first=1&second=1",
    ]
    wrong_scope = keys.token({"gateway:prefill"})
    wrong_audience = keys.token({"audit:read"}, audience="ikd-identity")
    for route in routes:
        response = await client.get(route)
        assert response.status_code == 401, route
        assert response.json()["code"] == "missing_token"
        response = await client.get(route, headers=bearer("not.a.jwt"))
        assert response.status_code == 401, route
        response = await client.get(route, headers=bearer(wrong_audience))
        assert response.status_code == 401, route
        response = await client.get(route, headers=bearer(wrong_scope))
        assert response.status_code == 403, route
        assert response.json()["code"] == "insufficient_scope"
    # A console page without a session goes to the sign-in form, never shows data.
    response = await client.get("/console/search")
    assert response.status_code == 303
    assert response.headers["location"] == "/console/login"


async def test_search_filters_pagination_export_and_counts(
    client: httpx.AsyncClient, keys: Keys, runtime: AuditRuntime, citizens: Any
) -> None:
    await seed(runtime, citizens)
    auth = bearer(keys.token({"audit:read"}))
    seen: list[int] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"agency": "dukcapil", "limit": 4}
        if cursor:
            params["cursor"] = cursor
        page = (await client.get("/v1/entries", params=params, headers=auth)).json()
        seen += [item["position"] for item in page["items"]]
        assert all(item["agency"] == "dukcapil" for item in page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(seen, reverse=True)
    assert len(seen) == len(set(seen)) == 15

    by_nik = (
        await client.post(
            "/v1/entries/search", json={"nik": citizens[1].nik, "limit": 100}, headers=auth
        )
    ).json()
    pseudonym = pseudonymize(citizens[1].nik, PSEUDONYM_KEY)
    assert by_nik["pseudonym"] == pseudonym
    assert len(by_nik["items"]) == 10
    assert {item["pseudonym"] for item in by_nik["items"]} == {pseudonym}
    assert citizens[1].nik not in str(by_nik)

    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    empty = await client.get("/v1/entries", params={"from": later}, headers=auth)
    assert empty.json()["items"] == []

    bad = {
        "nik_not_allowed_in_url": {"nik": citizens[1].nik},
        "invalid_pseudonym": {"pseudonym": "zz"},
        "invalid_channel": {"channel": "fax"},
        "invalid_time": {"from": "last tuesday"},
        "invalid_time_range": {"from": "2025-02-01T00:00:00Z", "to": "2025-01-01T00:00:00Z"},
        "page_size_too_large": {"limit": 101},
        "invalid_cursor": {"cursor": "garbage"},
    }
    for code, params in bad.items():
        response = await client.get("/v1/entries", params=params, headers=auth)
        assert response.status_code == 400, (code, response.text)
        assert response.json()["code"] == code
    for code, body in {
        "invalid_nik_length": {"nik": "123"},
        "conflicting_filters": {"nik": citizens[1].nik, "pseudonym": "a" * 64},
        "page_size_too_large": {"nik": citizens[1].nik, "limit": 101},
    }.items():
        response = await client.post("/v1/entries/search", json=body, headers=auth)
        assert (response.status_code, response.json()["code"]) == (400, code), response.text
    first = (await client.get("/v1/entries", params={"limit": 2}, headers=auth)).json()
    mismatch = await client.get(
        "/v1/entries", params={"cursor": first["next_cursor"], "agency": "dukcapil"}, headers=auth
    )
    assert mismatch.json()["code"] == "cursor_filter_mismatch"

    exported = await client.get("/v1/export.csv", params={"outcome": "denied"}, headers=auth)
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert exported.headers["content-type"].startswith("text/csv")
    assert len(rows) == 6
    assert {row["outcome"] for row in rows} == {"denied"}

    counts = (await client.get("/v1/stats/agencies", headers=auth)).json()["agencies"]
    assert counts == [
        # the search by NIK above: an auditor's look-up is in the log too
        {"agency": "auditor:auditor-1", "accesses": 1, "denials": 0},
        {"agency": "bpjs-kesehatan", "accesses": 15, "denials": 3},
        {"agency": "dukcapil", "accesses": 15, "denials": 3},
    ]

    proof = (await client.get("/v1/entries/7", headers=auth)).json()
    transparency.verify_inclusion_bundle(proof, runtime.log.public_key)


async def test_citizen_trail_holds_only_that_citizens_entries_with_proofs(
    client: httpx.AsyncClient, keys: Keys, runtime: AuditRuntime, citizens: Any
) -> None:
    await seed(runtime, citizens)
    mine = pseudonymize(citizens[0].nik, PSEUDONYM_KEY)
    response = await client.post(
        "/v1/citizen/trail", json={"credential": keys.credential(citizens[0])}
    )
    assert response.status_code == 200, response.text
    trail = response.json()
    assert trail["pseudonym"] == mine
    assert len(trail["accesses"]) == 10
    for item in trail["accesses"]:
        assert item["entry"]["pseudonym"] == mine
        assert item["tree_size"] == trail["tree_head"]["tree_size"]
        transparency.verify_inclusion_bundle(item, runtime.log.public_key)

    other = await client.post(
        "/v1/citizen/trail", json={"credential": keys.credential(citizens[2])}
    )
    assert {i["entry"]["pseudonym"] for i in other.json()["accesses"]} == {
        pseudonymize(citizens[2].nik, PSEUDONYM_KEY)
    }


@pytest.mark.parametrize(
    "case",
    [
        "replayed",
        "expired",
        "stale",
        "forged",
        "garbage",
        "for a counter",
        "for a consent",
        "for every purpose",
    ],
)
async def test_citizen_trail_refuses_bad_credentials(
    client: httpx.AsyncClient, keys: Keys, citizens: Any, case: str
) -> None:
    now = dt.datetime.now(dt.UTC)
    if case == "replayed":
        credential = keys.credential(citizens[0])
        first = await client.post("/v1/citizen/trail", json={"credential": credential})
        assert first.status_code == 200
        expected = "credential_replayed"
    elif case == "expired":
        credential = keys.credential(
            citizens[0], issued_at=now - dt.timedelta(hours=2), lifetime=dt.timedelta(minutes=10)
        )
        expected = "credential_expired"
    elif case == "stale":
        credential = keys.credential(
            citizens[0], issued_at=now - dt.timedelta(hours=1), lifetime=dt.timedelta(hours=3)
        )
        expected = "credential_not_fresh"
    elif case in ("for a counter", "for a consent"):
        # A credential shown for another purpose never opens the trail, used there or not.
        purpose = Purpose.VERIFICATION if case == "for a counter" else Purpose.CONSENT
        credential = keys.credential(citizens[0], purpose)
        expected = "wrong_audience"
    elif case == "for every purpose":
        credential = keys.credential(citizens[0], audience=[DEFAULT_AUDIENCES[p] for p in Purpose])
        expected = "wrong_audience"
    elif case == "forged":
        impostor = Keys(keys.tree_head, keys.tokens, generate_issuer_key("EdDSA"))
        credential = impostor.credential(citizens[0])  # right kid, wrong key
        expected = "bad_signature"
    else:
        credential = "not-a-credential"
        expected = "malformed_credential"
    response = await client.post("/v1/citizen/trail", json={"credential": credential})
    assert response.status_code == 401
    assert response.json()["code"] == expected


async def test_positions_and_sizes_beyond_bigint_are_4xx_not_5xx(
    client: httpx.AsyncClient, keys: Keys, runtime: AuditRuntime
) -> None:
    # once a 500: the value reached PostgreSQL and overflowed its bigint parameter
    huge = 2**63
    auth = {"Authorization": f"Bearer {keys.token({'audit:read'})}"}
    for route in [
        f"/v1/entries/{huge}",
        f"/v1/log/inclusion-proof?position={huge}",
        f"/v1/log/inclusion-proof?position=0&tree_size={huge}",
        f"/v1/log/consistency-proof?first=1&second={huge}",
    ]:
        response = await client.get(route, headers=auth)
        assert 400 <= response.status_code < 500, (route, response.text)
    for call, error in [
        (runtime.log.inclusion_proof(huge), "not_found"),
        (runtime.log.inclusion_proof(0, huge + 1), "unknown_tree_size"),
        (runtime.log.consistency_proof(huge, huge + 1), "invalid_sizes"),
    ]:
        with pytest.raises(AuditError) as raised:
            await call
        assert raised.value.code == error
    await runtime.auditors.save("auditor-9", hash_secret("right-secret-123456"))
    form = await client.get("/console/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert csrf is not None
    data = {"client_id": "auditor-9", "secret": "right-secret-123456", "csrf": csrf.group(1)}
    assert (await client.post("/console/login", data=data)).status_code == 303
    assert (await client.get(f"/console/entries/{huge}")).status_code == 404
