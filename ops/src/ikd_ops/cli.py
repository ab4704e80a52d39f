"""ikdctl: operate the platform (topics, status, demo, bulk load, audit verification)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import typer

from ikd_shared.db import migrate
from ikd_shared.kafka import ensure_topics, wait_for_broker

app = typer.Typer(help="Operate the IKD MPP platform.", no_args_is_help=True)
topics_app = typer.Typer(help="Kafka topics declared by the project.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")


def _bootstrap() -> str:
    return os.environ.get("IKD_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:19092")


@topics_app.command("ensure")
def topics_ensure(
    prefix: str = typer.Option(os.environ.get("IKD_KAFKA_TOPIC_PREFIX", ""), help="name prefix"),
    replication_factor: int = typer.Option(
        int(os.environ.get("IKD_KAFKA_REPLICATION_FACTOR", "1")), min=1
    ),
) -> None:
    """Create every declared topic that does not exist yet (idempotent)."""

    async def run() -> list[str]:
        await wait_for_broker(_bootstrap())
        return await ensure_topics(
            _bootstrap(), prefix=prefix, replication_factor=replication_factor
        )

    created = asyncio.run(run())
    typer.echo(f"topics: {len(created)} created" + (f" ({', '.join(created)})" if created else ""))


db_app = typer.Typer(help="Service databases.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("migrate")
def db_migrate(
    migrations: Path = typer.Argument(..., exists=True, file_okay=False, help="yoyo folder"),
    dsn: str = typer.Argument(..., help="postgresql:// URL of the database's owner role"),
) -> None:
    """Apply a service's pending migrations to its database."""
    applied = migrate(dsn, migrations)
    typer.echo(f"{migrations.parent.name}: {applied} migrations applied")
