"""Throwaway PostgreSQL databases, copied from one migrated template per service and session.

Per pytest session and service: two roles (`<template>_owner`, `<template>_app`; audit also has
`<template>_signer` for its tree-head signer) and a template database migrated once. Per test:
`CREATE DATABASE ... TEMPLATE`, a copy with the same roles, schema and grants (the migrations
grant to `current_database() || '_app'` and `'_signer'`, named after the template when they
ran). Names carry a per-session tag, so engineers running the suite on the same server never
share a template, and everything is dropped at the session's end.
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
# Runtime roles besides `_app` that a service's migrations grant to.
EXTRA_ROLES = {"audit": ("signer",)}


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
    signer_dsn: str | None = None  # audit's signer role


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
                await self._create_migrated(name, migrations_dir, EXTRA_ROLES.get(service, ()))
                self._templates[service] = name
            return self._templates[service]

    def _roles(self, template: str) -> list[str]:
        service = next(s for s, name in self._templates.items() if name == template)
        return [f"{template}_{role}" for role in ("owner", "app", *EXTRA_ROLES.get(service, ()))]

    async def _create_migrated(
        self, name: str, migrations_dir: Path, extra_roles: tuple[str, ...]
    ) -> None:
        for role in (f"{name}_owner", f"{name}_app", *(f"{name}_{r}" for r in extra_roles)):
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
        runtime_roles = self._roles(template)[1:]
        for role in runtime_roles:
            await self.admin.execute(f"GRANT CONNECT ON DATABASE {name} TO {role}")
        signer = f"{template}_signer"
        return Database(
            name=name,
            owner_dsn=self._dsn(owner, name),
            app_dsn=self._dsn(app, name),
            superuser_dsn=superuser_dsn(name),
            signer_dsn=self._dsn(signer, name) if signer in runtime_roles else None,
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
            for role in reversed(self._roles(template)):
                await self.admin.execute(f"DROP ROLE IF EXISTS {role}")
