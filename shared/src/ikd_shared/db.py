"""PostgreSQL plumbing: migrations with yoyo, asyncpg pools, the unit of work's transaction."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Any, Self

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


class PgUnitOfWork:
    """One pooled connection and one transaction for the length of an `async with` block.

    A clean exit commits and an exception rolls back: `__aexit__` is the only place of the
    project that does either. A service's unit of work subclasses this, binds its repositories
    to the connection in `_bind`, and may act after a commit in `_committed` (wake a relay).
    `snapshot`: a read-only repeatable-read transaction, so every read sees one moment.
    """

    def __init__(self, pool: asyncpg.Pool, *, snapshot: bool = False) -> None:
        self._pool = pool
        self._snapshot = snapshot
        self._connection: Any = None
        self._transaction: Any = None

    async def __aenter__(self) -> Self:
        connection: Any = await self._pool.acquire()
        try:
            transaction = (
                connection.transaction(isolation="repeatable_read", readonly=True)
                if self._snapshot
                else connection.transaction()
            )
            await transaction.start()
            self._bind(connection)
        except BaseException:
            await self._pool.release(connection)
            raise
        self._connection, self._transaction = connection, transaction
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        committed = False
        try:
            if exc_type is None:
                await self._transaction.commit()
                committed = True
            else:
                await self._transaction.rollback()
        finally:
            connection, self._connection = self._connection, None
            await self._pool.release(connection)
        if committed:
            await self._committed()

    @property
    def connection(self) -> Any:
        """The block's connection (only inside `async with`)."""
        if self._connection is None:
            raise RuntimeError("the unit of work is not open")
        return self._connection

    def _bind(self, connection: Any) -> None:
        """Create the repositories on `connection`."""
        raise NotImplementedError

    async def _committed(self) -> None:
        """Runs once after a successful commit."""
