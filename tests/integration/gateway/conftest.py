"""Gateway integration fixtures: a migrated agency database, a producer, worker processes."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.support.gateway import MIGRATIONS, Producer, WorkerProcess
from tests.support.gateway_factories import Tokens
from tests.support.kafka import kafka_connection


@pytest.fixture(scope="session")
def tokens() -> Tokens:
    return Tokens()


@pytest.fixture
async def gateway_db(database_factory: Any) -> Any:
    return await database_factory("gateway", MIGRATIONS)


@pytest.fixture
async def db(gateway_db: Any) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(gateway_db.app_dsn)
    yield conn
    await conn.close()


@pytest.fixture
async def producer(kafka_bootstrap: str) -> AsyncIterator[Producer]:
    raw = kafka_connection(kafka_bootstrap).producer()
    await raw.start()
    yield Producer(raw)
    await raw.stop()


@pytest.fixture
def worker_factory(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], WorkerProcess]]:
    workers: list[WorkerProcess] = []

    def make(env: dict[str, str]) -> WorkerProcess:
        worker = WorkerProcess(env, tmp_path / f"worker-{len(workers)}.log")
        workers.append(worker)
        return worker

    yield make
    for worker in workers:
        worker.stop()
