"""`ikd-audit prune` and the in-process pruner: long-expired seen credentials go, the log stays."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from typing import Any
from unittest import mock

import asyncpg
import pytest
from typer.testing import CliRunner

from ikd_audit.bootstrap import AuditRuntime
from ikd_audit.cli import app as cli
from tests.support.audit import Keys, access, audit_env


async def seed(runtime: AuditRuntime) -> None:
    now = dt.datetime.now(dt.UTC)
    for jti, expired_ago in [("old", 3 * 86400), ("recent", 3600), ("live", -300)]:
        async with runtime.uow() as uow:
            assert await uow.credentials.remember(jti, now - dt.timedelta(seconds=expired_ago))
    await runtime.log.record([access(), access()])
    await runtime.log.sign_tree_head()


async def remaining(dsn: str) -> tuple[list[str], int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        jtis = [r["jti"] for r in await conn.fetch("SELECT jti FROM seen_credential ORDER BY jti")]
        return (
            jtis,
            await conn.fetchval("SELECT count(*) FROM log_entry"),
            await conn.fetchval("SELECT count(*) FROM tree_head"),
        )
    finally:
        await conn.close()


async def test_prune_cli_deletes_only_credentials_expired_past_the_grace(
    runtime: AuditRuntime, audit_db: Any, keys: Keys
) -> None:
    await seed(runtime)
    env = audit_env(keys, audit_db.app_dsn, "unused.")
    env["IKD_AUDIT_MIGRATION_DATABASE_URL"] = audit_db.owner_dsn

    def run(*args: str) -> Any:
        with mock.patch.dict(os.environ, env):
            return CliRunner().invoke(cli, ["prune", *args])

    result = await asyncio.to_thread(run)  # default grace: one day
    assert result.exit_code == 0, result.output
    assert "pruned 1 seen credential(s)" in result.output
    assert await remaining(audit_db.owner_dsn) == (["live", "recent"], 2, 1)

    result = await asyncio.to_thread(run, "--grace", "60")
    assert result.exit_code == 0, result.output
    assert "pruned 1 seen credential(s)" in result.output
    assert await remaining(audit_db.owner_dsn) == (["live"], 2, 1)

    assert (await asyncio.to_thread(run, "--grace", "-1")).exit_code == 2


async def test_the_runtime_role_prunes_only_through_the_function(
    runtime: AuditRuntime, audit_db: Any
) -> None:
    await seed(runtime)
    # a negative grace is treated as zero: an unexpired credential can never be pruned
    assert await runtime.log.prune_seen_credentials(dt.timedelta(days=-30)) == 2
    assert await remaining(audit_db.owner_dsn) == (["live"], 2, 1)
    conn = await asyncpg.connect(audit_db.app_dsn)
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.execute("DELETE FROM seen_credential")
    finally:
        await conn.close()
    assert await remaining(audit_db.owner_dsn) == (["live"], 2, 1)
