"""Gateway integration fixtures: a migrated agency database, a producer, worker processes."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.kafka_auth import kafka_connection

_HERE = Path(__file__).resolve().parent
for _path in (_HERE, _HERE.parents[1] / "unit" / "gateway", _HERE.parents[2]):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from gateway_factories import Tokens  # noqa: E402
from gateway_integration import MIGRATIONS, Producer, WorkerProcess  # noqa: E402


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
