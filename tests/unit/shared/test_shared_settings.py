"""Shared settings: a missing or invalid variable stops start-up with one line naming it."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import Field, SecretStr
from pydantic_settings import SettingsConfigDict

from ikd_shared.settings import (
    Ed25519KeySetting,
    JwksSetting,
    ServiceSettings,
    is_placeholder,
    load_settings,
)

STRONG = "Vq3Lx9Tz0Rk7Wm2Np5Hs8Jd4Fb6Gc1Ye"


class DemoSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="IKD_DEMO_", extra="ignore", frozen=True)

    database_url: str
    port: int = Field(default=1, ge=1, le=65535)
    webhook_secret: SecretStr = SecretStr(STRONG)


@pytest.fixture
def env(monkeypatch):
    monkeypatch.setenv("IKD_ENVIRONMENT", "production")
    monkeypatch.setenv("IKD_PSEUDONYM_KEY", STRONG)
    monkeypatch.setenv("IKD_DEMO_DATABASE_URL", "postgresql://x")
    return monkeypatch


def _one_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_valid_settings_load(env) -> None:
    settings = load_settings(DemoSettings)
    assert settings.database_url == "postgresql://x"
    assert not settings.is_development


def test_missing_variable_is_named(env, capsys) -> None:
    env.delenv("IKD_DEMO_DATABASE_URL")
    with pytest.raises(SystemExit):
        load_settings(DemoSettings)
    assert _one_line(capsys).endswith("setting IKD_DEMO_DATABASE_URL is missing")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("IKD_DEMO_PORT", "0"),
        ("IKD_DEMO_PORT", "http"),
        ("IKD_ENVIRONMENT", "staging"),
        ("IKD_KAFKA_TOPIC_PREFIX", "bad prefix!"),
    ],
)
def test_invalid_variable_is_named(env, capsys, variable, value) -> None:
    env.setenv(variable, value)
    with pytest.raises(SystemExit):
        load_settings(DemoSettings)
    assert f"setting {variable} is invalid" in _one_line(capsys)


@pytest.mark.parametrize(
    "secret",
    [
        "change-me",
        "dev-secret-but-long-enough-to-pass-length",
        "short",
        "an-example-secret-that-is-long-enough-yes",
    ],
)
def test_placeholder_secrets_refused_outside_development(env, capsys, secret) -> None:
    env.setenv("IKD_PSEUDONYM_KEY", secret)
    with pytest.raises(SystemExit):
        load_settings(DemoSettings)
    assert "IKD_PSEUDONYM_KEY holds a placeholder" in _one_line(capsys)
    env.setenv("IKD_ENVIRONMENT", "development")
    assert load_settings(DemoSettings).pseudonym_key.get_secret_value() == secret


def test_every_secret_field_is_checked(env, capsys) -> None:
    env.setenv("IKD_DEMO_WEBHOOK_SECRET", "changeme")
    with pytest.raises(SystemExit):
        load_settings(DemoSettings)
    assert "IKD_DEMO_WEBHOOK_SECRET" in _one_line(capsys)


def test_placeholder_rule() -> None:
    assert is_placeholder("x" * 31)
    assert not is_placeholder(STRONG)


class KeySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="IKD_DEMO_", extra="ignore", frozen=True)

    signing_key: Ed25519KeySetting
    jwks: JwksSetting


def _pem() -> str:
    key = Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def test_key_and_jwks_settings_read_inline_values_and_files(env, tmp_path) -> None:
    pem, jwks = _pem(), {"keys": [{"kty": "OKP", "kid": "k"}]}
    (tmp_path / "key.pem").write_text(pem)
    (tmp_path / "jwks.json").write_text(json.dumps(jwks))
    env.setenv("IKD_DEMO_SIGNING_KEY", f"@{tmp_path / 'key.pem'}")
    env.setenv("IKD_DEMO_JWKS", f"@{tmp_path / 'jwks.json'}")
    from_files = load_settings(KeySettings)
    assert from_files.signing_key.get_secret_value() == pem
    assert from_files.jwks == jwks
    env.setenv("IKD_DEMO_SIGNING_KEY", pem)
    env.setenv("IKD_DEMO_JWKS", json.dumps(jwks))
    assert load_settings(KeySettings) == from_files


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("IKD_DEMO_SIGNING_KEY", "@/nonexistent.pem", "cannot read the key file"),
        ("IKD_DEMO_SIGNING_KEY", "x" * 40, "not an Ed25519 private key in PEM form"),
        ("IKD_DEMO_JWKS", "{not json", "cannot load the JWKS"),
        ("IKD_DEMO_JWKS", '{"keys": 1}', "cannot load the JWKS: not a JWKS"),
    ],
)
def test_bad_key_or_jwks_is_named(env, capsys, variable, value, message) -> None:
    env.setenv("IKD_DEMO_SIGNING_KEY", _pem())
    env.setenv("IKD_DEMO_JWKS", '{"keys": []}')
    env.setenv(variable, value)
    with pytest.raises(SystemExit):
        load_settings(KeySettings)
    line = _one_line(capsys)
    assert f"setting {variable} is invalid: {message}" in line
