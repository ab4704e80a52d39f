"""ikdctl: operate the platform (topics, databases, status, demo, bulk load, audit checks).

`ikdctl dev-issuer` and the synthetic citizens come from the development package (ikd_dev).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Annotated

import typer

from ikd_dev.cli import dev_issuer_app
from ikd_ops import kafka_security
from ikd_ops import status as status_module
from ikd_ops.agencies import onboarded_clients
from ikd_ops.agencies_cli import agencies_app
from ikd_ops.backup_cli import backup, restore
from ikd_ops.deadletters_cli import deadletters_app
from ikd_ops.demo import Walkthrough, seed
from ikd_ops.docs_cli import docs_app
from ikd_ops.platform import Endpoints, Platform, PlatformError
from ikd_shared.credentials import Purpose
from ikd_shared.db import migrate
from ikd_shared.events.topics import ALL_TOPICS, agency_topic
from ikd_shared.kafka import KafkaConnection, ensure_topics, wait_for_broker
from ikd_shared.settings import KafkaClientSettings, load_settings

app = typer.Typer(help="Operate the IKD MPP platform.", no_args_is_help=True, add_completion=False)
topics_app = typer.Typer(help="Kafka topics declared by the project.", no_args_is_help=True)
db_app = typer.Typer(help="Service databases.", no_args_is_help=True)
demo_app = typer.Typer(help="The demo of `make up`.", no_args_is_help=True)
kafka_app = typer.Typer(help="The bus's principals and ACLs.", no_args_is_help=True)
kafka_users_app = typer.Typer(help="SCRAM credentials of the principals.", no_args_is_help=True)
kafka_acls_app = typer.Typer(help="Least-privilege ACLs of the principals.", no_args_is_help=True)
kafka_app.add_typer(kafka_users_app, name="users")
kafka_app.add_typer(kafka_acls_app, name="acls")
app.add_typer(topics_app, name="topics")
app.add_typer(kafka_app, name="kafka")
app.add_typer(db_app, name="db")
app.add_typer(demo_app, name="demo")
app.add_typer(docs_app, name="docs")
app.add_typer(agencies_app, name="agencies")
app.add_typer(dev_issuer_app, name="dev-issuer")
app.add_typer(deadletters_app, name="deadletters")
app.command()(backup)
app.command()(restore)

ROOT = Path(__file__).resolve().parents[3]
DEV_KEYS = Path(os.environ.get("IKD_DEV_KEYS", ROOT / ".run" / "dev"))


def _kafka() -> KafkaConnection:
    """The operator's connection: IKD_KAFKA_* (the admin principal for topics, users, ACLs)."""
    return KafkaConnection.from_settings(load_settings(KafkaClientSettings), client_id="ikdctl")


def _platform() -> Platform:
    secret = os.environ.get("IKD_DEMO_CLIENT_SECRET", "dev-demo-client-secret")
    # The demo's agency backends have the secrets their onboarding issued (`make up`).
    onboarded = onboarded_clients(DEV_KEYS / "agencies")
    return Platform(Endpoints.from_env(), secret, client_secrets=onboarded)


@topics_app.command("ensure")
def topics_ensure(
    prefix: Annotated[str, typer.Option(help="topic name prefix")] = os.environ.get(
        "IKD_KAFKA_TOPIC_PREFIX", ""
    ),
    replication_factor: Annotated[int, typer.Option(min=1)] = int(
        os.environ.get("IKD_KAFKA_REPLICATION_FACTOR", "1")
    ),
    agencies: Annotated[
        str, typer.Option(help="also these agencies' topics (onboarding creates them otherwise)")
    ] = "",
) -> None:
    """Create every declared topic that does not exist yet (idempotent)."""
    specs = [*ALL_TOPICS, *(agency_topic(code) for code in agencies.split())]

    async def run() -> list[str]:
        kafka = _kafka()
        await wait_for_broker(kafka)
        return await ensure_topics(
            kafka, prefix=prefix, replication_factor=replication_factor, specs=specs
        )

    created = asyncio.run(run())
    typer.echo(f"topics: {len(created)} created" + (f" ({', '.join(created)})" if created else ""))


@kafka_users_app.command("apply")
def kafka_users_apply(
    credentials_dir: Annotated[
        Path,
        typer.Option(exists=True, file_okay=False, help="one <principal>.password file each"),
    ] = DEV_KEYS / "kafka",
) -> None:
    """Create or update the SCRAM-SHA-512 credential of every principal (idempotent)."""
    passwords = {
        path.stem: path.read_text().strip() for path in sorted(credentials_dir.glob("*.password"))
    }

    async def run() -> None:
        kafka = _kafka()
        await wait_for_broker(kafka)
        await kafka_security.upsert_users(kafka, passwords)

    asyncio.run(run())
    typer.echo(f"kafka users: {len(passwords)} applied ({', '.join(passwords)})")


@kafka_acls_app.command("apply")
def kafka_acls_apply(
    agencies: Annotated[
        str, typer.Option(help="agency codes, space-separated: their gateways and backends")
    ] = os.environ.get("IKD_DEMO_AGENCIES", ""),
    prefix: Annotated[str, typer.Option(help="topic name prefix")] = os.environ.get(
        "IKD_KAFKA_TOPIC_PREFIX", ""
    ),
    audit_group: Annotated[str, typer.Option(help="the audit consumer's group")] = os.environ.get(
        "IKD_AUDIT_CONSUMER_GROUP", kafka_security.AUDIT_GROUP
    ),
    prune: Annotated[
        bool, typer.Option(help="delete these principals' other ACLs (those of other prefixes too)")
    ] = False,
) -> None:
    """Grant each component exactly what it needs on the bus (idempotent)."""
    wanted = kafka_security.grants(agencies.split(), prefix=prefix, audit_group=audit_group)

    async def run() -> tuple[int, int]:
        kafka = _kafka()
        await wait_for_broker(kafka)
        return await kafka_security.apply_acls(kafka, wanted, prune=prune)

    applied, removed = asyncio.run(run())
    typer.echo(f"kafka acls: {applied} applied, {removed} stale deleted")


@db_app.command("migrate")
def db_migrate(
    migrations: Annotated[Path, typer.Argument(exists=True, file_okay=False, help="yoyo folder")],
    dsn: Annotated[str, typer.Argument(help="postgresql:// URL of the database's owner role")],
) -> None:
    """Apply a service's pending migrations to its database."""
    applied = migrate(dsn, migrations)
    name = dsn.rsplit("/", 1)[-1]
    typer.echo(f"{name}: {applied} migrations applied")


@app.command()
def status() -> None:
    """Health of every service, the topics, and each consumer group's lag."""
    healthy = status_module.report(Endpoints.from_env(), _kafka(), typer.echo)
    if not healthy:
        raise typer.Exit(1)


@demo_app.command("seed")
def demo_seed(
    webhook_agency: Annotated[str, typer.Option()],
    webhook_service: Annotated[str, typer.Option()],
    webhook_url: Annotated[str, typer.Option()],
    webhook_secret_file: Annotated[Path, typer.Option()],
    citizens: Annotated[int, typer.Option(min=0)] = 200,
) -> None:
    """Register the demo webhook and load synthetic citizens through Dukcapil's feed."""
    with _platform() as platform:
        seed(
            platform,
            webhook_agency=webhook_agency,
            webhook_service=webhook_service,
            webhook_url=webhook_url,
            webhook_secret_file=webhook_secret_file,
            citizens=citizens,
            say=typer.echo,
        )


@demo_app.command("walkthrough")
def demo_walkthrough(
    index: Annotated[int, typer.Option(help="which synthetic walk-in citizen")] = 0,
) -> None:
    """Verify a citizen at a counter, prefill at three agencies, consent, revoke, read the trail."""
    with _platform() as platform:
        try:
            Walkthrough(platform, DEV_KEYS, typer.echo, index).run()
        except PlatformError as error:
            typer.echo(f"demo failed: {error}", err=True)
            raise typer.Exit(1) from None


@app.command()
def mint(
    index: Annotated[int, typer.Option(help="synthetic citizen index")] = 0,
    seed_: Annotated[int, typer.Option("--seed", help="synthetic seed")] = 7,
    purpose: Annotated[
        Purpose, typer.Option(help="what the citizen presents it for (one purpose, once)")
    ] = Purpose.VERIFICATION,
) -> None:
    """Print a development IKD credential for one purpose (signed by the local dev issuer)."""
    from ikd_dev.issuer import mint_credential
    from ikd_dev.synthetic import citizen
    from ikd_ops.demo import CREDENTIAL_ISSUER, read_issuer_key

    profile = citizen(seed_, index)
    typer.echo(f"{profile.full_name}, NIK {profile.nik}", err=True)
    typer.echo(
        mint_credential(
            read_issuer_key(DEV_KEYS),
            kid="dev-dukcapil-1",
            issuer=CREDENTIAL_ISSUER,
            purpose=purpose,
            profile=profile,
        )
    )


@app.command("bulk-load")
def bulk_load(
    count: Annotated[int, typer.Option(min=1, help="how many synthetic citizens")],
    seed_: Annotated[int, typer.Option("--seed")] = 2026,
    start: Annotated[int, typer.Option(help="first citizen index")] = 0,
    batch: Annotated[int, typer.Option(min=1, max=1000)] = 500,
) -> None:
    """Load synthetic citizens through identity's bulk feed, with a progress bar."""
    from rich.progress import Progress

    from ikd_dev.synthetic import iter_citizens

    totals: dict[str, int] = {}
    with _platform() as platform, Progress() as progress:
        task = progress.add_task("loading citizens", total=count)
        chunk: list[dict[str, object]] = []
        for profile in iter_citizens(count, seed=seed_, start=start):
            chunk.append(profile.model_dump(mode="json"))
            if len(chunk) == batch:
                _load(platform, chunk, totals)
                progress.advance(task, len(chunk))
                chunk = []
        if chunk:
            _load(platform, chunk, totals)
            progress.advance(task, len(chunk))
    typer.echo(", ".join(f"{v} {k}" for k, v in totals.items()))


def _load(platform: Platform, chunk: list[dict[str, object]], totals: dict[str, int]) -> None:
    result = platform.call(
        "POST",
        f"{platform.endpoints.identity}/v1/feed/profiles",
        client_id="dukcapil-feed",
        json={"profiles": chunk},
    ).json()
    for key, value in result.items():
        totals[key] = totals.get(key, 0) + int(value)


@app.command("verify-audit")
def verify_audit() -> None:
    """Export the whole audit log and check it against its signed tree heads, offline."""
    import httpx

    from ikd_ops.demo import tree_head_public_key
    from ikd_shared import codec
    from ikd_shared.transparency import verify_log

    with _platform() as platform:
        key = tree_head_public_key(platform, DEV_KEYS)
        headers = {"Authorization": f"Bearer {platform.token('auditor-demo')}"}
        url = f"{platform.endpoints.audit}/v1/log/export"
        with httpx.stream("GET", url, headers=headers, timeout=60) as response:
            response.raise_for_status()
            records = (codec.loads(line) for line in response.iter_lines() if line.strip())
            report = verify_log(records, key)
    typer.echo(report.summary())
    if not report.ok:
        raise typer.Exit(1)
