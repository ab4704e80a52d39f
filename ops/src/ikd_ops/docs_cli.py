"""`ikdctl docs`: generate and check the event docs (AsyncAPI 3, JSON Schemas) in docs/events/."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ikd_dev import event_docs

ROOT = Path(__file__).resolve().parents[3]
DEFAULT_OUT = ROOT / "docs" / "events"

docs_app = typer.Typer(
    help="Event docs for agency developers: AsyncAPI 3 and a JSON Schema per event type.",
    no_args_is_help=True,
)

OutDir = Annotated[Path, typer.Option("--out", help="folder of the event docs", file_okay=False)]


@docs_app.command("generate")
def generate(out: OutDir = DEFAULT_OUT) -> None:
    """Write docs/events/asyncapi.yaml and docs/events/schemas/*.json from the event models."""
    changed = event_docs.write(out)
    if changed:
        typer.echo(f"event docs: {len(changed)} file(s) written under {out}")
        for name in changed:
            typer.echo(f"  {name}")
    else:
        typer.echo(f"event docs under {out} are up to date")


@docs_app.command("check")
def check(out: OutDir = DEFAULT_OUT) -> None:
    """Exit 1 if the committed event docs differ from what the models generate."""
    stale = event_docs.differences(out)
    if stale:
        typer.echo(
            f"event docs under {out} are stale ({', '.join(stale)}); run `ikdctl docs generate`",
            err=True,
        )
        raise typer.Exit(1)
    typer.echo(f"event docs under {out} are up to date")
