"""Throwaway PostgreSQL databases, copied from one migrated template per service and session.

Per pytest session and service: two roles (`<template>_owner`, `<template>_app`) and a template
database migrated once. Per test: `CREATE DATABASE ... TEMPLATE`, a copy with the same roles,
schema and grants (the migrations grant to `current_database() || '_app'`, which was the
template's name when they ran). Names carry a per-session tag, so engineers running the suite
on the same server never share a template, and everything is dropped at the session's end.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg

from ikd_shared.db import migrate
from tests.support.environment import PG_HOST, PG_PORT, PG_SUPERUSER_PASSWORD

PG_PASSWORD = "dev-test-role-password"


def superuser_dsn(database: str = "postgres") -> str:
    return f"postgresql://postgres:{PG_SUPERUSER_PASSWORD}@{PG_HOST}:{PG_PORT}/{database}"


@dataclass(frozen=True)
class Database:
    """A throwaway database with the same roles as a real service database.

    `owner_dsn` owns the schema (it ran the migrations); `app_dsn` is the least-privileged
    runtime role (`<template>_app`), which is what the service itself connects with.
    """

    name: str
    owner_dsn: str
    app_dsn: str
    superuser_dsn: str


DatabaseFactory = Callable[[str, Path], Awaitable[Database]]


class DatabaseTemplates:
    """One migrated template per service for this session, and its copies."""

    def __init__(self, admin: asyncpg.Connection) -> None:
        self.admin = admin
        self.tag = f"s{uuid.uuid4().hex[:8]}"
        self._templates: dict[str, str] = {}
        self._lock = asyncio.Lock()

    def _dsn(self, role: str, database: str) -> str:
        return f"postgresql://{role}:{PG_PASSWORD}@{PG_HOST}:{PG_PORT}/{database}"

    async def template(self, service: str, migrations_dir: Path) -> str:
        async with self._lock:
            if service not in self._templates:
                name = f"ikd_{service}_{self.tag}"
                await self._create_migrated(name, migrations_dir)
                self._templates[service] = name
            return self._templates[service]

    async def _create_migrated(self, name: str, migrations_dir: Path) -> None:
        for role in (f"{name}_owner", f"{name}_app"):
            await self.admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{PG_PASSWORD}'")
        await self.admin.execute(f"CREATE DATABASE {name} OWNER {name}_owner")
        await asyncio.to_thread(migrate, self._dsn(f"{name}_owner", name), migrations_dir)
        # A template cannot be copied while anyone is connected to it; yoyo's connection may
        # outlive `migrate`, and nothing needs to connect to the template again.
        await self.admin.execute(f"ALTER DATABASE {name} WITH ALLOW_CONNECTIONS false")
        await self.admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1", name
        )

    async def copy(self, service: str, migrations_dir: Path) -> Database:
        template = await self.template(service, migrations_dir)
        name = f"{template}_{uuid.uuid4().hex[:8]}"
        owner, app = f"{template}_owner", f"{template}_app"
        await self.admin.execute(f"CREATE DATABASE {name} TEMPLATE {template} OWNER {owner}")
        # Database-level grants live in pg_database, not in the copied catalogs.
        await self.admin.execute(f"REVOKE CONNECT ON DATABASE {name} FROM PUBLIC")
        await self.admin.execute(f"GRANT CONNECT ON DATABASE {name} TO {app}")
        return Database(
            name=name,
            owner_dsn=self._dsn(owner, name),
            app_dsn=self._dsn(app, name),
            superuser_dsn=superuser_dsn(name),
        )

    async def drop(self, name: str) -> None:
        await self.admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    async def close(self) -> None:
        """Drop every database and role of this session (copies a test left behind too)."""
        copies = await self.admin.fetch(
            "SELECT datname FROM pg_database WHERE datname LIKE $1", f"ikd\\_%\\_{self.tag}\\_%"
        )
        for name in [row["datname"] for row in copies] + list(self._templates.values()):
            await self.drop(name)
        for template in self._templates.values():
            for role in (f"{template}_app", f"{template}_owner"):
                await self.admin.execute(f"DROP ROLE IF EXISTS {role}")
