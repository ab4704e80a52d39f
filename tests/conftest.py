"""Fixtures shared by every tier (the code behind them is in tests/support).

Integration and e2e tests use the broker and server that `make test` starts (deploy/scripts).
Each test gets its own database, a copy of its service's template migrated once per session.
A test that reads a topic from its start asks for `topic_prefix` (fresh topics of its own);
one that only needs the topics to exist can share `session_topic_prefix`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from ikd_shared.events import topics
from ikd_shared.kafka import delete_prefixed_topics, ensure_topics
from tests.support.databases import Database, DatabaseFactory, DatabaseTemplates, superuser_dsn
from tests.support.environment import KAFKA_BOOTSTRAP, REPO
from tests.support.kafka import kafka_connection


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The tier is the folder: tests/unit -> unit, tests/integration -> integration, ..."""
    for item in items:
        tier = Path(str(item.fspath)).relative_to(REPO / "tests").parts[0]
        if tier in ("unit", "integration", "e2e"):
            item.add_marker(getattr(pytest.mark, tier))


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    return KAFKA_BOOTSTRAP


async def _topics(bootstrap: str, prefix: str) -> AsyncIterator[str]:
    # The demo agencies' topics too: onboarding creates them, gateways may not.
    agencies = [topics.agency_topic(code) for code in os.environ["IKD_DEMO_AGENCIES"].split()]
    await ensure_topics(
        kafka_connection(bootstrap), prefix=prefix, specs=[*topics.ALL_TOPICS, *agencies]
    )
    yield prefix
    # Thousands of leftover partitions would eat the local broker's small heap.
    await delete_prefixed_topics(kafka_connection(bootstrap), prefix)


@pytest.fixture
async def topic_prefix(kafka_bootstrap: str) -> AsyncIterator[str]:
    """A fresh prefix with every declared topic created under it (empty), deleted afterwards."""
    async for prefix in _topics(kafka_bootstrap, f"t{uuid.uuid4().hex[:10]}."):
        yield prefix


@pytest.fixture(scope="session")
async def session_topic_prefix(kafka_bootstrap: str) -> AsyncIterator[str]:
    """Every declared topic under one prefix for the session: for tests that never read them."""
    async for prefix in _topics(kafka_bootstrap, f"s{uuid.uuid4().hex[:10]}."):
        yield prefix


@pytest.fixture(scope="session")
async def database_templates() -> AsyncIterator[DatabaseTemplates]:
    admin = await asyncpg.connect(superuser_dsn())
    templates = DatabaseTemplates(admin)
    try:
        yield templates
    finally:
        await templates.close()
        await admin.close()


@pytest.fixture
async def database_factory(database_templates: DatabaseTemplates) -> AsyncIterator[DatabaseFactory]:
    """Databases named after the service, copies of its migrated template; dropped afterwards."""
    created: list[Database] = []

    async def create(service: str, migrations_dir: Path) -> Database:
        database = await database_templates.copy(service, migrations_dir)
        created.append(database)
        return database

    try:
        yield create
    finally:
        for database in created:
            await database_templates.drop(database.name)
