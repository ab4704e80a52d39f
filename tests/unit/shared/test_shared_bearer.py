"""The bearer dependency factory: the service's own errors, the 401 header, the hooks, and the
metric of unauthenticated requests."""

# No `from __future__ import annotations`: FastAPI resolves string annotations in module
# globals, and the routes below use aliases local to make_app.
from typing import Annotated

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import Depends, FastAPI, Request
from prometheus_client import REGISTRY

from ikd_shared.api import ApiError, install_error_handlers
from ikd_shared.auth import Principal, Scope, TokenIssuer, TokenVerifier
from ikd_shared.bearer import Bearer


class Unauthenticated(ApiError):
    status_code = 401
    code = "unauthenticated"


class Forbidden(ApiError):
    status_code = 403
    code = "insufficient_scope"


class WrongAgency(Forbidden):
    code = "wrong_agency"


def make_app(missing_code: str = "missing_token") -> tuple[FastAPI, TokenIssuer, list[str]]:
    issuer = TokenIssuer(Ed25519PrivateKey.generate(), kid="k1", issuer="https://issuer.test")
    verifier = TokenVerifier(issuer.jwks(), issuer="https://issuer.test", audience="api")
    refused: list[str] = []

    def admit(_: Request, principal: Principal) -> ApiError | None:
        return WrongAgency("not ours") if principal.agency == "other" else None

    async def on_refused(request: Request, caller: Principal, error: ApiError) -> None:
        refused.append(f"{request.url.path}:{caller.client_id}:{error.code}")

    async def guard(request: Request, caller: Principal) -> None:
        refused.append(f"{request.url.path}:{caller.client_id}:guarded")
        if caller.client_id == "blocked":
            raise Forbidden("blocked", code="blocked")

    bearer: Bearer[ApiError] = Bearer(
        lambda _: verifier,
        unauthenticated=Unauthenticated,
        forbidden=Forbidden,
        missing_code=missing_code,
        admit=admit,
    )
    Reader = Annotated[Principal, Depends(bearer.require(Scope.AUDIT_READ))]
    Audited = Annotated[
        Principal, Depends(bearer.require(Scope.PREFILL, guard=guard, on_refused=on_refused))
    ]
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/read")
    async def read(caller: Reader) -> dict[str, str]:
        return {"client": caller.client_id}

    @app.get("/audited")
    async def audited(caller: Audited) -> dict[str, str]:
        return {"client": caller.client_id}

    return app, issuer, refused


def bearer_header(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_codes_statuses_and_the_401_challenge() -> None:
    app, issuer, refused = make_app()

    def token(scope: Scope, audience: str = "api", agency: str | None = None) -> dict[str, str]:
        return bearer_header(issuer.issue("c1", {scope.value}, [audience], agency=agency))

    good = issuer.issue("c1", {Scope.AUDIT_READ.value}, ["api"])
    cases = [
        ({}, 401, "missing_token"),
        ({"Authorization": "Basic dXNlcjpwYXNz"}, 401, "missing_token"),
        ({"Authorization": "Bearer "}, 401, "missing_token"),
        (bearer_header("not-a-jwt"), 401, "malformed_token"),
        (token(Scope.AUDIT_READ, audience="other"), 401, "invalid_token"),
        (token(Scope.PREFILL), 403, "insufficient_scope"),
        (token(Scope.AUDIT_READ, agency="other"), 403, "wrong_agency"),
    ]
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        for headers, status, code in cases:
            response = await client.get("/read", headers=headers)
            assert (response.status_code, response.json()["code"]) == (status, code), headers
            assert response.headers["content-type"].startswith("application/problem+json")
            challenge = response.headers.get("www-authenticate")
            assert challenge == ("Bearer" if status == 401 else None)
        answer = await client.get("/read", headers=bearer_header(f"  {good}"))
        assert answer.status_code == 200
        assert answer.json() == {"client": "c1"}
    assert refused == []  # /read has no refusal hook


def unauthenticated(reason: str) -> float:
    value = REGISTRY.get_sample_value("ikd_http_unauthenticated_requests_total", {"reason": reason})
    return value or 0.0


async def test_the_hooks_see_authenticated_callers_only_and_no_success() -> None:
    app, issuer, refused = make_app(missing_code="unauthenticated")
    other = TokenIssuer(Ed25519PrivateKey.generate(), kid="k1", issuer="https://issuer.test")
    reasons = ("missing", "malformed", "invalid", "expired")
    before = {reason: unauthenticated(reason) for reason in reasons}
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
        missing = await client.get("/audited")
        malformed = await client.get("/audited", headers=bearer_header("not-a-jwt"))
        forged = await client.get(
            "/audited", headers=bearer_header(other.issue("c", {"gateway:prefill"}, ["api"]))
        )
        scope = await client.get(
            "/audited", headers=bearer_header(issuer.issue("c", {"audit:read"}, ["api"]))
        )
        blocked = await client.get(
            "/audited", headers=bearer_header(issuer.issue("blocked", {"audit:read"}, ["api"]))
        )
        fine = await client.get(
            "/audited", headers=bearer_header(issuer.issue("c", {"gateway:prefill"}, ["api"]))
        )
    assert (missing.status_code, missing.json()["code"]) == (401, "unauthenticated")
    assert (malformed.status_code, malformed.json()["code"]) == (401, "malformed_token")
    assert (forged.status_code, forged.json()["code"]) == (401, "invalid_token")
    assert (scope.status_code, scope.json()["code"]) == (403, "insufficient_scope")
    assert (blocked.status_code, blocked.json()["code"]) == (403, "blocked")
    assert fine.status_code == 200
    # The guard runs before authorisation; a refusal by the guard is not passed on.
    assert refused == [
        "/audited:c:guarded",
        "/audited:c:insufficient_scope",
        "/audited:blocked:guarded",
        "/audited:c:guarded",
    ]
    counted = {reason: unauthenticated(reason) - before[reason] for reason in reasons}
    assert counted == {"missing": 1, "malformed": 1, "invalid": 1, "expired": 0}
