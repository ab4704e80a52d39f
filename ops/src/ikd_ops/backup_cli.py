"""`ikdctl backup` and `ikdctl restore` (docs/runbooks/backup-restore.md).

As the PostgreSQL superuser (IKD_PG_SUPERUSER_PASSWORD; it creates databases and roles and
restores owners and grants) and the bus's admin principal (IKD_KAFKA_*; it reads and creates
topics and ACLs).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from pathlib import Path
from typing import Annotated

import typer

from ikd_ops import backup as backups
from ikd_shared.kafka import KafkaConnection
from ikd_shared.settings import KafkaClientSettings, load_settings


def _kafka(enabled: bool) -> KafkaConnection | None:
    if not enabled:
        return None
    return KafkaConnection.from_settings(load_settings(KafkaClientSettings), client_id="ikdctl")


def backup(
    out: Annotated[Path, typer.Argument(help="a new or empty folder for the backup")],
    database: Annotated[
        list[str] | None,
        typer.Option(
            help="a database to back up (repeatable; default: identity, audit, "
            "each gateway of IKD_DEMO_AGENCIES)"
        ),
    ] = None,
    topics: Annotated[bool, typer.Option(help="also the topic configuration and ACLs")] = True,
    topic_prefix: Annotated[str, typer.Option(help="topic name prefix")] = os.environ.get(
        "IKD_KAFKA_TOPIC_PREFIX", ""
    ),
) -> None:
    """Dump every service database and the topic configuration, with a checksummed manifest."""
    names = database or backups.default_databases(os.environ.get("IKD_DEMO_AGENCIES", "").split())
    try:
        asyncio.run(
            backups.backup(
                out,
                server=backups.PgServer.from_env(),
                databases=names,
                kafka=_kafka(topics),
                topic_prefix=topic_prefix,
                say=typer.echo,
            )
        )
    except backups.BackupError as error:
        typer.echo(f"backup failed: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"backup written to {out / backups.MANIFEST}")


def restore(
    folder: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="a backup")],
    database: Annotated[
        list[str] | None,
        typer.Option(help="restore only this database (repeatable; default: all)"),
    ] = None,
    rename: Annotated[
        list[str] | None,
        typer.Option(help="NAME=NEW: restore database NAME as NEW (repeatable)"),
    ] = None,
    topics: Annotated[bool, typer.Option(help="also create missing topics and apply ACLs")] = True,
    rewind_group: Annotated[
        list[str] | None,
        typer.Option(help="a consumer group to re-read from the backup's start (repeatable)"),
    ] = None,
    rewind_margin_seconds: Annotated[
        int, typer.Option(min=0, help="rewind this much before the backup began")
    ] = 300,
    replication_factor: Annotated[
        int | None, typer.Option(min=1, help="for created topics (default: as recorded)")
    ] = None,
) -> None:
    """Check the checksums, then restore into fresh databases, and the topics and ACLs."""
    renames = dict(pair.split("=", 1) for pair in rename or [])
    try:
        timings = asyncio.run(
            backups.restore(
                folder,
                server=backups.PgServer.from_env(),
                kafka=_kafka(topics),
                rename=renames,
                only=database,
                replication_factor=replication_factor,
                rewind_groups=rewind_group or (),
                rewind_margin=dt.timedelta(seconds=rewind_margin_seconds),
                say=typer.echo,
            )
        )
    except backups.BackupError as error:
        typer.echo(f"restore failed: {error}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"restored in {sum(timings.values()):.1f} s")
