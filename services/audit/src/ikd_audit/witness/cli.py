"""`ikd-audit witness`: run a witness of the audit log, read its alarms, check the log."""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    help="A witness of the audit log: cosigns checkpoints that extend what it saw before.",
    no_args_is_help=True,
)


def _settings() -> Any:
    from pydantic import ValidationError

    from ikd_audit.witness.config import WitnessSettings

    try:
        return WitnessSettings()
    except ValidationError as error:
        for item in error.errors():
            name = "IKD_WITNESS_" + str(item["loc"][0]).upper() if item["loc"] else ""
            typer.echo(f"ikd_audit witness: {name} {item['msg']}", err=True)
        raise typer.Exit(2) from None


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="default IKD_WITNESS_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="default IKD_WITNESS_PORT")] = None,
) -> None:
    """Poll the log, cosign what extends the last cosigned checkpoint, serve cosignatures."""
    from ikd_audit.witness.app import create_app
    from ikd_shared.logs import configure_logging
    from ikd_shared.serving import serve

    settings = _settings()
    configure_logging()
    serve(create_app(settings), host=host or settings.host, port=port or settings.port)


@app.command()
def alarms(
    database: Annotated[
        Path | None, typer.Option(help="the witness's file; default IKD_WITNESS_DATABASE")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per alarm")] = False,
) -> None:
    """List the alarms the witness recorded; exits 1 if there is any."""
    from ikd_audit.witness.store import WitnessStore

    path = database or Path(os.environ.get("IKD_WITNESS_DATABASE", "witness.sqlite3"))
    if not path.exists():
        typer.echo(f"no witness file at {path}", err=True)
        raise typer.Exit(2)
    store = WitnessStore(path)
    try:
        found = store.alarms()
    finally:
        store.close()
    for alarm in found:
        if as_json:
            typer.echo(json.dumps(alarm.document()))
        else:
            typer.echo(
                f"#{alarm.id} {alarm.observed_at} {alarm.origin} {alarm.kind}: {alarm.detail}"
            )
    if not found and not as_json:
        typer.echo("no alarms")
    if found:
        raise typer.Exit(1)


@app.command()
def vkey() -> None:
    """Print the witness's cosignature verifier key (give it to the log's operator)."""
    from ikd_audit.witness.app import build_witness
    from ikd_audit.witness.store import WitnessStore

    settings = _settings()
    store = WitnessStore(":memory:")
    typer.echo(build_witness(settings, store).vkey)


@app.command()
def check(
    log_url: Annotated[str, typer.Option(help="the log's base URL")],
    log_vkey: Annotated[str, typer.Option(help="the log's verifier key")],
    held: Annotated[Path, typer.Option("--checkpoint", help="a checkpoint you kept earlier")],
) -> None:
    """Check that the log still extends a checkpoint you kept; print the proof of a fork."""
    import httpx

    from ikd_audit.witness.checker import check_log
    from ikd_shared import checkpoint

    verifier = checkpoint.parse_vkey(log_vkey)

    async def run() -> Any:
        async with httpx.AsyncClient(base_url=log_url, timeout=10.0) as client:
            return await check_log(client, held.read_text(), verifier)

    result = asyncio.run(run())
    typer.echo(f"{result.verdict.upper()}: {result.detail}")
    for note in result.evidence:
        typer.echo("")
        typer.echo(note, nl=False)
    if not result.ok:
        raise typer.Exit(1)
