"""Outside development: no placeholder password inside any service's database URL, and no secret
as a command-line argument of an admin command (`ps` shows arguments to every user)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import PostgresDsn
from pydantic_settings import SettingsConfigDict
from typer.testing import CliRunner

from ikd_audit.cli import app as audit_cli
from ikd_audit.config import AuditSettings, SignerSettings
from ikd_gateway.cli import app as gateway_cli
from ikd_gateway.config import GatewaySettings
from ikd_identity.cli import app as identity_cli
from ikd_shared import checkpoint
from ikd_shared.settings import (
    ServiceSettings,
    dsn_password,
    load_settings,
    secret_option,
)

STRONG = "Vq3Lx9Tz0Rk7Wm2Np5Hs8Jd4Fb6Gc1Ye"
runner = CliRunner()


class DsnSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="IKD_DEMO_", extra="ignore", frozen=True)

    database_url: PostgresDsn
    migration_database_url: str | None = None


def audit_settings_env(env: pytest.MonkeyPatch) -> None:
    key = Ed25519PrivateKey.generate()
    env.setenv("IKD_AUDIT_LOG_VKEY", checkpoint.Signer("audit.example/log", key).verifier.vkey)
    env.setenv("IKD_AUDIT_TOKEN_JWKS", '{"keys": []}')
    env.setenv("IKD_AUDIT_TRUST_JWKS", '{"keys": []}')
    env.setenv("IKD_AUDIT_SESSION_SECRET", STRONG)
    env.setenv("IKD_AUDIT_DATABASE_URL", f"postgresql://app:{STRONG}@db/x")


@pytest.fixture
def production(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    monkeypatch.setenv("IKD_ENVIRONMENT", "production")
    monkeypatch.setenv("IKD_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("IKD_KAFKA_USERNAME", "svc")
    monkeypatch.setenv("IKD_KAFKA_PASSWORD", STRONG)
    monkeypatch.setenv("IKD_PSEUDONYM_KEY", STRONG)
    monkeypatch.setenv("IKD_DEMO_DATABASE_URL", f"postgresql://app:{STRONG}@db/x")
    return monkeypatch


@pytest.mark.parametrize(
    ("variable", "dsn"),
    [
        ("IKD_DEMO_DATABASE_URL", "postgresql://x:changeme@db:5432/x"),
        ("IKD_DEMO_DATABASE_URL", "postgresql://x:dev-app-password@db/x"),
        ("IKD_DEMO_DATABASE_URL", "postgresql://x:sh0rt@h1:5432,h2:5432/x"),
        ("IKD_DEMO_DATABASE_URL", "postgres://x:change%2Dme-but-long-enough-to-pass-length@db/x"),
        ("IKD_DEMO_MIGRATION_DATABASE_URL", "postgresql://owner:placeholder-pw-9@db/x"),
    ],
)
def test_placeholder_database_passwords_are_refused_and_named(
    production: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], variable: str, dsn: str
) -> None:
    production.setenv(variable, dsn)
    with pytest.raises(SystemExit):
        load_settings(DsnSettings)
    err = capsys.readouterr().err
    assert f"{variable} holds a placeholder or short database password" in err
    assert dsn.split("@")[0].split(":")[-1] not in err  # the password itself is not echoed
    production.setenv("IKD_ENVIRONMENT", "development")
    production.setenv("IKD_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
    assert load_settings(DsnSettings)


def test_strong_or_absent_passwords_pass(production: pytest.MonkeyPatch) -> None:
    production.setenv("IKD_DEMO_MIGRATION_DATABASE_URL", "postgresql://owner@db/x")  # .pgpass
    assert load_settings(DsnSettings).database_url.hosts()[0]["password"] == STRONG
    assert dsn_password("postgresql://owner@db/x") is None
    assert dsn_password("postgresql://u:p%40ss@h1,h2/x") == "p@ss"
    assert dsn_password("mysql://u:p@h/x") is None


def test_every_services_database_urls_are_checked(production: pytest.MonkeyPatch) -> None:
    weak = "postgresql://app:changeme@db:5432/x"
    production.setenv("IKD_GATEWAY_AGENCY", "bank-bjb")
    production.setenv("IKD_GATEWAY_TOKEN_JWKS", '{"keys": []}')
    production.setenv("IKD_GATEWAY_DATABASE_URL", weak)
    with pytest.raises(ValueError, match="IKD_GATEWAY_DATABASE_URL"):
        GatewaySettings()  # type: ignore[call-arg]
    audit_settings_env(production)
    production.setenv("IKD_AUDIT_MIGRATION_DATABASE_URL", weak)
    with pytest.raises(ValueError, match="IKD_AUDIT_MIGRATION_DATABASE_URL"):
        AuditSettings()  # type: ignore[call-arg]
    pem = key_pem(Ed25519PrivateKey.generate())
    production.setenv("IKD_SIGNER_SIGNING_KEY", pem)
    production.setenv("IKD_SIGNER_DATABASE_URL", weak)
    with pytest.raises(ValueError, match="IKD_SIGNER_DATABASE_URL"):
        SignerSettings()  # type: ignore[call-arg]


def key_pem(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def test_identity_admin_commands_refuse_a_placeholder_owner_password(
    production: pytest.MonkeyPatch,
) -> None:
    production.setenv("IKD_IDENTITY_MIGRATION_DATABASE_URL", "postgresql://o:dev-owner-pw@db/x")
    result = runner.invoke(identity_cli, ["migrate"])
    assert result.exit_code == 2
    assert "IKD_IDENTITY_MIGRATION_DATABASE_URL holds a placeholder" in result.output


def test_a_secret_on_the_command_line_is_refused_outside_development(
    production: pytest.MonkeyPatch,
) -> None:
    production.setenv("IKD_IDENTITY_MIGRATION_DATABASE_URL", f"postgresql://o:{STRONG}@db:1/x")
    added = runner.invoke(
        identity_cli,
        ["clients", "add", "--id", "c1", "--scopes", "identity:feed", "--secret", STRONG],
    )
    assert added.exit_code == 2
    assert "process list" in added.output

    audit_settings_env(production)
    auditor = runner.invoke(audit_cli, ["auditors", "add", "--id", "aud-1", "--secret", STRONG])
    assert auditor.exit_code == 2
    assert "process list" in auditor.output

    receiver = runner.invoke(gateway_cli, ["example-receiver", "--secret", "whsec_x"])
    assert receiver.exit_code == 2
    assert "process list" in receiver.output

    consumer = runner.invoke(
        gateway_cli,
        ["agency-consume", "--topic", "t", "--group", "g", "--password", STRONG],
    )
    assert consumer.exit_code == 2
    assert "process list" in consumer.output


def test_secret_files_and_standard_input(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "secret"
    path.write_text(f"{STRONG}\n")
    assert secret_option(None, path, development=False) == STRONG
    monkeypatch.setattr("sys.stdin", io.StringIO(STRONG + "\n"))
    assert secret_option(None, Path("-"), development=False) == STRONG
    assert secret_option(None, None, development=False) is None
    assert secret_option("argv-secret", None, development=True) == "argv-secret"
    with pytest.raises(ValueError, match="not both"):
        secret_option("a", path, development=True)
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="empty"):
        secret_option(None, tmp_path / "empty", development=False)
    with pytest.raises(ValueError, match="cannot read"):
        secret_option(None, tmp_path / "missing", development=False)
