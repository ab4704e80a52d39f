"""Kafka's own producer benchmark against the project's broker: the engine's ceiling.

Runs org.apache.kafka.tools.ProducerPerformance with the same record size and producer
settings (acks=all, idempotence, linger 5 ms, 256 KiB batches; see ikd_shared.kafka) as the
identity outbox relay, into a topic with as many partitions as the profile topic. The record
size is that of the profile events the bulk feed put on the profile topic: value (the JSON
data) + key (the pseudonym) + the CloudEvents headers, since ProducerPerformance sends values
only.

It connects as the services do: TLS and SASL/SCRAM-SHA-512, as the identity principal (not the
admin, whose super-user rights skip the ACL checks), allowed to write the bench topic for the
run only; so the figure includes the cost of encryption, authentication and authorisation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import statistics
import subprocess
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from aiokafka import TopicPartition
from aiokafka.admin import NewTopic
from confluent_kafka.admin import AclOperation, ResourceType  # type: ignore[attr-defined]
from pydantic import SecretStr

from ikd_ops import kafka_security
from ikd_shared.kafka import KafkaConnection
from ikd_shared.settings import KafkaClientSettings, load_settings

REPO = Path(__file__).resolve().parent.parent
KAFKA_LIB = REPO / ".run" / "kafka" / "lib"
KAFKA_SECRETS = Path(os.environ.get("IKD_DEV_KEYS", REPO / ".run" / "dev")) / "kafka"
PRINCIPAL = "identity"

_SUMMARY = re.compile(
    r"(?P<records>\d+) records sent, (?P<rate>[\d.]+) records/sec \((?P<mb>[\d.]+) MB/sec\), "
    r"(?P<avg>[\d.]+) ms avg latency, (?P<max>[\d.]+) ms max latency, "
    r"(?P<p50>\d+) ms 50th, (?P<p95>\d+) ms 95th, (?P<p99>\d+) ms 99th"
)


@dataclass(frozen=True)
class ProducerPerfResult:
    records: int
    records_per_second: float
    mb_per_second: float
    p50_ms: float
    p95_ms: float
    p99_ms: float


def client_properties(conn: KafkaConnection) -> str:
    """The connection as a Java client's properties (ProducerPerformance --producer.config)."""
    lines = [f"security.protocol={conn.security_protocol}"]
    if conn.uses_sasl:
        assert conn.username is not None
        assert conn.password is not None
        module = "org.apache.kafka.common.security.scram.ScramLoginModule"
        username, password = (
            value.replace("\\", "\\\\").replace('"', '\\"')
            for value in (conn.username, conn.password.get_secret_value())
        )
        lines += [
            f"sasl.mechanism={conn.sasl_mechanism}",
            f'sasl.jaas.config={module} required username="{username}" password="{password}";',
        ]
    if conn.uses_tls and conn.ca_file is not None:
        lines += ["ssl.truststore.type=PEM", f"ssl.truststore.location={conn.ca_file}"]
    return "\n".join(lines) + "\n"


@contextlib.asynccontextmanager
async def bench_producer(bootstrap: str, topic: str) -> AsyncIterator[Path | None]:
    """A --producer.config file of the bench principal, allowed to write `topic` meanwhile.

    Yields None on a bus without SASL (nothing to authenticate, no ACLs)."""
    admin = _kafka(bootstrap)
    if not admin.uses_sasl:
        yield None
        return
    principal = dataclasses.replace(
        admin,
        username=PRINCIPAL,
        password=SecretStr((KAFKA_SECRETS / f"{PRINCIPAL}.password").read_text().strip()),
    )
    grant = kafka_security.Grant(PRINCIPAL, ResourceType.TOPIC, topic, AclOperation.WRITE)
    await kafka_security.apply_acls(admin, [grant])
    try:
        with tempfile.TemporaryDirectory(prefix="ikd-bench-") as folder:
            path = Path(folder) / "producer.properties"  # the folder is private (0700)
            path.write_text(client_properties(principal))
            yield path
    finally:
        await kafka_security.delete_acls(admin, [grant])


def run_producer_performance(
    bootstrap: str, topic: str, *, records: int, record_size: int, config: Path | None = None
) -> ProducerPerfResult:
    command = [
        "java",
        "-Xmx512m",
        "-cp",
        f"{KAFKA_LIB}/*",
        "org.apache.kafka.tools.ProducerPerformance",
        "--topic",
        topic,
        "--num-records",
        str(records),
        "--record-size",
        str(record_size),
        "--throughput",
        "-1",
        "--producer-props",
        f"bootstrap.servers={bootstrap}",
        "acks=all",
        "enable.idempotence=true",
        "linger.ms=5",
        "batch.size=262144",
        "compression.type=none",
    ]
    if config is not None:
        command += ["--producer.config", str(config)]
    # the command line is built from constants and numbers only
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout  # noqa: S603
    match = None
    for line in output.splitlines():
        match = _SUMMARY.search(line) or match
    if match is None:
        raise RuntimeError(f"ProducerPerformance printed no summary:\n{output[-2000:]}")
    return ProducerPerfResult(
        records=int(match["records"]),
        records_per_second=float(match["rate"]),
        mb_per_second=float(match["mb"]),
        p50_ms=float(match["p50"]),
        p95_ms=float(match["p95"]),
        p99_ms=float(match["p99"]),
    )


@dataclass(frozen=True)
class RecordSize:
    records: int
    value_bytes: float
    key_bytes: float
    header_bytes: float

    @property
    def total(self) -> int:
        return round(self.value_bytes + self.key_bytes + self.header_bytes)


async def sample_record_size(
    bootstrap: str, topic: str, *, partitions: int, records: int = 2000
) -> RecordSize:
    """Mean sizes of the first records of the partitions of `topic`."""
    consumer = _kafka(bootstrap).consumer(group=None)
    await consumer.start()
    try:
        assigned = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(assigned)
        await consumer.seek_to_beginning(*assigned)
        values: list[int] = []
        keys: list[int] = []
        headers: list[int] = []
        for _ in range(50):
            batch = await consumer.getmany(timeout_ms=1000, max_records=records)
            for messages in batch.values():
                for message in messages:
                    if message.value is None:
                        continue
                    values.append(len(message.value))
                    keys.append(len(message.key or b""))
                    headers.append(sum(len(k) + len(v or b"") for k, v in message.headers))
            if len(values) >= records or not batch:
                break
    finally:
        await consumer.stop()
    if not values:
        raise RuntimeError(f"no records on {topic}")
    return RecordSize(
        records=len(values),
        value_bytes=statistics.fmean(values),
        key_bytes=statistics.fmean(keys),
        header_bytes=statistics.fmean(headers),
    )


async def create_topic(bootstrap: str, topic: str, *, partitions: int) -> None:
    admin = _kafka(bootstrap).admin()
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name=topic, num_partitions=partitions, replication_factor=1)]
        )
    finally:
        await admin.close()


def _kafka(bootstrap: str) -> KafkaConnection:
    """The bench's own clients connect as the operator's principal (IKD_KAFKA_*)."""
    settings = load_settings(KafkaClientSettings)
    return KafkaConnection.from_settings(
        settings.model_copy(update={"kafka_bootstrap_servers": bootstrap})
    )
