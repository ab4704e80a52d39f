"""`ikdctl agencies onboard|offboard CODE`: an agency backend's access to the platform."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Annotated

import typer

from ikd_ops.agencies import (
    IdentityCli,
    OnboardingError,
    check_agency,
    offboard,
    onboard,
    write_private,
)
from ikd_shared.kafka import KafkaConnection
from ikd_shared.policy import DEFAULT_POLICY
from ikd_shared.settings import KafkaClientSettings, load_settings

agencies_app = typer.Typer(help="Agency backends: onboard and offboard.", no_args_is_help=True)

Prefix = Annotated[str, typer.Option(envvar="IKD_KAFKA_TOPIC_PREFIX", help="topic name prefix")]
IdentityCommand = Annotated[
    str,
    typer.Option(
        envvar="IKD_IDENTITY_CLI",
        help="how to run identity's command (it needs IKD_IDENTITY_MIGRATION_DATABASE_URL)",
    ),
]


def _kafka() -> KafkaConnection:
    """The operator's connection: IKD_KAFKA_* (the admin principal)."""
    return KafkaConnection.from_settings(load_settings(KafkaClientSettings), client_id="ikdctl")


def _fail(error: Exception) -> typer.Exit:
    typer.echo(f"ikdctl: {error}", err=True)
    return typer.Exit(2)


@agencies_app.command("onboard")
def agencies_onboard(
    code: Annotated[str, typer.Argument(help="the agency's code in the MPP policy")],
    out: Annotated[
        Path | None,
        typer.Option(help="write the credentials to this file (mode 600) instead of printing"),
    ] = None,
    gateway_secret_out: Annotated[
        Path | None,
        typer.Option(
            help="write the gateway's identity client secret to this file (mode 600); "
            "default with --out: FILE's name with the suffix .gateway-secret"
        ),
    ] = None,
    policy: Annotated[
        Path, typer.Option(envvar="IKD_GATEWAY_POLICY_FILE", help="the MPP's policy")
    ] = DEFAULT_POLICY,
    prefix: Prefix = "",
    replication_factor: Annotated[
        int, typer.Option(min=1, envvar="IKD_KAFKA_REPLICATION_FACTOR")
    ] = 1,
    bootstrap_servers: Annotated[
        str | None, typer.Option(help="the brokers as the agency reaches them (default: ours)")
    ] = None,
    ca_file: Annotated[
        str | None, typer.Option(help="the CA file the agency verifies them with (default: ours)")
    ] = None,
    identity_cli: IdentityCommand = "ikd-identity",
) -> None:
    """Create the agency's Kafka principal, ACLs, topic and OAuth client, and its gateway's
    client at identity; print the credentials once. Again on an onboarded agency: the same
    topic and ACLs, new credentials."""
    try:
        check_agency(code, policy)
    except OnboardingError as error:
        raise _fail(error) from None
    kafka = _kafka()
    public = dataclasses.replace(
        kafka,
        bootstrap_servers=bootstrap_servers or kafka.bootstrap_servers,
        ca_file=ca_file or kafka.ca_file,
    )
    try:
        done = asyncio.run(
            onboard(
                kafka,
                code,
                identity=IdentityCli.parse(identity_cli),
                prefix=prefix,
                replication_factor=replication_factor,
                public=public,
            )
        )
    except OnboardingError as error:
        raise _fail(error) from None
    credentials = done.credentials
    topic_state = "created" if done.topic_created else "exists"
    typer.echo(
        f"{code}: topic {credentials.topic} {topic_state}; principal {credentials.username} "
        f"with a new password; {done.grants} ACLs (backend and gateway); OAuth client "
        f"{credentials.client_id} with a new secret; gateway client "
        f"{done.gateway_client.client_id} with a new secret",
        err=True,
    )
    if gateway_secret_out is None and out is not None:
        gateway_secret_out = out.with_suffix(".gateway-secret")
    if out is None:
        typer.echo(credentials.env_file(), nl=False)
    else:
        write_private(out, credentials.env_file())
        typer.echo(f"credentials written to {out} (mode 600)", err=True)
    gateway = done.gateway_client
    if gateway_secret_out is None:
        typer.echo(
            f"# the gateway's own client at identity (for its deployment, not the backend)\n"
            f"IKD_GATEWAY_IDENTITY_CLIENT_ID={gateway.client_id}\n"
            f"IKD_GATEWAY_IDENTITY_CLIENT_SECRET={gateway.secret}"
        )
    else:
        write_private(gateway_secret_out, gateway.secret + "\n")
        typer.echo(
            f"gateway client secret written to {gateway_secret_out} (mode 600): "
            f"IKD_GATEWAY_IDENTITY_CLIENT_SECRET=@{gateway_secret_out}",
            err=True,
        )
    if out is None or gateway_secret_out is None:
        typer.echo("shown once: store them now (or use --out FILE)", err=True)


@agencies_app.command("offboard")
def agencies_offboard(
    code: Annotated[str, typer.Argument(help="the agency's code")],
    delete_topic: Annotated[
        bool, typer.Option(help="also delete its topic (and every record on it)")
    ] = False,
    prefix: Prefix = "",
    identity_cli: IdentityCommand = "ikd-identity",
) -> None:
    """Delete the agency's Kafka credentials and ACLs and disable its OAuth client (idempotent).
    Its topic stays unless --delete-topic."""
    try:
        done = asyncio.run(
            offboard(
                _kafka(),
                code,
                identity=IdentityCli.parse(identity_cli),
                prefix=prefix,
                delete_topic=delete_topic,
            )
        )
    except OnboardingError as error:
        raise _fail(error) from None
    credentials = "deleted" if done.had_credentials else "none left"
    typer.echo(f"{code}: kafka credentials {credentials}; {done.acls_deleted} ACLs deleted")
    typer.echo(done.client)
    typer.echo(done.gateway_client)
    if delete_topic:
        typer.echo(f"topic {done.topic} " + ("deleted" if done.topic_deleted else "did not exist"))
    else:
        typer.echo(f"topic {done.topic} kept (--delete-topic deletes it with its records)")
