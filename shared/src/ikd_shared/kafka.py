"""The one place the project's Kafka clients are configured, and its Kafka plumbing.

Every producer, consumer, admin client and faust app connects through a `KafkaConnection`:
the connection settings, TLS and the SASL credentials of the process's principal live here only.
The operator's ACL and SCRAM administration (which aiokafka lacks) uses confluent-kafka's
AdminClient, configured here too.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from aiokafka import AIOKafkaClient, AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError
from pydantic import SecretStr

from ikd_shared import telemetry
from ikd_shared.events.envelope import CloudEvent, KafkaHeaders, to_kafka
from ikd_shared.events.topics import ALL_TOPICS, TopicSpec

# acks=all with idempotence: a send that was acknowledged is never lost or duplicated.
EVENT_PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    "enable_idempotence": True,
    "linger_ms": 5,
    "max_batch_size": 256 * 1024,
    "request_timeout_ms": 30000,
}
# What no purpose may weaken: the outbox relays mark a row sent once its send is acknowledged.
_GUARANTEED = {"acks": ("all", -1), "enable_idempotence": (True,)}
# Connection settings come from the KafkaConnection only, never from a purpose's overrides.
_CONNECTION_KEYS = frozenset(
    {"bootstrap_servers", "client_id", "security_protocol", "ssl_context"}
    | {"sasl_mechanism", "sasl_plain_username", "sasl_plain_password"}
)


if TYPE_CHECKING:
    from confluent_kafka.admin import AdminClient


class KafkaSettings(Protocol):
    @property
    def kafka_bootstrap_servers(self) -> str: ...
    @property
    def kafka_security_protocol(self) -> str: ...
    @property
    def kafka_sasl_mechanism(self) -> str: ...
    @property
    def kafka_username(self) -> str | None: ...
    @property
    def kafka_password(self) -> SecretStr | None: ...
    @property
    def kafka_ca_file(self) -> Path | None: ...


@functools.cache
def _ssl_context(ca_file: str | None) -> ssl.SSLContext:
    # Verifies the broker's certificate and host name; None: the system's CAs.
    context = ssl.create_default_context(cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


@dataclass(frozen=True, slots=True)
class KafkaConnection:
    """Where, and as whom, a client connects to the brokers.

    `security_protocol` is SASL_SSL (TLS, then SASL with `sasl_mechanism` as `username`) on
    every secured bus; PLAINTEXT is for a development broker without security only.
    """

    bootstrap_servers: str
    client_id: str | None = None  # None: the library's own ("aiokafka-<version>", "faust-...")
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str = "SCRAM-SHA-512"
    username: str | None = None
    password: SecretStr | None = field(default=None, repr=False)
    ca_file: str | None = None

    @classmethod
    def from_settings(
        cls, settings: KafkaSettings, *, client_id: str | None = None
    ) -> KafkaConnection:
        ca_file = settings.kafka_ca_file
        return cls(
            settings.kafka_bootstrap_servers,
            client_id,
            security_protocol=str(settings.kafka_security_protocol),
            sasl_mechanism=settings.kafka_sasl_mechanism,
            username=settings.kafka_username,
            password=settings.kafka_password,
            ca_file=None if ca_file is None else str(ca_file),
        )

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol.startswith("SASL_")

    def ssl_context(self) -> ssl.SSLContext | None:
        return _ssl_context(self.ca_file) if self.uses_tls else None

    def _secret(self) -> str:
        if self.username is None or self.password is None:
            raise ValueError(f"{self.security_protocol} needs a username and a password")
        return self.password.get_secret_value()

    def client_kwargs(self) -> dict[str, Any]:
        """The settings every aiokafka client takes from the connection."""
        kwargs: dict[str, Any] = {"bootstrap_servers": self.bootstrap_servers}
        if self.client_id is not None:
            kwargs["client_id"] = self.client_id
        if self.security_protocol != "PLAINTEXT":
            kwargs["security_protocol"] = self.security_protocol
        if self.uses_tls:
            kwargs["ssl_context"] = self.ssl_context()
        if self.uses_sasl:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_password"] = self._secret()
            kwargs["sasl_plain_username"] = self.username
        return kwargs

    def confluent_config(self) -> dict[str, Any]:
        """The same connection for confluent-kafka (librdkafka) clients."""
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap_servers,
            "security.protocol": self.security_protocol,
        }
        if self.client_id is not None:
            config["client.id"] = self.client_id
        if self.uses_tls and self.ca_file is not None:
            config["ssl.ca.location"] = self.ca_file
        if self.uses_sasl:
            config["sasl.mechanism"] = self.sasl_mechanism
            config["sasl.password"] = self._secret()
            config["sasl.username"] = self.username
        return config

    def confluent_admin(self) -> AdminClient:
        """The admin client for ACLs and SCRAM credentials (aiokafka has neither API)."""
        from confluent_kafka.admin import AdminClient

        return AdminClient(self.confluent_config())

    def producer_config(self, **overrides: Any) -> dict[str, Any]:
        """The event producers' settings; overrides tune batching, never the delivery guarantee."""
        _refuse_connection_overrides(overrides)
        for key, allowed in _GUARANTEED.items():
            if key in overrides and overrides[key] not in allowed:
                raise ValueError(f"a producer may not override {key}={overrides[key]!r}")
        return {**self.client_kwargs(), **EVENT_PRODUCER_DEFAULTS, **overrides}

    def producer(self, **overrides: Any) -> AIOKafkaProducer:
        return AIOKafkaProducer(**self.producer_config(**overrides))

    def consumer_config(self, *, group: str | None, **overrides: Any) -> dict[str, Any]:
        """Offsets are committed by the code that applied the records, never automatically.

        `group=None` reads without a consumer group (assign/seek, no commits).
        """
        _refuse_connection_overrides(overrides)
        return {**self.client_kwargs(), "group_id": group, "enable_auto_commit": False, **overrides}

    def consumer(self, *topics: str, group: str | None, **overrides: Any) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(*topics, **self.consumer_config(group=group, **overrides))

    def admin(self, **overrides: Any) -> AIOKafkaAdminClient:
        _refuse_connection_overrides(overrides)
        return AIOKafkaAdminClient(**self.client_kwargs(), **overrides)

    def client(self, **overrides: Any) -> AIOKafkaClient:
        """A bare metadata client (readiness checks)."""
        _refuse_connection_overrides(overrides)
        return AIOKafkaClient(**self.client_kwargs(), **overrides)

    def faust_broker_kwargs(self) -> dict[str, Any]:
        """The broker and producer settings of a faust.App (its other settings are the app's)."""
        servers = self.bootstrap_servers.split(",")
        kwargs: dict[str, Any] = {
            "broker": f"kafka://{servers[0]}",
            "broker_consumer": [f"kafka://{server}" for server in servers],
            "producer_acks": -1,
        }
        if self.client_id is not None:
            kwargs["broker_client_id"] = self.client_id
        if self.uses_sasl:
            import faust  # only the faust apps' processes have it

            kwargs["broker_credentials"] = faust.SASLCredentials(
                ssl_context=self.ssl_context(),
                mechanism=self.sasl_mechanism,
                username=self.username,
                password=self._secret(),
            )
        elif self.uses_tls:
            import faust

            kwargs["broker_credentials"] = faust.SSLCredentials(self.ssl_context())
        return kwargs


def _refuse_connection_overrides(overrides: dict[str, Any]) -> None:
    clashing = sorted(_CONNECTION_KEYS & overrides.keys())
    if clashing:
        raise ValueError(f"connection settings belong to KafkaConnection: {', '.join(clashing)}")


async def ensure_topics(
    conn: KafkaConnection,
    *,
    prefix: str = "",
    replication_factor: int = 1,
    specs: Iterable[TopicSpec] = ALL_TOPICS,
) -> list[str]:
    """Create the declared topics that do not exist yet; return the names created."""
    admin = conn.admin()
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(
                name=spec.full_name(prefix),
                num_partitions=spec.partitions,
                replication_factor=replication_factor,
                topic_configs=spec.topic_config(),
            )
            for spec in specs
            if spec.full_name(prefix) not in existing
        ]
        if not missing:
            return []
        response = await admin.create_topics(missing)
        created = []
        for name, error_code, *_ in response.topic_errors:
            if error_code == 0:
                created.append(name)
            elif error_code != TopicAlreadyExistsError.errno:
                raise RuntimeError(f"creating topic {name} failed with error code {error_code}")
        return created
    finally:
        await admin.close()


async def send_event(producer: AIOKafkaProducer, topic: str, event: CloudEvent) -> Any:
    """Send one CloudEvent and wait for the broker's acknowledgement."""
    record = to_kafka(event)
    with telemetry.kafka_send(topic, record.headers) as headers:
        return await producer.send_and_wait(
            topic, value=record.value, key=record.key, headers=headers
        )


async def send_events(producer: AIOKafkaProducer, events: Iterable[tuple[str, CloudEvent]]) -> None:
    """Send (topic, CloudEvent) pairs in order, then wait for the broker to acknowledge all.

    Each send only queues its record, so a batch travels in few requests; the idempotent
    producer keeps the order per partition. Any failed acknowledgement fails the call.
    """
    futures = []
    with contextlib.ExitStack() as spans:  # each record's producer span ends with the acks
        for topic, event in events:
            record = to_kafka(event)
            headers = spans.enter_context(telemetry.kafka_send(topic, record.headers))
            futures.append(
                await producer.send(topic, value=record.value, key=record.key, headers=headers)
            )
        await asyncio.gather(*futures)


def dead_letter_headers(
    reason: str, *, source_topic: str, partition: int, offset: int, service: str
) -> KafkaHeaders:
    """Why and where from: headers added to a record sent to a dead-letter topic."""
    return [
        ("dlq_reason", reason[:1000].encode()),
        ("dlq_source_topic", source_topic.encode()),
        ("dlq_partition", str(partition).encode()),
        ("dlq_offset", str(offset).encode()),
        ("dlq_service", service.encode()),
    ]


async def wait_for_broker(conn: KafkaConnection, within_s: float = 30.0) -> None:
    """Poll until the broker answers a metadata request or the deadline passes."""
    deadline = asyncio.get_running_loop().time() + within_s
    while True:
        admin = conn.admin()
        try:
            await admin.start()
            await admin.list_topics()
            return
        except KafkaConnectionError:
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)
        finally:
            await admin.close()


async def delete_prefixed_topics(conn: KafkaConnection, prefix: str) -> list[str]:
    """Delete every topic whose name starts with `prefix` (a test's or a bench run's)."""
    if not prefix:
        raise ValueError("refusing to delete topics without a prefix")
    admin = conn.admin()
    await admin.start()
    try:
        names = [name for name in await admin.list_topics() if name.startswith(prefix)]
        if names:
            await admin.delete_topics(names)
        return names
    finally:
        await admin.close()
