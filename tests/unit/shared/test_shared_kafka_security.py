"""The client factory applies the principal's TLS and SASL settings to every client."""

from __future__ import annotations

import ssl

import pytest
from pydantic import SecretStr, ValidationError

from ikd_shared.kafka import KafkaConnection
from ikd_shared.settings import KafkaClientSettings

SECURED = KafkaConnection(
    "one:9092",
    security_protocol="SASL_SSL",
    username="identity",
    password=SecretStr("s3cret-password-from-a-secret-store"),
)


def test_every_aiokafka_client_gets_tls_and_scram() -> None:
    for config in (
        SECURED.producer_config(),
        SECURED.consumer_config(group="g"),
        SECURED.client_kwargs(),
    ):
        assert config["security_protocol"] == "SASL_SSL"
        assert config["sasl_mechanism"] == "SCRAM-SHA-512"
        assert config["sasl_plain_username"] == "identity"
        assert config["sasl_plain_password"] == "s3cret-password-from-a-secret-store"
        context = config["ssl_context"]
        assert isinstance(context, ssl.SSLContext)
        assert context.verify_mode is ssl.CERT_REQUIRED
        assert context.check_hostname


def test_confluent_and_faust_clients_get_the_same_principal() -> None:
    config = SECURED.confluent_config()
    assert config["security.protocol"] == "SASL_SSL"
    assert (config["sasl.username"], config["sasl.mechanism"]) == ("identity", "SCRAM-SHA-512")
    credentials = SECURED.faust_broker_kwargs()["broker_credentials"]
    assert credentials.username == "identity"
    assert credentials.protocol.value == "SASL_SSL"
    assert credentials.mechanism.value == "SCRAM-SHA-512"


def test_the_password_never_shows_in_the_connection_repr() -> None:
    assert "s3cret" not in repr(SECURED)


def test_sasl_without_a_password_is_refused() -> None:
    with pytest.raises(ValueError, match="username and a password"):
        KafkaConnection("one:9092", security_protocol="SASL_SSL").client_kwargs()


def test_settings_require_credentials_and_refuse_plaintext_outside_development(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("IKD_KAFKA_USERNAME", "IKD_KAFKA_PASSWORD", "IKD_KAFKA_SECURITY_PROTOCOL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("IKD_ENVIRONMENT", "production")
    with pytest.raises(ValidationError, match="IKD_KAFKA_USERNAME is required"):
        KafkaClientSettings()
    monkeypatch.setenv("IKD_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
    with pytest.raises(ValidationError, match="only in development"):
        KafkaClientSettings()
    monkeypatch.setenv("IKD_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("IKD_KAFKA_USERNAME", "audit")
    monkeypatch.setenv("IKD_KAFKA_PASSWORD", "dev-audit-password")
    with pytest.raises(ValidationError, match="IKD_KAFKA_PASSWORD holds a placeholder"):
        KafkaClientSettings()


def test_settings_read_the_password_from_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    secret = tmp_path / "audit.password"
    secret.write_text("0123456789abcdef0123456789abcdef0123\n")
    monkeypatch.setenv("IKD_ENVIRONMENT", "production")
    monkeypatch.setenv("IKD_KAFKA_USERNAME", "audit")
    monkeypatch.setenv("IKD_KAFKA_PASSWORD", f"@{secret}")
    conn = KafkaConnection.from_settings(KafkaClientSettings())
    assert conn.client_kwargs()["sasl_plain_password"] == "0123456789abcdef0123456789abcdef0123"
