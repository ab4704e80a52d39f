"""`ikdctl deadletters list|show|replay`: what the consumers set aside, and why.

Connects as the operator's principal (IKD_KAFKA_*, the admin): it reads the dead-letter topics
and writes to the source topics, which no service principal may do (docs/runbooks/dead-letters.md).
"""

from __future__ import annotations

import asyncio
import os
from typing import Annotated

import typer

from ikd_ops import deadletters
from ikd_shared.kafka import KafkaConnection
from ikd_shared.settings import KafkaClientSettings, load_settings

deadletters_app = typer.Typer(
    help="Records the consumers could not process: list, show, replay.", no_args_is_help=True
)

PrefixOption = Annotated[str, typer.Option(help="topic name prefix")]
TopicOption = Annotated[
    str | None, typer.Option(help="one dead-letter topic (its name without the prefix)")
]


def _conn() -> KafkaConnection:
    return KafkaConnection.from_settings(load_settings(KafkaClientSettings), client_id="ikdctl")


PREFIX = os.environ.get("IKD_KAFKA_TOPIC_PREFIX", "")


def _topics(prefix: str, topic: str | None) -> list[str]:
    names = [spec.full_name(prefix) for spec in deadletters.DEAD_LETTER_TOPICS]
    if topic is None:
        return names
    wanted = f"{prefix}{topic}"
    if wanted not in names:
        raise typer.BadParameter(f"not a dead-letter topic: {topic}", param_hint="--topic")
    return [wanted]


def _show_key(key: bytes | None) -> str:
    return "-" if key is None else key.decode(errors="replace")


@deadletters_app.command("list")
def list_(prefix: PrefixOption = PREFIX, topic: TopicOption = None) -> None:
    """Each dead letter: topic, partition:offset, key, reason code and reason, time, replayed."""

    async def run() -> list[deadletters.DeadLetters]:
        conn = _conn()
        return [await deadletters.read(conn, name) for name in _topics(prefix, topic)]

    try:
        found = asyncio.run(run())
    except LookupError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    total = 0
    for letters in found:
        for record in letters.records:
            total += 1
            replayed = letters.replayed.get(record.ref)
            typer.echo(
                "\t".join(
                    [
                        record.topic,
                        record.ref,
                        _show_key(record.key),
                        record.time.isoformat(timespec="seconds"),
                        record.header("dlq_service") or "-",
                        record.reason_code,
                        record.reason,
                        f"replayed to {replayed}" if replayed else "not replayed",
                    ]
                )
            )
    typer.echo(f"{total} dead letters", err=True)


@deadletters_app.command("show")
def show(
    topic: Annotated[str, typer.Argument(help="the dead-letter topic, without the prefix")],
    ref: Annotated[str, typer.Argument(help="partition:offset, as `list` prints it")],
    prefix: PrefixOption = PREFIX,
) -> None:
    """One dead letter with every header and its value."""
    [name] = _topics(prefix, topic)
    partition, offset = _parse_ref(ref)
    try:
        letters = asyncio.run(deadletters.read(_conn(), name))
        record = letters.find(partition, offset)
    except LookupError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"topic: {record.topic}\nposition: {record.ref}")
    typer.echo(f"time: {record.time.isoformat()}\nkey: {_show_key(record.key)}")
    replayed = letters.replayed.get(record.ref)
    typer.echo(f"replayed: {replayed or 'no'}")
    typer.echo("headers:")
    for header, raw in record.headers:
        typer.echo(f"  {header}: {raw.decode(errors='replace')}")
    value = "(none)" if record.value is None else record.value.decode(errors="replace")
    typer.echo(f"value: {value}")


@deadletters_app.command("replay")
def replay(
    topic: Annotated[str, typer.Argument(help="the dead-letter topic, without the prefix")],
    refs: Annotated[
        list[str] | None, typer.Argument(help="partition:offset of each record (default: all)")
    ] = None,
    prefix: PrefixOption = PREFIX,
    again: Annotated[
        bool, typer.Option(help="also records already replayed (the consumers' guards apply)")
    ] = False,
    dry_run: Annotated[bool, typer.Option(help="only say what would be replayed")] = False,
) -> None:
    """Send dead letters back to the topic they were consumed from, each once."""
    [name] = _topics(prefix, topic)

    async def run() -> list[deadletters.Replayed]:
        conn = _conn()
        letters = await deadletters.read(conn, name)
        selected = None
        if refs:
            selected = [letters.find(*_parse_ref(ref)) for ref in refs]
        return await deadletters.replay(conn, letters, selected, again=again, dry_run=dry_run)

    try:
        results = asyncio.run(run())
    except LookupError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(1) from None
    for result in results:
        to = f" -> {result.to}" if result.to else ""
        typer.echo(f"{result.record.topic}\t{result.record.ref}\t{result.outcome}{to}")
    done = sum(r.outcome == "replayed" for r in results)
    typer.echo(f"{done} replayed, {len(results) - done} not", err=True)


def _parse_ref(ref: str) -> tuple[int, int]:
    try:
        partition, offset = ref.split(":")
        return int(partition), int(offset)
    except ValueError:
        raise typer.BadParameter(f"{ref!r} is not partition:offset") from None
