"""The `ikd-identity` command: migrate, serve, relay, clients, keys, prune.

The development issuer is `ikdctl dev-issuer`; synthetic citizens load with `ikdctl bulk-load`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import json
import os
import re
import secrets
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import asyncpg
import typer
from pydantic import Field, PostgresDsn, ValidationError
from pydantic_settings import SettingsConfigDict

from ikd_identity.adapters.keys import published_keys, thumbprint
from ikd_identity.adapters.postgres import PgClients
from ikd_identity.adapters.secrets import Argon2Hasher
from ikd_identity.config import (
    IdentitySettings,
)
from ikd_identity.domain.clients import KNOWN_SCOPES, Client
from ikd_shared import logs
from ikd_shared.auth import TokenIssuer, load_ed25519_private_key
from ikd_shared.db import migrate as run_migrations
from ikd_shared.legal import CODE_PATTERN
from ikd_shared.policy import DEFAULT_POLICY, PolicyError, load_policy
from ikd_shared.settings import DeploymentSettings, describe_errors, load_settings, secret_option
from ikd_shared.throttle import PgThrottleStore

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
CLIENT_ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{1,63}$"

app = typer.Typer(help="IKD identity service", no_args_is_help=True, add_completion=False)
clients_app = typer.Typer(help="API clients (OAuth2 client credentials)", no_args_is_help=True)
app.add_typer(clients_app, name="clients")
keys_app = typer.Typer(help="access-token signing keys (see docs/runbooks/key-rotation.md)")
app.add_typer(keys_app, name="keys")


class AdminSettings(DeploymentSettings):
    """What migrations and client administration need: the owner role's DSN, the policy."""

    model_config = SettingsConfigDict(env_prefix="IKD_IDENTITY_", extra="ignore")
    migration_database_url: PostgresDsn = Field(description="owner DSN")
    policy_file: Path = Field(default=DEFAULT_POLICY, description="the agencies a client may serve")


def _admin_settings() -> AdminSettings:
    try:
        return AdminSettings()
    except ValidationError as error:
        for line in describe_errors(AdminSettings, error):
            print(f"ikd_identity: {line}", file=sys.stderr)
        raise SystemExit(2) from None


def _settings() -> IdentitySettings:
    settings = load_settings(IdentitySettings)
    logs.configure_logging(settings.log_level)
    return settings


@app.command()
def migrate() -> None:
    """Apply pending database migrations (uses IKD_IDENTITY_MIGRATION_DATABASE_URL)."""
    applied = run_migrations(str(_admin_settings().migration_database_url), MIGRATIONS)
    typer.echo(f"applied {applied} migration(s)")


def api_from_environment() -> Any:
    """The API as the environment configures it: each of `serve --workers`' processes."""
    from ikd_identity.entrypoints.api import create_app

    return create_app(_settings())


@app.command()
def serve(
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            envvar="IKD_IDENTITY_API_WORKERS",
            help="API processes on the one port (uvicorn workers); one relay is active at a time",
        ),
    ] = 1,
) -> None:
    """Run the HTTP API (and the outbox relay unless IKD_IDENTITY_RELAY_ENABLED=false)."""
    from ikd_identity.entrypoints.api import create_app
    from ikd_shared.serving import serve, serve_workers

    settings = _settings()
    if workers > 1:
        # Each process runs a relay; the outbox's advisory lock keeps all but one on standby.
        serve_workers(
            "ikd_identity.cli:api_from_environment",
            host=settings.host,
            port=settings.port,
            workers=workers,
        )
        return
    serve(create_app(settings), host=settings.host, port=settings.port)


@app.command()
def relay() -> None:
    """Run the outbox relay alone (a standby waits while another relay is active)."""
    from ikd_identity.bootstrap import bootstrap

    settings = _settings()

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        async with bootstrap(settings, relay=True):
            await stop.wait()

    asyncio.run(main())


@clients_app.command("add")
def clients_add(
    client_id: Annotated[str, typer.Option("--id", help="client id")],
    scopes: Annotated[
        list[str], typer.Option("--scopes", help="scopes (repeat or space-separated)")
    ],
    agency: Annotated[str | None, typer.Option(help="the client's agency code")] = None,
    serves: Annotated[
        list[str] | None,
        typer.Option(
            "--serves",
            help="agencies an officer's desk (identity:consent) may record consents for "
            "(repeat, or comma/space-separated; default: none)",
        ),
    ] = None,
    secret: Annotated[
        str | None, typer.Option(help="the secret itself: development only (ps shows it)")
    ] = None,
    secret_file: Annotated[
        Path | None,
        typer.Option(help="read the secret from this file; - reads standard input"),
    ] = None,
) -> None:
    """Register or update a client (idempotent); without a secret, prints a new random one."""
    wanted = frozenset(s for item in scopes for s in item.replace(",", " ").split())
    unknown = sorted(wanted - KNOWN_SCOPES)
    if unknown:
        raise typer.BadParameter(f"unknown scopes: {', '.join(unknown)}", param_hint="--scopes")
    if not re.fullmatch(CLIENT_ID_PATTERN, client_id):
        raise typer.BadParameter("2-64 of a-z 0-9 . _ -", param_hint="--id")
    if agency is not None and not re.fullmatch(CODE_PATTERN, agency):
        raise typer.BadParameter("an agency code like bpjs-kesehatan", param_hint="--agency")
    settings = _admin_settings()
    served = frozenset(a for item in serves or [] for a in item.replace(",", " ").split())
    if served:
        _check_served(served, settings.policy_file)
    try:
        secret = secret_option(secret, secret_file, development=settings.is_development)
    except ValueError as error:
        typer.echo(f"ikd_identity: {error}", err=True)
        raise typer.Exit(2) from None
    generated = secret is None
    secret = secret or secrets.token_urlsafe(32)
    client = Client(
        client_id=client_id,
        secret_hash=Argon2Hasher().hash(secret),
        scopes=wanted,
        agency=agency,
        serves=served,
    )
    dsn = str(settings.migration_database_url)

    async def main() -> None:
        connection = await asyncpg.connect(dsn)
        try:
            await PgClients(connection).put(client)
        finally:
            await connection.close()

    asyncio.run(main())
    typer.echo(
        f"client {client_id}: scopes {' '.join(sorted(wanted))}"
        + (f", agency {agency}" if agency else "")
        + (f", serves {' '.join(sorted(served))}" if served else "")
    )
    if generated:
        typer.echo(f"secret: {secret}")


def _check_served(served: frozenset[str], policy_file: Path) -> None:
    """Every agency a client serves is one of the policy's (identity decides with it)."""
    try:
        known = {agency.code for agency in load_policy(policy_file).agencies}
    except PolicyError as error:
        raise typer.BadParameter(str(error), param_hint="IKD_IDENTITY_POLICY_FILE") from None
    unknown = sorted(served - known)
    if unknown:
        raise typer.BadParameter(
            f"not agencies of the policy {policy_file.name}: {', '.join(unknown)}",
            param_hint="--serves",
        )


@clients_app.command("disable")
def clients_disable(client_id: Annotated[str, typer.Option("--id", help="client id")]) -> None:
    """Disable a client: it gets no more tokens (idempotent; `clients add` enables it again)."""
    dsn = str(_admin_settings().migration_database_url)

    async def main() -> str:
        connection = await asyncpg.connect(dsn)
        try:
            clients = PgClients(connection)
            client = await clients.get(client_id)
            if client is None:
                return "not registered"
            if not client.disabled:
                await clients.put(dataclasses.replace(client, disabled=True))
            return "disabled"
        finally:
            await connection.close()

    typer.echo(f"client {client_id}: {asyncio.run(main())}")


@clients_app.command("list")
def clients_list(
    as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
) -> None:
    """Every registered client: scopes, agency, whether it is disabled, a previous secret's
    grace period. Never a secret or its hash."""
    dsn = str(_admin_settings().migration_database_url)

    async def main() -> list[Client]:
        connection = await asyncpg.connect(dsn)
        try:
            return await PgClients(connection).all()
        finally:
            await connection.close()

    now = dt.datetime.now(dt.UTC)
    for client in asyncio.run(main()):
        previous = client.previous_secret_expires
        overlap = previous.isoformat() if previous is not None and previous > now else None
        row = {
            "client_id": client.client_id,
            "status": "disabled" if client.disabled else "enabled",
            "agency": client.agency,
            "scopes": sorted(client.scopes),
            "serves": sorted(client.serves),
            "previous_secret_valid_until": overlap,
        }
        if as_json:
            typer.echo(json.dumps(row))
            continue
        typer.echo(
            f"{client.client_id}\t{row['status']}\tagency={client.agency or '-'}"
            f"\tscopes={','.join(sorted(client.scopes))}"
            + (f"\tserves={','.join(sorted(client.serves))}" if client.serves else "")
            + (f"\tprevious secret valid until {overlap}" if overlap else "")
        )


@clients_app.command("rotate-secret")
def clients_rotate_secret(
    client_id: Annotated[str, typer.Option("--id", help="client id")],
    secret_file: Annotated[
        Path | None,
        typer.Option(help="read the new secret from this file; - reads standard input"),
    ] = None,
    grace_minutes: Annotated[
        int,
        typer.Option(
            min=0,
            max=30 * 24 * 60,
            help="how long the old secret keeps working beside the new one; 0 (the default) "
            "replaces it at once, as after a leak",
        ),
    ] = 0,
) -> None:
    """Give a client a new secret; without --secret-file, prints a new random one.

    With a grace period both secrets work until it ends, so the client's deployments switch
    over one by one; tokens already issued stay valid until they expire either way."""
    settings = _admin_settings()
    try:
        secret = secret_option(None, secret_file, development=settings.is_development)
    except ValueError as error:
        typer.echo(f"ikd_identity: {error}", err=True)
        raise typer.Exit(2) from None
    generated = secret is None
    secret = secret or secrets.token_urlsafe(32)
    new_hash = Argon2Hasher().hash(secret)
    dsn = str(settings.migration_database_url)

    async def main() -> Client | None:
        connection = await asyncpg.connect(dsn)
        try:
            clients = PgClients(connection)
            client = await clients.get(client_id)
            if client is None:
                return None
            until = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=grace_minutes)
            rotated = dataclasses.replace(
                client,
                secret_hash=new_hash,
                previous_secret_hash=client.secret_hash if grace_minutes else None,
                previous_secret_expires=until if grace_minutes else None,
            )
            await clients.put(rotated)
            return rotated
        finally:
            await connection.close()

    rotated = asyncio.run(main())
    if rotated is None:
        typer.echo(f"ikd_identity: client {client_id} is not registered", err=True)
        raise typer.Exit(1)
    expires = rotated.previous_secret_expires
    old = f"works until {expires.isoformat()}" if expires else "no longer works"
    typer.echo(f"client {client_id}: new secret; the old one {old}")
    if generated:
        typer.echo(f"secret: {secret}")


@keys_app.command("generate")
def keys_generate(
    out: Annotated[Path, typer.Option(help="write the new private key here (PEM, mode 0600)")],
) -> None:
    """A new Ed25519 token key; prints its public JWK (publish it before it signs)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        message = f"{out} exists (keys are never overwritten)"
        raise typer.BadParameter(message, param_hint="--out") from None
    with os.fdopen(fd, "wb") as file:
        file.write(pem)
    typer.echo(json.dumps(_public_jwk(pem.decode())))


@keys_app.command("public")
def keys_public(
    key_file: Annotated[Path, typer.Option(help="the private key (PEM) of a token key")],
) -> None:
    """The public JWK of a token key (kid: its RFC 7638 thumbprint), to publish it."""
    try:
        jwk = _public_jwk(key_file.read_text())
    except (OSError, ValueError) as error:
        raise typer.BadParameter(str(error), param_hint="--key-file") from None
    typer.echo(json.dumps(jwk))


def _public_jwk(pem: str) -> dict[str, object]:
    issuer = TokenIssuer(load_ed25519_private_key(pem), kid="", issuer="")
    public = published_keys({"keys": [issuer.signing_jwk()]})[0]
    public["kid"] = thumbprint(public)
    return public


@app.command()
def prune(
    sent_older_than_hours: Annotated[
        int, typer.Option(help="keep sent outbox rows this long")
    ] = 24,
    jti_grace_days: Annotated[int, typer.Option(help="keep seen jtis this long after expiry")] = 7,
) -> None:
    """Delete outbox rows sent long ago, credential ids long expired and token throttle rows
    that no longer hold anything back (owner role)."""
    dsn = str(_admin_settings().migration_database_url)

    async def main() -> tuple[str, str, str]:
        connection = await asyncpg.connect(dsn)
        try:
            outbox = await connection.execute(
                "DELETE FROM outbox WHERE sent_at < now() - make_interval(hours => $1)",
                sent_older_than_hours,
            )
            jtis = await connection.execute(
                "DELETE FROM seen_credentials WHERE expires_at < now() - make_interval(days => $1)",
                jti_grace_days,
            )
            throttle = await PgThrottleStore(connection).prune()
            return outbox, jtis, f"DELETE {throttle}"
        finally:
            await connection.close()

    outbox, jtis, throttle = asyncio.run(main())
    typer.echo(f"outbox: {outbox}; seen credentials: {jtis}; token throttle: {throttle}")
