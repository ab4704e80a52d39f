"""The kernel modules keep their dependencies small: what each may not pull in is checked here."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from ikd_shared.api import PROBLEM_JSON, install_error_handlers
from ikd_shared.errors import ApiError

WEB = ("fastapi", "starlette", "prometheus_client", "opentelemetry", "asyncpg", "aiokafka")


def imported_after(module: str) -> set[str]:
    """Top-level packages a fresh interpreter holds after importing `module`."""
    code = f"import sys, {module}; print(*{{name.split('.')[0] for name in sys.modules}})"
    run = [sys.executable, "-c", code]
    out = subprocess.run(run, capture_output=True, text=True, check=True).stdout  # noqa: S603
    return set(out.split())


@pytest.mark.parametrize(
    "module",
    [
        "ikd_shared.errors",
        "ikd_shared.tracing",
        "ikd_shared.merkle",
        "ikd_shared.transparency",
        "ikd_identity.domain.errors",
        "ikd_gateway.domain.errors",
        "ikd_audit.domain.errors",
    ],
)
def test_pure_modules_import_no_web_telemetry_or_io_library(module: str) -> None:
    assert imported_after(module).isdisjoint(WEB)


def test_logs_need_no_web_or_metrics_library() -> None:
    assert imported_after("ikd_shared.logs").isdisjoint(WEB)


class Locked(ApiError):
    status_code = 423
    code = "locked"


async def test_api_error_extras_become_members_of_the_problem() -> None:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/locked")
    async def locked() -> None:
        raise Locked("try later", extras={"retry_after": 30})

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
        response = await http.get("/locked")
    assert response.status_code == 423
    assert response.headers["content-type"] == PROBLEM_JSON
    body = response.json()
    assert body["code"] == "locked"
    assert body["detail"] == "try later"
    assert body["retry_after"] == 30


def test_api_error_without_extras_has_none() -> None:
    error = Locked("x", code="other", status_code=409)
    assert (error.status_code, error.code, error.extras) == (409, "other", {})


REPO = Path(__file__).resolve().parents[3]
SHIPPED = ["shared", "services/identity", "services/agency_gateway", "services/audit"]


@pytest.mark.parametrize("member", SHIPPED)
def test_service_images_carry_no_development_code(member: str) -> None:
    manifest = tomllib.loads((REPO / member / "pyproject.toml").read_text())
    assert "ikd-dev" not in manifest["project"]["dependencies"]
    for source in (REPO / member / "src").rglob("*.py"):
        assert not re.search(r"^\s*(from|import) ikd_dev\b", source.read_text(), re.M), source
