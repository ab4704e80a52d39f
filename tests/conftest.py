"""Fixtures shared by every tier.

Integration and e2e tests use the broker and server that `make test` starts (deploy/scripts);
each test gets its own topic prefix and its own database, so tests never see each other's data.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

from ikd_shared.db import migrate
from ikd_shared.kafka import delete_prefixed_topics, ensure_topics
from tests.kafka_auth import kafka_connection, use_admin_credentials

REPO = Path(__file__).resolve().parent.parent


def _load_dev_env() -> None:
    """deploy/dev.env, as `make test` exports it; a variable already set wins."""
    for line in (REPO / "deploy" / "dev.env").read_text().splitlines():
        name, separator, value = line.partition("=")
        if separator and not name.startswith("#"):
            os.environ.setdefault(name.strip(), value.strip())


_load_dev_env()
use_admin_credentials()
PG_HOST = os.environ.get("IKD_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ["PG_PORT"])
PG_SUPERUSER_PASSWORD = os.environ["IKD_PG_SUPERUSER_PASSWORD"]
PG_PASSWORD = "dev-test-role-password"

T = TypeVar("T")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tier is the folder: tests/unit -> unit, tests/integration -> integration, ..."""
    for item in items:
        tier = Path(str(item.fspath)).relative_to(REPO / "tests").parts[0]
        if tier in ("unit", "integration", "e2e"):
            item.add_marker(getattr(pytest.mark, tier))


async def eventually(
    probe: Callable[[], Awaitable[T | None]],
    *,
    timeout: float = 20.0,  # noqa: ASYNC109 - a polling deadline, not a cancellation timeout
    interval: float = 0.05,
) -> T:
    """Poll `probe` until it returns something other than None/False, or fail at the deadline."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        result = await probe()
        if result is not None and result is not False:
            return result
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    return os.environ["IKD_KAFKA_BOOTSTRAP_SERVERS"]


@pytest.fixture
async def topic_prefix(kafka_bootstrap: str) -> AsyncIterator[str]:
    """A fresh prefix with every declared topic created under it, deleted afterwards."""
    prefix = f"t{uuid.uuid4().hex[:10]}."
    await ensure_topics(kafka_connection(kafka_bootstrap), prefix=prefix)
    yield prefix
    # Thousands of leftover partitions would eat the local broker's small heap.
    await delete_prefixed_topics(kafka_connection(kafka_bootstrap), prefix)


def superuser_dsn(database: str = "postgres") -> str:
    return f"postgresql://postgres:{PG_SUPERUSER_PASSWORD}@{PG_HOST}:{PG_PORT}/{database}"


@dataclass(frozen=True)
class Database:
    """A throwaway database with the same roles as a real service database.

    `owner_dsn` ran the migrations; `app_dsn` is the least-privileged runtime role
    (`<name>_app`), which is what the service itself connects with.
    """

    name: str
    owner_dsn: str
    app_dsn: str
    superuser_dsn: str


DatabaseFactory = Callable[[str, Path], Awaitable[Database]]


@pytest.fixture
async def database_factory() -> AsyncIterator[DatabaseFactory]:
    """Create databases named after the service, migrated with its migrations folder."""
    created: list[str] = []
    admin = await asyncpg.connect(superuser_dsn())

    async def create(service: str, migrations_dir: Path) -> Database:
        name = f"ikd_{service}_t{uuid.uuid4().hex[:10]}"
        for role in (f"{name}_owner", f"{name}_app"):
            await admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{PG_PASSWORD}'")
        await admin.execute(f"CREATE DATABASE {name} OWNER {name}_owner")
        await admin.execute(f"REVOKE CONNECT ON DATABASE {name} FROM PUBLIC")
        await admin.execute(f"GRANT CONNECT ON DATABASE {name} TO {name}_app")
        created.append(name)
        base = f"{PG_HOST}:{PG_PORT}/{name}"
        database = Database(
            name=name,
            owner_dsn=f"postgresql://{name}_owner:{PG_PASSWORD}@{base}",
            app_dsn=f"postgresql://{name}_app:{PG_PASSWORD}@{base}",
            superuser_dsn=superuser_dsn(name),
        )
        await asyncio.to_thread(migrate, database.owner_dsn, migrations_dir)
        return database

    try:
        yield create
    finally:
        for name in created:
            await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            for role in (f"{name}_app", f"{name}_owner"):
                await admin.execute(f"DROP ROLE IF EXISTS {role}")
        await admin.close()


def env_for(**overrides: Any) -> dict[str, str]:
    """The process environment plus overrides, for settings built in a test."""
    env = dict(os.environ)
    env.update({key: str(value) for key, value in overrides.items()})
    return env
