"""Kafka's own producer benchmark against the project's broker: the engine's ceiling.

Runs org.apache.kafka.tools.ProducerPerformance with the same record size and producer
settings (acks=all, idempotence) as the identity outbox relay.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KAFKA_LIB = REPO / ".run" / "kafka" / "lib"

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
    p99_ms: float


def run_producer_performance(
    bootstrap: str, topic: str, *, records: int, record_size: int
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
        p99_ms=float(match["p99"]),
    )
