"""The identity CLI checks its input before it touches the database."""

from __future__ import annotations

from typer.testing import CliRunner

from ikd_identity.cli import app

runner = CliRunner()


def test_clients_add_validates_before_touching_the_database(monkeypatch) -> None:
    monkeypatch.setenv("IKD_IDENTITY_MIGRATION_DATABASE_URL", "postgresql://u:p@127.0.0.1:1/x")
    result = runner.invoke(app, ["clients", "add", "--id", "c1", "--scopes", "identity:nope"])
    assert result.exit_code != 0
    assert "unknown scopes" in result.output
    result = runner.invoke(app, ["clients", "add", "--id", "Bad Id", "--scopes", "identity:feed"])
    assert result.exit_code != 0


def test_clients_add_serves_only_agencies_of_the_policy(monkeypatch) -> None:
    monkeypatch.setenv("IKD_IDENTITY_MIGRATION_DATABASE_URL", "postgresql://u:p@127.0.0.1:1/x")
    result = runner.invoke(
        app,
        [
            "clients",
            "add",
            "--id",
            "desk-1",
            "--scopes",
            "identity:consent",
            "--serves",
            "bank-bjb,bank-nowhere",
        ],
    )
    assert result.exit_code != 0
    assert "bank-nowhere" in result.output
    assert "bank-bjb" not in result.output.split("policy")[-1]
