"""Authenticate before anything is written: the audit API refuses requests without a valid
token (or a citizen's valid credential) with 401, writes nothing, and counts the former."""

from __future__ import annotations

from typing import Any

import asyncpg
import httpx
from prometheus_client import REGISTRY

from tests.support.audit import Keys


def unauthenticated() -> float:
    return sum(
        REGISTRY.get_sample_value("ikd_http_unauthenticated_requests_total", {"reason": r}) or 0.0
        for r in ("missing", "malformed", "unknown_key", "expired", "invalid")
    )


async def tables(db: asyncpg.Connection) -> dict[str, int]:
    names = await db.fetch(
        "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename NOT LIKE '\\_%'"
    )
    return {
        row["tablename"]: await db.fetchval(f'SELECT count(*) FROM "{row["tablename"]}"')
        for row in names
    }


async def test_no_token_no_write(client: httpx.AsyncClient, audit_db: Any, keys: Keys) -> None:
    db = await asyncpg.connect(audit_db.owner_dsn)
    try:
        before, counted = await tables(db), unauthenticated()
        calls = [
            ("GET", "/v1/entries", {}),
            ("POST", "/v1/entries/search", {"Authorization": "Bearer not-a-jwt"}),
            ("GET", "/v1/log/export", {"Authorization": "Basic dXNlcjpwYXNz"}),
            (
                "GET",
                "/v1/export.csv",
                {"Authorization": f"Bearer {keys.token({'audit:read'}, audience='ikd-gateway')}"},
            ),
        ]
        for method, path, headers in calls:
            response = await client.request(method, path, json={}, headers=headers)
            assert response.status_code == 401, (path, response.text)
        trail = await client.post("/v1/citizen/trail", json={"credential": "a.b.c"})
        assert trail.status_code == 401
        assert await tables(db) == before
        assert unauthenticated() - counted == len(calls)
    finally:
        await db.close()
