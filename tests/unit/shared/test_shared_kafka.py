"""The Kafka client factory: every client gets the connection, producers keep their guarantee."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from pydantic import SecretStr

from ikd_shared.kafka import EVENT_PRODUCER_DEFAULTS, KafkaConnection

SERVERS = "broker-1:9092,broker-2:9092"


def test_event_producer_gets_the_project_defaults_and_the_connection() -> None:
    config = KafkaConnection(SERVERS, client_id="ikd-test").producer_config()

    assert config == {
        "bootstrap_servers": SERVERS,
        "client_id": "ikd-test",
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": 5,
        "max_batch_size": 256 * 1024,
        "request_timeout_ms": 30000,
    }
    assert KafkaConnection(SERVERS).producer_config() == {
        "bootstrap_servers": SERVERS,
        **EVENT_PRODUCER_DEFAULTS,
    }


async def test_the_built_producer_is_idempotent_with_acks_all() -> None:
    producer = KafkaConnection(SERVERS).producer(linger_ms=20)
    try:
        assert producer.client._bootstrap_servers == SERVERS
        assert producer._txn_manager is not None  # aiokafka's idempotence state
        assert producer._sender._acks == -1  # aiokafka's spelling of acks=all
    finally:
        await producer.stop()


def test_a_purpose_may_tune_batching_but_not_the_delivery_guarantee() -> None:
    conn = KafkaConnection(SERVERS)

    tuned = conn.producer_config(linger_ms=50, max_batch_size=1024)
    assert (tuned["linger_ms"], tuned["max_batch_size"]) == (50, 1024)
    assert (tuned["acks"], tuned["enable_idempotence"]) == ("all", True)
    # Restating the guarantee is harmless; weakening it is refused, not silently applied.
    assert conn.producer_config(acks=-1, enable_idempotence=True)["acks"] == -1
    for weakened in ({"acks": 1}, {"acks": 0}, {"enable_idempotence": False}):
        with pytest.raises(ValueError, match="may not override"):
            conn.producer_config(**weakened)


@pytest.mark.parametrize("key", ["bootstrap_servers", "client_id", "security_protocol"])
def test_connection_settings_come_from_the_connection_only(key: str) -> None:
    conn = KafkaConnection(SERVERS)
    for build in (conn.producer_config, conn.admin, conn.client):
        with pytest.raises(ValueError, match=key):
            build(**{key: "elsewhere"})
    with pytest.raises(ValueError, match=key):
        conn.consumer_config(group=None, **{key: "elsewhere"})


def test_consumers_never_commit_by_themselves() -> None:
    conn = KafkaConnection(SERVERS)

    grouped = conn.consumer_config(group="ikd-audit", auto_offset_reset="earliest")
    assert grouped == {
        "bootstrap_servers": SERVERS,
        "group_id": "ikd-audit",
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
    }
    assert conn.consumer_config(group=None)["group_id"] is None


async def test_consumer_and_admin_are_built_from_the_connection() -> None:
    conn = KafkaConnection(SERVERS, client_id="ikd-test")
    consumer = conn.consumer("a-topic", group="g", max_poll_records=7)
    admin = conn.admin()
    try:
        assert consumer._client._bootstrap_servers == SERVERS
        assert consumer._client._client_id == "ikd-test"
        assert consumer._group_id == "g"
        assert consumer._enable_auto_commit is False
        assert admin._client._bootstrap_servers == SERVERS
    finally:
        await admin.close()


def test_faust_broker_settings() -> None:
    assert KafkaConnection(SERVERS).faust_broker_kwargs() == {
        "broker": "kafka://broker-1:9092",
        "broker_consumer": ["kafka://broker-1:9092", "kafka://broker-2:9092"],
        "producer_acks": -1,
    }
    named = KafkaConnection("one:9092", client_id="ikd-gateway").faust_broker_kwargs()
    assert named["broker_client_id"] == "ikd-gateway"


def test_from_settings_reads_the_bootstrap_servers() -> None:
    @dataclass
    class Settings:
        kafka_bootstrap_servers: str = SERVERS
        kafka_security_protocol: str = "PLAINTEXT"
        kafka_sasl_mechanism: str = "SCRAM-SHA-512"
        kafka_username: str | None = None
        kafka_password: SecretStr | None = None
        kafka_ca_file: Path | None = None

    assert KafkaConnection.from_settings(Settings()) == KafkaConnection(SERVERS)
    assert KafkaConnection.from_settings(Settings(), client_id="x").client_id == "x"
