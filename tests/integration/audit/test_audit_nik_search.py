"""Searching the log by NIK, in the API and the console: the NIK only ever in a POST body."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

import httpx

from ikd_audit.bootstrap import AuditRuntime
from ikd_audit.entrypoints.console import hash_secret
from ikd_shared.events.access_v1 import Outcome
from ikd_shared.pseudonym import pseudonymize
from tests.support.audit import PSEUDONYM_KEY, Keys, access

SECRET = "right-secret-123456"


async def seed(runtime: AuditRuntime, citizens: list[Any]) -> None:
    await runtime.log.record(
        [
            access(citizens[i % 3], outcome=Outcome.DENIED if i % 4 == 0 else Outcome.SERVED)
            for i in range(30)
        ]
    )


async def test_api_searches_by_nik_only_in_a_post_body_and_pages_with_its_cursor(
    client: httpx.AsyncClient, keys: Keys, runtime: AuditRuntime, citizens: Any
) -> None:
    await seed(runtime, citizens)
    auth = {"Authorization": f"Bearer {keys.token({'audit:read'})}"}
    nik = citizens[1].nik
    pseudonym = pseudonymize(nik, PSEUDONYM_KEY)
    body: dict[str, Any] = {"nik": nik, "limit": 4}
    assert (await client.post("/v1/entries/search", json=body)).status_code == 401

    seen: list[int] = []
    pages = 0
    cursor = None
    while True:
        pages += 1
        response = await client.post(
            "/v1/entries/search", json={**body, "cursor": cursor}, headers=auth
        )
        assert response.status_code == 200, response.text
        page = response.json()
        assert page["pseudonym"] == pseudonym
        assert {item["pseudonym"] for item in page["items"]} == {pseudonym}
        assert nik not in response.text
        seen += [item["position"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(seen, reverse=True)
    assert len(set(seen)) == 10

    # The pseudonym it answers is what the GET routes (export, counts) take instead.
    # (each page the auditor read, and this export, are in the citizen's trail as look-ups)
    exported = await client.get("/v1/export.csv", params={"pseudonym": pseudonym}, headers=auth)
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert len([row for row in rows if row["channel"] != "auditor"]) == 10
    assert len([row for row in rows if row["channel"] == "auditor"]) == pages + 1
    for route in ("/v1/entries", "/v1/export.csv", "/v1/stats/agencies"):
        refused = await client.get(route, params={"nik": nik}, headers=auth)
        assert (refused.status_code, refused.json()["code"]) == (400, "nik_not_allowed_in_url")


async def sign_in(http: httpx.AsyncClient, runtime: AuditRuntime) -> str:
    """Sign an auditor in; the session's CSRF token."""
    await runtime.auditors.save("auditor-nik", hash_secret(SECRET))
    form = await http.get("/console/login")
    match = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert match is not None
    response = await http.post(
        "/console/login",
        data={"client_id": "auditor-nik", "secret": SECRET, "csrf": match.group(1)},
    )
    assert response.status_code == 303
    page = await http.get("/console/search")
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match is not None
    return match.group(1)


async def test_console_takes_the_nik_from_the_posted_form_only(
    client: httpx.AsyncClient, runtime: AuditRuntime, citizens: Any
) -> None:
    await seed(runtime, citizens)
    csrf = await sign_in(client, runtime)
    nik = citizens[2].nik
    pseudonym = pseudonymize(nik, PSEUDONYM_KEY)

    posted = await client.post("/console/search", data={"nik": nik, "csrf": csrf})
    assert posted.status_code == 303
    location = posted.headers["location"]
    assert nik not in location
    assert f"pseudonym={pseudonym}" in location
    results = await client.get(location)
    assert results.status_code == 200
    assert len(re.findall(r'class="entry-row', results.text)) == 10
    assert nik not in results.text

    refused = await client.get("/console/search", params={"nik": nik})
    assert refused.status_code == 400
    assert "nik_not_allowed_in_url" in refused.text
    assert 'class="entry-row' not in refused.text
    export = await client.get("/console/export.csv", params={"nik": nik})
    assert export.status_code == 400
    assert nik not in export.text
