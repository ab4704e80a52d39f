"""Authenticate before anything is written: every bearer-protected operation of identity
refuses a request without a valid token with 401, writes nothing, and counts it."""

from __future__ import annotations

import re
from typing import Any

import asyncpg
from prometheus_client import REGISTRY

from tests.integration.identity.conftest import Api
from tests.support.identity import DevIssuer, counts, person


def unauthenticated() -> float:
    return sum(
        REGISTRY.get_sample_value("ikd_http_unauthenticated_requests_total", {"reason": r}) or 0.0
        for r in ("missing", "malformed", "unknown_key", "expired", "invalid")
    )


async def test_protected_operations_refuse_without_a_token_and_write_nothing(
    api: Api, db: asyncpg.Connection, issuer: DevIssuer
) -> None:
    document = api.app.openapi()
    protected = [
        (method.upper(), re.sub(r"\{[^}]+\}", "00000000-0000-0000-0000-000000000000", path))
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if operation.get("security")
    ]
    assert ("POST", "/v1/verifications") in protected
    # A body that would be accepted with a token: a valid credential of a citizen.
    body: dict[str, Any] = {"credential": issuer.mint(person(3))}
    before, counted = await counts(db), unauthenticated()
    for headers in ({}, {"Authorization": "Bearer not-a-jwt"}):
        for method, path in protected:
            response = await api.client.request(method, path, json=body, headers=headers)
            assert response.status_code == 401, (method, path, response.text)
    assert await counts(db) == before
    assert unauthenticated() - counted == 2 * len(protected)
