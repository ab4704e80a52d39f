"""The `ikd-identity` command: migrate, serve, relay, clients, dev-issuer, bulk-load."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import secrets
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Literal

import asyncpg
import typer
from pydantic import Field, PostgresDsn, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from ikd_identity.adapters.keys import read_private_key, write_private_key
from ikd_identity.adapters.postgres import PgClients
from ikd_identity.adapters.secrets import Argon2Hasher
from ikd_identity.config import (
    DEFAULT_CREDENTIAL_AUDIENCE,
    DEFAULT_CREDENTIAL_ISSUER,
    IdentitySettings,
)
from ikd_identity.domain import commands
from ikd_identity.domain.clients import KNOWN_SCOPES, Client
from ikd_shared import observability
from ikd_shared.credentials import generate_issuer_key, mint_credential, public_jwk
from ikd_shared.db import migrate as run_migrations
from ikd_shared.events.profile_v1 import CitizenProfile
from ikd_shared.legal import CODE_PATTERN
from ikd_shared.nik import InvalidNik, parse_nik
from ikd_shared.settings import load_settings
from ikd_shared.synthetic import citizen, iter_citizens

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"
ISSUER_KEY_FILE = "dukcapil-issuer.pem"
ISSUER_JWKS_FILE = "dukcapil-jwks.json"
CLIENT_ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{1,63}$"

app = typer.Typer(help="IKD identity service", no_args_is_help=True, add_completion=False)
clients_app = typer.Typer(help="API clients (OAuth2 client credentials)", no_args_is_help=True)
dev_issuer_app = typer.Typer(
    help="DEVELOPMENT ONLY: a local IKD issuer; production trusts only IKD_IDENTITY_TRUST_JWKS",
    no_args_is_help=True,
)
app.add_typer(clients_app, name="clients")
app.add_typer(dev_issuer_app, name="dev-issuer")


class AdminSettings(BaseSettings):
    """What migrations and client administration need: the owner role's DSN."""

    model_config = SettingsConfigDict(env_prefix="IKD_IDENTITY_", extra="ignore")
    migration_database_url: PostgresDsn = Field(description="owner DSN")


def _admin_settings() -> AdminSettings:
    try:
        return AdminSettings()
    except ValidationError as error:
        for item in error.errors():
            name = f"IKD_IDENTITY_{str(item['loc'][0]).upper()}"
            what = "is missing" if item["type"] == "missing" else f"is invalid: {item['msg']}"
            print(f"ikd_identity: setting {name} {what}", file=sys.stderr)
        raise SystemExit(2) from None


def _settings() -> IdentitySettings:
    settings = load_settings(IdentitySettings)
    observability.configure_logging(settings.log_level)
    return settings


@app.command()
def migrate() -> None:
    """Apply pending database migrations (uses IKD_IDENTITY_MIGRATION_DATABASE_URL)."""
    applied = run_migrations(str(_admin_settings().migration_database_url), MIGRATIONS)
    typer.echo(f"applied {applied} migration(s)")


@app.command()
def serve() -> None:
    """Run the HTTP API (and the outbox relay unless IKD_IDENTITY_RELAY_ENABLED=false)."""
    import uvicorn

    from ikd_identity.entrypoints.api import create_app

    settings = _settings()
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        proxy_headers=False,
        server_header=False,
    )


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
    secret: Annotated[str | None, typer.Option(help="secret (default: a new random one)")] = None,
) -> None:
    """Register or update a client (idempotent); prints the secret if one was generated."""
    wanted = frozenset(s for item in scopes for s in item.replace(",", " ").split())
    unknown = sorted(wanted - KNOWN_SCOPES)
    if unknown:
        raise typer.BadParameter(f"unknown scopes: {', '.join(unknown)}", param_hint="--scopes")
    if not re.fullmatch(CLIENT_ID_PATTERN, client_id):
        raise typer.BadParameter("2-64 of a-z 0-9 . _ -", param_hint="--id")
    if agency is not None and not re.fullmatch(CODE_PATTERN, agency):
        raise typer.BadParameter("an agency code like bpjs-kesehatan", param_hint="--agency")
    generated = secret is None
    secret = secret or secrets.token_urlsafe(32)
    client = Client(
        client_id=client_id, secret_hash=Argon2Hasher().hash(secret), scopes=wanted, agency=agency
    )
    dsn = str(_admin_settings().migration_database_url)

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
    )
    if generated:
        typer.echo(f"secret: {secret}")


@dev_issuer_app.command("init")
def dev_issuer_init(
    out: Annotated[Path, typer.Option(help="folder for the key and JWKS files")],
    algorithm: Annotated[str, typer.Option("--alg", help="EdDSA or ES256")] = "EdDSA",
    kid: Annotated[str, typer.Option(help="key id")] = "dev-dukcapil-1",
    force: Annotated[bool, typer.Option(help="replace an existing key")] = False,
) -> None:
    """Create a development issuer key pair and its JWKS (trust it with TRUST_JWKS=@...)."""
    if algorithm not in ("EdDSA", "ES256"):
        raise typer.BadParameter("EdDSA or ES256", param_hint="--alg")
    alg: Literal["EdDSA", "ES256"] = "EdDSA" if algorithm == "EdDSA" else "ES256"
    out.mkdir(parents=True, exist_ok=True)
    if (out / ISSUER_KEY_FILE).exists() and not force:
        typer.echo(f"{out / ISSUER_KEY_FILE} exists; keeping it (--force replaces it)")
        return
    key = generate_issuer_key(alg)
    write_private_key(out / ISSUER_KEY_FILE, key)
    (out / ISSUER_JWKS_FILE).write_text(json.dumps({"keys": [public_jwk(key, kid)]}, indent=2))
    typer.echo(f"wrote {out / ISSUER_KEY_FILE} and {out / ISSUER_JWKS_FILE} ({alg}, kid {kid})")


@dev_issuer_app.command("mint")
def dev_issuer_mint(
    key_dir: Annotated[Path, typer.Option(help="folder written by `dev-issuer init`")],
    seed: Annotated[int, typer.Option(help="synthetic citizen seed")] = 0,
    index: Annotated[int, typer.Option(help="synthetic citizen index")] = 0,
    nik: Annotated[
        str | None, typer.Option(help="use this NIK (birth date and sex follow)")
    ] = None,
    profile_file: Annotated[
        Path | None, typer.Option("--profile", help="a CitizenProfile JSON file")
    ] = None,
    issuer: Annotated[str, typer.Option(help="iss claim")] = DEFAULT_CREDENTIAL_ISSUER,
    audience: Annotated[str, typer.Option(help="aud claim")] = DEFAULT_CREDENTIAL_AUDIENCE,
    lifetime: Annotated[int, typer.Option(help="seconds until exp")] = 600,
    show_profile: Annotated[bool, typer.Option(help="print the profile to stderr")] = False,
) -> None:
    """Print a credential signed by the development issuer."""
    key = read_private_key(key_dir / ISSUER_KEY_FILE)
    kid = json.loads((key_dir / ISSUER_JWKS_FILE).read_text())["keys"][0]["kid"]
    if profile_file is not None:
        profile = CitizenProfile.model_validate_json(profile_file.read_text())
    else:
        profile = citizen(seed, index)
        if nik is not None:
            try:
                info = parse_nik(nik)
            except InvalidNik as error:
                raise typer.BadParameter(str(error), param_hint="--nik") from None
            profile = CitizenProfile.model_validate(
                {
                    **profile.model_dump(),
                    "nik": nik,
                    "date_of_birth": info.birth_date,
                    "sex": info.sex,
                }
            )
    token = mint_credential(
        key,
        kid=kid,
        issuer=issuer,
        audience=audience,
        profile=profile,
        lifetime=dt.timedelta(seconds=lifetime),
    )
    if show_profile:
        typer.echo(profile.model_dump_json(indent=2), err=True)
    typer.echo(token)


@app.command()
def prune(
    sent_older_than_hours: Annotated[
        int, typer.Option(help="keep sent outbox rows this long")
    ] = 24,
    jti_grace_days: Annotated[int, typer.Option(help="keep seen jtis this long after expiry")] = 7,
) -> None:
    """Delete outbox rows sent long ago and credential ids long expired (owner role)."""
    dsn = str(_admin_settings().migration_database_url)

    async def main() -> tuple[str, str]:
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
            return outbox, jtis
        finally:
            await connection.close()

    outbox, jtis = asyncio.run(main())
    typer.echo(f"outbox: {outbox}; seen credentials: {jtis}")


@app.command("bulk-load")
def bulk_load(
    count: Annotated[int, typer.Option(help="how many synthetic citizens")],
    seed: Annotated[int, typer.Option(help="synthetic seed")] = 0,
    start: Annotated[int, typer.Option(help="first citizen index")] = 0,
    batch_size: Annotated[int, typer.Option(help="profiles per transaction")] = 1000,
) -> None:
    """Load synthetic citizens as Dukcapil's bulk feed would: batches, outbox rows included."""
    from ikd_identity.bootstrap import bootstrap
    from ikd_identity.service_layer import handlers

    settings = _settings()

    async def main() -> None:
        totals = {"created": 0, "updated": 0, "unchanged": 0, "skipped_inactive": 0}
        async with bootstrap(settings) as runtime:
            started = time.perf_counter()
            batch: list[CitizenProfile] = []
            for profile in iter_citizens(count, seed=seed, start=start):
                batch.append(profile)
                if len(batch) == batch_size:
                    result = await handlers.load_profiles(
                        commands.LoadProfiles(batch), runtime.deps
                    )
                    for name in totals:
                        totals[name] += getattr(result, name)
                    batch = []
            if batch:
                result = await handlers.load_profiles(commands.LoadProfiles(batch), runtime.deps)
                for name in totals:
                    totals[name] += getattr(result, name)
            elapsed = time.perf_counter() - started
        typer.echo(
            json.dumps(
                {
                    **totals,
                    "seconds": round(elapsed, 3),
                    "profiles_per_second": round(count / elapsed),
                }
            )
        )

    asyncio.run(main())
