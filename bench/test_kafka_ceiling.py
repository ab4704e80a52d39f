"""The producer benchmark's client properties carry the services' security settings."""

from __future__ import annotations

from pydantic import SecretStr

from bench.kafka_ceiling import client_properties
from ikd_shared.kafka import KafkaConnection


def test_secured_connection_becomes_sasl_ssl_properties_with_a_pem_truststore() -> None:
    conn = KafkaConnection(
        "broker:9092",
        security_protocol="SASL_SSL",
        username="identity",
        password=SecretStr('pa"ss'),
        ca_file="/keys/ca.pem",
    )
    assert client_properties(conn).splitlines() == [
        "security.protocol=SASL_SSL",
        "sasl.mechanism=SCRAM-SHA-512",
        "sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required "
        'username="identity" password="pa\\"ss";',
        "ssl.truststore.type=PEM",
        "ssl.truststore.location=/keys/ca.pem",
    ]


def test_plaintext_connection_sets_only_the_protocol() -> None:
    conn = KafkaConnection("broker:9092")
    assert client_properties(conn) == "security.protocol=PLAINTEXT\n"
