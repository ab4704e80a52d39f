"""PostgreSQL plumbing: migrations with yoyo, asyncpg pools."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg
from yoyo import get_backend, read_migrations


def migrate(dsn: str, migrations_dir: Path) -> int:
    """Apply the pending migrations in `migrations_dir`; return how many were applied.

    `dsn` is a postgresql:// URL for the database owner role (migrations create and grant).
    """
    backend = get_backend(dsn.replace("postgresql://", "postgresql+psycopg://", 1))
    migrations = read_migrations(str(migrations_dir))
    with backend.lock():
        pending = backend.to_apply(migrations)
        backend.apply_migrations(pending)
    return len(pending)


async def create_pool(dsn: str, *, min_size: int = 1, max_size: int = 10, **kwargs: Any) -> Any:
    """An asyncpg pool; JSON and JSONB columns decode to Python values."""
    from ikd_shared import codec

    async def init(connection: asyncpg.Connection) -> None:
        for type_name in ("json", "jsonb"):
            await connection.set_type_codec(
                type_name,
                encoder=lambda v: codec.dumps(v).decode(),
                decoder=codec.loads,
                schema="pg_catalog",
            )

    return await asyncpg.create_pool(dsn, min_size=min_size, max_size=max_size, init=init, **kwargs)
