"""`ikd-audit`: migrate, serve, signer, verify, export, prune, auditors, vkey, witness."""

from __future__ import annotations

import asyncio
import secrets
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from ikd_audit.witness.cli import app as witness_app
from ikd_shared import codec, merkle
from ikd_shared.transparency import (
    load_public_key,
    verify_consistency_bundle,
    verify_inclusion_bundle,
    verify_log,
)

MIGRATIONS = Path(__file__).resolve().parent / "migrations"

app = typer.Typer(help="IKD MPP audit service: tamper-evident access log.", no_args_is_help=True)
auditors = typer.Typer(help="Console sign-in for auditors.", no_args_is_help=True)
app.add_typer(auditors, name="auditors")
app.add_typer(witness_app, name="witness")
report_app = typer.Typer(
    help="Signed per-agency reports, anchored in a checkpoint.", no_args_is_help=True
)
app.add_typer(report_app, name="report")
anomalies_app = typer.Typer(help="Access-pattern alerts.", no_args_is_help=True)
app.add_typer(anomalies_app, name="anomalies")


def _settings() -> Any:
    from ikd_audit.config import AuditSettings
    from ikd_shared.settings import load_settings

    return load_settings(AuditSettings)


def _signer_settings() -> Any:
    from ikd_audit.config import SignerSettings
    from ikd_shared.settings import load_settings

    return load_settings(SignerSettings)


@app.command()
def migrate() -> None:
    """Apply database migrations with IKD_AUDIT_MIGRATION_DATABASE_URL (the owner role)."""
    from ikd_shared.db import migrate as run_migrations

    settings = _settings()
    if settings.migration_database_url is None:
        typer.echo("ikd_audit: setting IKD_AUDIT_MIGRATION_DATABASE_URL is missing", err=True)
        raise typer.Exit(2)
    applied = run_migrations(settings.migration_database_url, MIGRATIONS)
    typer.echo(f"applied {applied} migration(s)")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="default IKD_AUDIT_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="default IKD_AUDIT_PORT")] = None,
) -> None:
    """Run the API, console and access-event consumer (tree heads: `ikd-audit signer`)."""
    from ikd_audit.entrypoints.app import create_app
    from ikd_shared.logs import configure_logging
    from ikd_shared.serving import serve

    settings = _settings()
    configure_logging()
    serve(create_app(settings), host=host or settings.host, port=port or settings.port)


@app.command()
def signer(
    host: Annotated[str | None, typer.Option(help="default IKD_SIGNER_HOST")] = None,
    port: Annotated[int | None, typer.Option(help="default IKD_SIGNER_PORT")] = None,
) -> None:
    """Run the tree-head signer: the one process with the signing key (IKD_SIGNER_*)."""
    from ikd_audit.entrypoints.signer import create_signer_app
    from ikd_shared.logs import configure_logging
    from ikd_shared.serving import serve

    settings = _signer_settings()
    configure_logging()
    serve(create_signer_app(settings), host=host or settings.host, port=port or settings.port)


def _read_json(path: Path) -> Any:
    return codec.loads(path.read_bytes())


@app.command()
def verify(
    public_key: Annotated[Path, typer.Option(help="the log's Ed25519 public key (PEM)")],
    log: Annotated[Path | None, typer.Option(help="exported log (JSON lines)")] = None,
    inclusion: Annotated[Path | None, typer.Option(help="inclusion proof bundle (JSON)")] = None,
    consistency: Annotated[Path | None, typer.Option(help="consistency proof (JSON)")] = None,
) -> None:
    """Check an exported log or proofs against signed tree heads, trusting no database."""
    key = load_public_key(public_key.read_bytes())
    if sum(x is not None for x in (log, inclusion, consistency)) != 1:
        typer.echo("give exactly one of --log, --inclusion, --consistency", err=True)
        raise typer.Exit(2)
    if log is not None:
        with sys.stdin if str(log) == "-" else log.open("rb") as stream:
            records = (codec.loads(line) for line in stream if line.strip())
            report = verify_log(records, key)
        typer.echo(report.summary())
        if not report.ok:
            if report.first_bad_position is not None:
                typer.echo(f"first bad position: {report.first_bad_position}")
            raise typer.Exit(1)
        return
    try:
        if inclusion is not None:
            typer.echo(verify_inclusion_bundle(_read_json(inclusion), key))
        elif consistency is not None:
            typer.echo(verify_consistency_bundle(_read_json(consistency), key))
    except (merkle.ProofError, KeyError, ValueError, TypeError) as error:
        typer.echo(f"FAILED: {error}")
        raise typer.Exit(1) from None


@app.command()
def export(
    out: Annotated[Path, typer.Option(help="file to write; - for stdout")] = Path("-"),
) -> None:
    """Write the whole log (tree heads and entries) as JSON lines for `verify --log`."""
    from ikd_audit.bootstrap import bootstrap

    settings = _settings()

    async def run() -> int:
        count = 0
        async with bootstrap(settings) as runtime:
            with sys.stdout.buffer if str(out) == "-" else out.open("wb") as stream:
                async for record in runtime.log.export():
                    stream.write(codec.dumps(record) + b"\n")
                    count += 1
        return count

    count = asyncio.run(run())
    if str(out) != "-":
        typer.echo(f"wrote {count} records to {out}")


@app.command()
def prune(
    grace: Annotated[
        float | None,
        typer.Option(help="seconds after expiry; default IKD_AUDIT_SEEN_CREDENTIAL_GRACE_SECONDS"),
    ] = None,
) -> None:
    """Delete replay-protection rows of long-expired credentials (owner role; the log stays)."""
    import datetime as dt

    from ikd_audit.bootstrap import bootstrap

    settings = _settings()
    if settings.migration_database_url is None:
        typer.echo("ikd_audit: setting IKD_AUDIT_MIGRATION_DATABASE_URL is missing", err=True)
        raise typer.Exit(2)
    seconds = settings.seen_credential_grace_seconds if grace is None else grace
    if seconds < 0:
        typer.echo("the grace period cannot be negative", err=True)
        raise typer.Exit(2)

    async def run() -> int:
        async with bootstrap(settings, database_url=settings.migration_database_url) as runtime:
            return await runtime.log.prune_seen_credentials(dt.timedelta(seconds=seconds))

    typer.echo(f"pruned {asyncio.run(run())} seen credential(s)")


@app.command("public-key")
def public_key() -> None:
    """Print the public key that verifies this log's tree heads (from the signer's settings)."""
    from ikd_shared.transparency import public_key_pem

    settings = _signer_settings()
    typer.echo(public_key_pem(settings.note_signer.private_key.public_key()), nl=False)


@app.command()
def vkey() -> None:
    """Print the log's verifier key (c2sp.org/signed-note) from the signer's key and origin:
    the service's IKD_AUDIT_LOG_VKEY and every witness's IKD_WITNESS_LOG_VKEY."""
    typer.echo(_signer_settings().note_signer.verifier.vkey)


@auditors.command("add")
def add_auditor(
    client_id: Annotated[str, typer.Option("--id", help="the auditor's client id")],
    secret: Annotated[
        str | None,
        typer.Option(help="the secret itself: development only (ps shows it)"),
    ] = None,
    secret_file: Annotated[
        Path | None,
        typer.Option(help="read the secret from this file; - reads standard input"),
    ] = None,
) -> None:
    """Create an auditor (or rotate its secret); only an argon2 hash is stored.

    The secret comes from --secret-file, or IKD_AUDIT_NEW_AUDITOR_SECRET; without either a new
    one is generated and shown once.
    """
    import os
    import re

    from ikd_audit.bootstrap import bootstrap
    from ikd_audit.entrypoints.console import hash_secret
    from ikd_shared.settings import secret_option

    if not re.fullmatch(r"[A-Za-z0-9._-]{3,64}", client_id):
        typer.echo("the id needs 3-64 letters, digits, '.', '_' or '-'", err=True)
        raise typer.Exit(2)
    settings = _settings()
    generated = False
    try:
        secret = secret_option(secret, secret_file, development=settings.is_development)
    except ValueError as error:
        typer.echo(f"ikd_audit: {error}", err=True)
        raise typer.Exit(2) from None
    secret = secret or os.environ.get("IKD_AUDIT_NEW_AUDITOR_SECRET")
    if not secret:
        secret, generated = secrets.token_urlsafe(24), True
    if len(secret) < 12:
        typer.echo("the secret needs at least 12 characters", err=True)
        raise typer.Exit(2)

    async def run() -> None:
        async with bootstrap(settings) as runtime:
            await runtime.auditors.save(client_id, hash_secret(secret))

    asyncio.run(run())
    typer.echo(f"auditor {client_id} saved")
    if generated:
        typer.echo(f"secret (shown once): {secret}")


def _time_option(value: str) -> Any:
    import datetime as dt

    parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise typer.BadParameter("give a timezone (Z or +07:00)")
    return parsed


def _read_vkey(value: str) -> Any:
    from ikd_shared import checkpoint

    text = Path(value[1:]).read_text() if value.startswith("@") else value
    return checkpoint.parse_vkey(text.strip())


def _report_signer(key_file: Path | None, name: str | None) -> Any:
    """The report key from --key-file, or from IKD_REPORT_SIGNING_KEY (never serve's settings)."""
    from ikd_audit.config import ReportSettings
    from ikd_shared import checkpoint
    from ikd_shared.settings import load_settings

    if key_file is not None:
        return checkpoint.signer_from_pem(name or "ikd-audit-report", key_file.read_bytes())
    settings = load_settings(ReportSettings)
    if name is not None:
        return checkpoint.signer_from_pem(name, settings.signing_key.get_secret_value())
    return settings.note_signer


@report_app.command("make")
def make_report(
    since: Annotated[str, typer.Option("--from", help="period start, ISO 8601 with zone")],
    until: Annotated[str, typer.Option("--to", help="period end (exclusive)")],
    out: Annotated[Path, typer.Option(help="a file for one agency, a directory for all")],
    agency: Annotated[str | None, typer.Option(help="one agency; default: every agency")] = None,
    key_file: Annotated[
        Path | None, typer.Option(help="report key (PEM); default IKD_REPORT_SIGNING_KEY")
    ] = None,
    key_name: Annotated[str | None, typer.Option(help="the report key's note name")] = None,
) -> None:
    """Count each agency's entries in a period from a fresh checkpoint, and sign the counts.

    Run it after each period (a monthly timer, say); `report verify` checks a report offline.
    """
    from ikd_audit.bootstrap import bootstrap

    signer = _report_signer(key_file, key_name)
    settings = _settings()
    start, end = _time_option(since), _time_option(until)
    if start >= end:
        typer.echo("--from must be before --to", err=True)
        raise typer.Exit(2)

    async def run() -> list[str]:
        written = []
        async with bootstrap(settings) as runtime:
            names = [agency] if agency else await runtime.patterns.agencies(start=start, end=end)
            for name in names:
                signed = await runtime.patterns.report(name, start=start, end=end, signer=signer)
                target = out / f"{name}.report.json" if agency is None else out
                if agency is None:
                    out.mkdir(parents=True, exist_ok=True)
                target.write_bytes(codec.dumps(signed.document()) + b"\n")
                written.append(
                    f"{target}: {name}, {signed.report.total} entries, "
                    f"tree {signed.report.tree_size}"
                )
        return written

    for line in asyncio.run(run()):
        typer.echo(line)


@report_app.command("vkey")
def report_vkey(
    key_file: Annotated[Path | None, typer.Option(help="report key (PEM)")] = None,
    key_name: Annotated[str | None, typer.Option(help="the report key's note name")] = None,
) -> None:
    """Print the report key's verifier key, for `report verify --report-vkey`."""
    typer.echo(_report_signer(key_file, key_name).verifier.vkey)


@report_app.command("verify")
def verify_report(
    report: Annotated[Path, typer.Argument(help="a report written by `report make`")],
    report_vkey: Annotated[str, typer.Option(help="the report key's vkey, or @file")],
    log_vkey: Annotated[str, typer.Option(help="the log's vkey, or @file")],
    witness_vkey: Annotated[
        list[str] | None, typer.Option(help="a witness's vkey (repeatable): must have cosigned")
    ] = None,
    log: Annotated[
        Path | None, typer.Option(help="an export of the log (JSON lines): recount from it")
    ] = None,
) -> None:
    """Check a report offline: its signature, its checkpoint's, and (with --log) its counts."""
    from ikd_audit.domain import report as reports
    from ikd_audit.domain.patterns import count_report
    from ikd_shared.transparency import Entry, TreeHead

    try:
        document = codec.loads(report.read_bytes())
        witnesses = [_read_vkey(v) for v in witness_vkey or []]
        checked = reports.verify(
            document["report"],
            document["checkpoint"],
            report_key=_read_vkey(report_vkey),
            log_key=_read_vkey(log_vkey),
            witnesses=witnesses,
        )
    except (reports.ReportError, KeyError, TypeError, ValueError) as error:
        typer.echo(f"FAILED: {error}")
        raise typer.Exit(1) from None
    cosigners = {v.verifier.name for v in checked.checkpoint.cosignatures}
    missing = [w.name for w in witnesses if w.name not in cosigners]
    if missing:
        typer.echo(f"FAILED: not cosigned by {', '.join(missing)}")
        raise typer.Exit(1)
    found = checked.report
    if log is not None:
        with log.open("rb") as stream:
            records = [codec.loads(line) for line in stream if line.strip()]
        # The log's own key from the trusted vkey, never the one the export names.
        checked_log = verify_log(records, _read_vkey(log_vkey).public_key)
        heads = [TreeHead.from_document(r) for r in records if r["type"] == "tree_head"]
        anchored = any(
            (h.tree_size, h.root_hash) == (found.tree_size, found.root_hash) for h in heads
        )
        if not checked_log.ok or not anchored:
            typer.echo("FAILED: the export does not verify up to the report's tree")
            raise typer.Exit(1)
        entries = [Entry.from_document(r) for r in records if r["type"] == "entry"]
        recount = count_report(
            entries,
            agency=found.agency,
            start=found.start,
            end=found.end,
            tree_size=found.tree_size,
        )
        if tuple(recount) != found.rows:
            typer.echo("FAILED: the log's entries give other counts than the report")
            raise typer.Exit(1)
    typer.echo(
        f"OK: report of {found.agency}, {found.total} entries from "
        f"{found.start.isoformat()} to {found.end.isoformat()}, tree {found.tree_size} "
        f"signed by the log{' and ' + ', '.join(sorted(cosigners)) if cosigners else ''}"
        f"{', recounted from the export' if log else ''}"
    )


@anomalies_app.command("check")
def check_anomalies() -> None:
    """Run the access-pattern detectors once (as `serve` does every interval)."""
    from ikd_audit.bootstrap import bootstrap
    from ikd_audit.entrypoints.anomalies import check_once

    settings = _settings()

    async def run() -> int:
        async with bootstrap(settings) as runtime:
            return await check_once(runtime.patterns)

    typer.echo(f"{asyncio.run(run())} new alert(s)")


if __name__ == "__main__":
    app()
