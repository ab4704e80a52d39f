"""`ikd-gateway api --workers N` (or IKD_GATEWAY_API_WORKERS) serves one port from N processes."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
import uvicorn
from typer.testing import CliRunner
from uvicorn.importer import import_from_string

from ikd_gateway import cli


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, dict[str, Any]]]:
    calls: list[tuple[Any, dict[str, Any]]] = []
    settings = SimpleNamespace(host="127.0.0.1", port=18123)
    monkeypatch.setattr(cli, "load_settings", lambda _: settings)
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append((app, kw)))
    monkeypatch.setattr("ikd_gateway.entrypoints.api.create_app", lambda s: ("app of", s))
    return calls


def test_several_workers_serve_the_factory_on_the_one_port(
    served: list[tuple[Any, dict[str, Any]]],
) -> None:
    result = CliRunner().invoke(cli.app, ["api"], env={"IKD_GATEWAY_API_WORKERS": "3"})
    assert result.exit_code == 0, result.output
    [(target, options)] = served
    assert options["workers"] == 3
    assert options["factory"] is True
    assert (options["host"], options["port"]) == ("127.0.0.1", 18123)
    assert import_from_string(target) is cli.api_from_environment
    # a worker slow to import the app on a busy machine is not killed after uvicorn's 5 s
    assert options["timeout_worker_healthcheck"] >= 30


def test_one_worker_serves_the_app_in_this_process(
    served: list[tuple[Any, dict[str, Any]]],
) -> None:
    result = CliRunner().invoke(cli.app, ["api"], env={"IKD_GATEWAY_API_WORKERS": ""})
    assert result.exit_code == 0, result.output
    [(target, options)] = served
    assert target[0] == "app of"
    assert "workers" not in options
