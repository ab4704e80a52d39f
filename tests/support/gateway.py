"""Gateway integration helpers: a CloudEvent producer, settings environment, worker processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaProducer

from ikd_gateway.bootstrap import Gateway, bootstrap
from ikd_gateway.config import GatewaySettings
from ikd_shared.events.envelope import CloudEvent, to_kafka
from tests.support.environment import REPO
from tests.support.gateway_factories import Tokens
from tests.support.kafka import kafka_connection

MIGRATIONS = REPO / "services" / "agency_gateway" / "migrations"


class Producer:
    def __init__(self, producer: AIOKafkaProducer) -> None:
        self.producer = producer

    async def send(self, topic: str, event: CloudEvent) -> None:
        record = to_kafka(event)
        await self.producer.send_and_wait(
            topic, value=record.value, key=record.key, headers=record.headers
        )

    async def send_raw(
        self, topic: str, key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]
    ) -> None:
        await self.producer.send_and_wait(topic, value=value, key=key, headers=headers)


def gateway_env(
    agency: str, database: Any, prefix: str, tokens: Tokens, tmp_path: Path, **extra: Any
) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "IKD_ENVIRONMENT": "development",
            "IKD_KAFKA_TOPIC_PREFIX": prefix,
            "IKD_GATEWAY_AGENCY": agency,
            "IKD_GATEWAY_DATABASE_URL": database.app_dsn,
            "IKD_GATEWAY_TOKEN_JWKS": json.dumps(tokens.jwks()),
            "IKD_GATEWAY_DATA_DIR": str(tmp_path / f"faust-{agency}"),
            "IKD_GATEWAY_RELAY_INTERVAL_SECONDS": "0.05",
            "IKD_GATEWAY_WEBHOOK_POLL_SECONDS": "0.05",
            "IKD_GATEWAY_WEBHOOK_ALLOW_PRIVATE_TARGETS": "true",
            "IKD_GATEWAY_SESSION_TIMEOUT_SECONDS": "6",
        }
    )
    env.update({key: str(value) for key, value in extra.items()})
    return env


class WorkerProcess:
    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.env = env
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ikd_gateway", "worker", "--loglevel", "WARNING"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final offset commit (a crash)."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]


async def read_topic(
    bootstrap_servers: str, topic: str, count: int, wait_seconds: float = 20.0
) -> list[Any]:
    consumer = kafka_connection(bootstrap_servers).consumer(
        topic, group=None, auto_offset_reset="earliest"
    )
    await consumer.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + wait_seconds
        while len(records) < count and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for messages in batch.values():
                records.extend(messages)
    finally:
        await consumer.stop()
    return records


@contextlib.asynccontextmanager
async def running_gateway(
    agency: str,
    database: Any,
    prefix: str,
    tokens: Tokens,
    tmp_path: Path,
    *,
    configure: dict[str, Any] | None = None,
    **overrides: Any,
) -> AsyncIterator[Gateway]:
    """A started runtime: `configure` updates its settings, `overrides` go to bootstrap."""
    env = gateway_env(agency, database, prefix, tokens, tmp_path)
    settings = GatewaySettings(
        **{  # type: ignore[arg-type]
            "agency": agency,
            "database_url": database.app_dsn,
            "token_jwks": env["IKD_GATEWAY_TOKEN_JWKS"],
            "webhook_allow_private_targets": True,
        }
    )
    settings = settings.model_copy(update={"kafka_topic_prefix": prefix, **(configure or {})})
    async with bootstrap(settings, pool_size=2, **overrides) as gateway:
        yield gateway


async def only_a_floor(db: asyncpg.Connection, pseudonym: str) -> bool:
    """Whether all that is left of a citizen no longer held is a version floor: the pseudonym,
    the last version and the floor's end, no personal data."""
    return bool(
        await db.fetchval(
            """SELECT data = '{}' AND expires = '{}' AND relationships = '[]'
                 AND verified_at IS NULL AND NOT erased AND source_partition IS NULL
                 AND source_offset IS NULL AND next_expiry IS NOT NULL
               FROM citizen_view WHERE pseudonym = $1""",
            pseudonym,
        )
    )


async def view_row(db: asyncpg.Connection, pseudonym: str) -> dict[str, Any] | None:
    """A citizen's row of the agency's view, JSON decoded (None: nothing held)."""
    row = await db.fetchrow(
        "SELECT version, data, erased, relationships FROM citizen_view WHERE pseudonym = $1",
        pseudonym,
    )
    if row is None:
        return None
    return {
        "version": row["version"],
        "data": json.loads(row["data"]),
        "erased": row["erased"],
        "relationships": json.loads(row["relationships"]),
    }


async def prefill_by_nik(
    client: httpx.AsyncClient, service: str, nik: str, headers: dict[str, str]
) -> httpx.Response:
    """Ask the gateway's prefill API for one service's fields of the citizen with this NIK."""
    return await client.post(f"/v1/prefill/{service}/lookup", json={"nik": nik}, headers=headers)
