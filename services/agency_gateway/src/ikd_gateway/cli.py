"""`ikd-gateway`: migrate, run the worker and the API of one agency, check a policy file.

The faust worker owns its event loop, so the stream worker and the HTTP API are separate
processes: `worker` and `api`; `serve` runs both as child processes, restarts either one that
exits (with backoff) while the other keeps running, and stops both on SIGTERM/SIGINT.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from ikd_gateway.config import GatewaySettings
from ikd_shared.policy import DEFAULT_POLICY
from ikd_shared.settings import load_settings

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"

app = typer.Typer(help="IKD agency gateway (one deployment per agency)", no_args_is_help=True)


@app.command()
def migrate() -> None:
    """Apply the gateway's migrations with IKD_GATEWAY_MIGRATION_DATABASE_URL (owner role)."""
    from ikd_shared.db import migrate as run_migrations

    settings = load_settings(GatewaySettings)
    if settings.migration_database_url is None:
        print("ikd_gateway: setting IKD_GATEWAY_MIGRATION_DATABASE_URL is missing", file=sys.stderr)
        raise typer.Exit(2)
    applied = run_migrations(str(settings.migration_database_url), MIGRATIONS)
    print(f"applied {applied} migrations to the view of {settings.agency}")


@app.command("check-policy")
def check_policy(
    file: Annotated[Path, typer.Option(help="policy YAML")] = DEFAULT_POLICY,
    agency: Annotated[str | None, typer.Option(help="also check this agency is in it")] = None,
) -> None:
    """Validate a policy file and summarise it."""
    from ikd_shared.policy import PolicyError, load_policy

    try:
        policy = load_policy(file)
        if agency:
            policy.agency(agency)
    except PolicyError as error:
        print(f"ikd_gateway: invalid policy: {error}", file=sys.stderr)
        raise typer.Exit(2) from None
    services = sum(len(a.services) for a in policy.agencies)
    print(f"{policy.mpp.name}: {len(policy.agencies)} agencies, {services} services")
    for item in policy.agencies:
        consent = [s.code for s in item.services if s.needs_consent]
        print(
            f"  {item.code:34} {item.kind.value:20} services={len(item.services)}"
            f" consent-based={','.join(consent) or '-'}"
        )


def api_from_environment() -> Any:
    """The API of the agency the environment names: each of `api --workers`' processes."""
    from ikd_gateway.entrypoints.api import create_app
    from ikd_shared.logs import configure_logging

    configure_logging()
    return create_app(load_settings(GatewaySettings))


@app.command()
def api(
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            envvar="IKD_GATEWAY_API_WORKERS",
            help="API processes on the one port (uvicorn workers), each with its own pool",
        ),
    ] = 1,
) -> None:
    """Serve the prefill and webhook API (uvicorn) on IKD_GATEWAY_HOST:IKD_GATEWAY_PORT."""
    from ikd_gateway.entrypoints.api import create_app
    from ikd_shared.logs import configure_logging
    from ikd_shared.serving import serve, serve_workers

    settings = load_settings(GatewaySettings)
    configure_logging()
    if workers > 1:
        # One process is one core at most; the access relay each one runs is safe beside others.
        serve_workers(
            "ikd_gateway.cli:api_from_environment",
            host=settings.host,
            port=settings.port,
            workers=workers,
        )
        return
    serve(create_app(settings), host=settings.host, port=settings.port)  # lifespan: bootstrap


@app.command()
def worker(loglevel: Annotated[str, typer.Option()] = "INFO") -> None:
    """Consume the profile and consent topics into the view; relay, webhooks, retention."""
    from ikd_gateway.entrypoints.worker import run_worker

    settings = load_settings(GatewaySettings)
    run_worker(settings, loglevel=loglevel)  # the faust app enters bootstrap on start


# A child that ran this long before exiting is restarted at once; one that keeps dying is
# restarted after 1, 2, 4, ... seconds, at most RESTART_MAX_DELAY.
STABLE_SECONDS = 30.0
RESTART_MAX_DELAY = 30.0


class _Child:
    def __init__(self, role: str) -> None:
        self.role = role
        self.process: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.failures = 0
        self.restart_at = 0.0

    def start(self) -> None:
        command = [sys.executable, "-m", "ikd_gateway", self.role]
        self.process = subprocess.Popen(command)  # noqa: S603
        self.started = time.monotonic()

    def reap(self, log: logging.Logger) -> None:
        """Note an exit and schedule the restart."""
        if self.process is None or (code := self.process.poll()) is None:
            return
        ran = time.monotonic() - self.started
        self.failures = 0 if ran >= STABLE_SECONDS else self.failures + 1
        delay = min(RESTART_MAX_DELAY, 2.0 ** (self.failures - 1)) if self.failures else 0.0
        log.error(
            "gateway %s (pid %s) exited with %s after %.1f s; restarting in %.1f s",
            self.role,
            self.process.pid,
            code,
            ran,
            delay,
        )
        self.process = None
        self.restart_at = time.monotonic() + delay


@app.command()
def serve() -> None:
    """Run `worker` and `api` side by side as child processes, restarting either if it exits."""
    from ikd_shared.logs import configure_logging

    settings = load_settings(GatewaySettings)
    from ikd_gateway.bootstrap import check_or_exit

    check_or_exit(settings)
    configure_logging()
    log = logging.getLogger("ikd_gateway.serve")
    children = [_Child("worker"), _Child("api")]
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        while not stopping:
            for child in children:
                child.reap(log)
                # A SIGTERM to the whole group stops the children too: do not start new ones.
                if child.process is None and not stopping and time.monotonic() >= child.restart_at:
                    child.start()
            time.sleep(0.2)
    finally:
        running = [c.process for c in children if c.process and c.process.poll() is None]
        for process in running:
            process.terminate()
        for process in running:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _development() -> bool:
    from ikd_shared.settings import DeploymentSettings

    return load_settings(DeploymentSettings).is_development


@app.command("example-receiver")
def example_receiver(
    port: Annotated[int, typer.Option()] = 18200,
    secret: Annotated[
        str | None, typer.Option(help="whsec_...: development only (ps shows it)")
    ] = None,
    secret_file: Annotated[
        Path | None, typer.Option(help="read the whsec_... secret from this file; - for stdin")
    ] = None,
    host: Annotated[str, typer.Option()] = "127.0.0.1",
) -> None:
    """Run the example receiver that verifies signatures and deduplicates by webhook-id.

    The secret comes from --secret-file or IKD_GATEWAY_RECEIVER_SECRET."""
    import uvicorn

    from ikd_gateway.entrypoints.receiver import create_receiver_app
    from ikd_shared.logs import configure_logging
    from ikd_shared.settings import secret_option

    try:
        secret = secret_option(secret, secret_file, development=_development())
    except ValueError as error:
        print(f"ikd_gateway: {error}", file=sys.stderr)
        raise typer.Exit(2) from None
    secret = secret or os.environ.get("IKD_GATEWAY_RECEIVER_SECRET")
    if not secret:
        print("ikd_gateway: give --secret-file or IKD_GATEWAY_RECEIVER_SECRET", file=sys.stderr)
        raise typer.Exit(2)
    configure_logging()
    uvicorn.run(create_receiver_app(secret), host=host, port=port, log_config=None)


@app.command("agency-consume")
def agency_consume(
    ctx: typer.Context,
    topic: Annotated[
        str, typer.Option(envvar="IKD_AGENCY_TOPIC", help="ikd.agency.<your code>.v1")
    ],
    group: Annotated[str, typer.Option(envvar="IKD_AGENCY_GROUP", help="your consumer group")],
    bootstrap: Annotated[
        str, typer.Option(envvar="IKD_AGENCY_BOOTSTRAP_SERVERS", help="the MPP's brokers")
    ] = "127.0.0.1:19092",
    username: Annotated[
        str | None, typer.Option(envvar="IKD_AGENCY_USERNAME", help="agency-<your code>")
    ] = None,
    password: Annotated[
        str | None, typer.Option(envvar="IKD_AGENCY_PASSWORD", help="your SCRAM password")
    ] = None,
    password_file: Annotated[
        Path | None, typer.Option(envvar="IKD_AGENCY_PASSWORD_FILE", help="or a file holding it")
    ] = None,
    ca_file: Annotated[
        Path | None, typer.Option(envvar="IKD_AGENCY_CA_FILE", help="the MPP's broker CA")
    ] = None,
    security_protocol: Annotated[
        str, typer.Option(envvar="IKD_AGENCY_SECURITY_PROTOCOL")
    ] = "SASL_SSL",
    sasl_mechanism: Annotated[str, typer.Option(envvar="IKD_AGENCY_SASL_MECHANISM")] = (
        "SCRAM-SHA-512"
    ),
    idle_exit: Annotated[
        float | None, typer.Option(help="stop after this many seconds without a record")
    ] = None,
    dump: Annotated[bool, typer.Option(help="print the final map as JSON on exit")] = False,
) -> None:
    """Example agency backend: mirror your agency topic, print each change, handle purges.

    The credentials are those `ikdctl agencies onboard` issued (its IKD_AGENCY_* file)."""
    from ikd_gateway.entrypoints.agency_consumer import REFUSALS, connection, run

    source = ctx.get_parameter_source("password")
    if source is not None and source.name == "COMMANDLINE" and not _development():
        print(
            "ikd_gateway: --password would show it in the process list; use "
            "IKD_AGENCY_PASSWORD or --password-file",
            file=sys.stderr,
        )
        raise typer.Exit(2)
    try:
        kafka = connection(
            bootstrap,
            group=group,
            security_protocol=security_protocol,
            sasl_mechanism=sasl_mechanism,
            username=username,
            password=password,
            password_file=password_file,
            ca_file=ca_file,
        )
    except (OSError, ValueError) as error:
        print(f"ikd_gateway: {error}", file=sys.stderr)
        raise typer.Exit(2) from None
    try:
        run(kafka, topic, group, idle_exit=idle_exit, dump=sys.stdout if dump else None)
    except REFUSALS as error:
        refusal = f"{type(error).__name__}: {error}"
        print(f"ikd_gateway: the broker refused {username}: {refusal}", file=sys.stderr)
        raise typer.Exit(3) from None
