"""docker-compose.yml, checked statically against the services' own settings and scripts.

No Docker engine is needed: the file is parsed with PyYAML; `docker compose config` runs too
when a Compose v2 binary is installed (it needs no daemon).
"""

from __future__ import annotations

import http.server
import inspect
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import typer
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from typer.testing import CliRunner

from ikd_audit.cli import app as audit_cli
from ikd_gateway.cli import app as gateway_cli
from ikd_gateway.cli import example_receiver
from ikd_gateway.config import GatewaySettings
from ikd_identity.cli import app as identity_cli
from ikd_ops.cli import app as ops_cli
from ikd_shared import checkpoint
from ikd_shared.auth import TokenIssuer, TokenVerifier, load_ed25519_private_key
from ikd_shared.settings import DeploymentSettings, Environment, ServiceSettings
from tests.support.deploy import (
    AGENCIES,
    COMPOSE_FILE,
    DEV_ENV,
    INTERPOLATION,
    KAFKA_INIT,
    KAFKA_START,
    MAKE_SECRETS,
    POSTGRES_INIT,
    REPO,
    REQUIRED_REFERENCE,
    AppService,
    app_services,
    broker_properties,
    environment,
    generated_secrets,
    interpolate,
    is_secret_field,
    kafka_principal_variable,
    load_compose,
    parse_port,
    read_env_file,
    required_variables,
    service_principal,
    settings_env_names,
    volume_source_target,
)

COMPOSE = load_compose()
# the stack itself; the optional profiles' services are checked in test_observability.py
SERVICES: dict[str, dict[str, Any]] = {
    name: service for name, service in COMPOSE["services"].items() if not service.get("profiles")
}
APPS = app_services()
HTTP_APPS = [app for app in APPS.values() if app.local_port is not None]
SETTINGS_APPS = [app for app in APPS.values() if app.settings is not None]
# identity, audit, the gateways: Kafka clients with migrations (not audit's signer and witness)
SERVICE_APPS = [app for app in SETTINGS_APPS if app.is_service]
DATABASE_APPS = [app for app in SETTINGS_APPS if app.database is not None]
CLIS = {"ikd-identity": identity_cli, "ikd-audit": audit_cli, "ikd-gateway": gateway_cli}
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 - inside a container, published on loopback only
SHARED_KAFKA_VARIABLES = {
    name
    for name, field in settings_env_names(ServiceSettings).items()
    if field.startswith("kafka_")
}
# the principals `init` gives a SCRAM user (admin and broker exist from the storage format on)
APPLIED_PRINCIPALS = [
    "identity",
    "audit",
    *(f"{kind}-{agency}" for agency in AGENCIES for kind in ("gateway", "agency")),
]
KAFKA_CA_SOURCE = "${IKD_KAFKA_CA_HOST_FILE:-./.secrets/kafka/ca.pem}"
KAFKA_CA_TARGET = "/etc/ikd/kafka-ca.pem"
IDENTITY_JWKS_URL = "https://identity-tls:18443/.well-known/jwks.json"
IDENTITY_TLS_CONF = REPO / "deploy/compose/identity-tls.conf"
IDENTITY_TLS_START = REPO / "deploy/compose/identity-tls-start.sh"
KAFKA_CLIENTS = ["init", *(app.name for app in SERVICE_APPS)]


def effective_port(app: AppService) -> int:
    """The port the process listens on inside its container."""
    service = SERVICES[app.name]
    if app.settings is None:  # the example receiver: --port, else the CLI's default
        command = [str(part) for part in service.get("command", [])]
        if "--port" in command:
            return int(command[command.index("--port") + 1])
        return int(inspect.signature(example_receiver).parameters["port"].default)
    names = {field: name for name, field in settings_env_names(app.settings).items()}
    configured = environment(service).get(names["port"])
    return int(configured) if configured else int(app.settings.model_fields["port"].default)


def command_line(service: dict[str, Any]) -> str:
    parts = [*(service.get("entrypoint") or []), *(service.get("command") or [])]
    return " ".join(str(part) for part in parts)


def test_the_file_runs_the_stack_of_make_up() -> None:
    assert set(SERVICES) == {"kafka", "postgres", "identity-tls", *APPS}
    assert [name.removeprefix("gateway-") for name in SERVICES if name.startswith("gateway-")] == [
        *AGENCIES
    ]


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_every_service_has_an_image_or_a_build(name: str) -> None:
    service = SERVICES[name]
    assert service.get("image") or service.get("build"), name


@pytest.mark.parametrize("app", APPS.values(), ids=list(APPS))
def test_our_services_build_from_their_dockerfile_at_the_repo_root(app: AppService) -> None:
    service = SERVICES[app.name]
    assert service["build"] == {"context": ".", "dockerfile": app.dockerfile}
    assert (REPO / app.dockerfile).is_file()
    assert re.fullmatch(r"ikd-mpp/[a-z-]+(:\$\{IKD_IMAGE_TAG:-[\w.-]+\})?", service["image"])
    images = {SERVICES[a.name]["image"] for a in APPS.values() if a.dockerfile == app.dockerfile}
    assert len(images) == 1, f"one image name per Dockerfile: {images}"


def test_kafka_and_postgres_are_the_official_images() -> None:
    assert re.fullmatch(r"apache/kafka:4\.\d+\.\d+", SERVICES["kafka"]["image"])
    assert re.fullmatch(r"postgres:1[5-9](\.\d+)?(-bookworm)?", SERVICES["postgres"]["image"])
    assert "build" not in SERVICES["kafka"]
    assert "build" not in SERVICES["postgres"]


@pytest.mark.parametrize("name", sorted(set(SERVICES) - {"init"}))
def test_every_long_running_service_has_a_health_check(name: str) -> None:
    check = SERVICES[name].get("healthcheck") or {}
    assert not check.get("disable"), name
    test = check.get("test")
    assert isinstance(test, list), name
    assert test[0] in ("CMD", "CMD-SHELL"), name
    assert len(test) > 1, name
    if "build" in SERVICES[name]:
        assert not {"curl", "wget"} & set(" ".join(test).split()), "slim images have neither"


@pytest.mark.parametrize("app", HTTP_APPS, ids=[app.name for app in HTTP_APPS])
def test_http_health_checks_ask_the_service_port(app: AppService) -> None:
    test = " ".join(SERVICES[app.name]["healthcheck"]["test"])
    assert f"http://127.0.0.1:{effective_port(app)}/healthz" in test
    assert SERVICES[app.name]["healthcheck"]["test"][:2] == ["CMD", "python"]


def test_platform_health_checks() -> None:
    kafka = " ".join(SERVICES["kafka"]["healthcheck"]["test"])
    assert "/opt/kafka/bin/kafka-broker-api-versions.sh" in kafka
    assert "--bootstrap-server localhost:9092" in kafka
    # the admin's client settings that kafka-start.sh writes: no anonymous client gets in
    config = re.search(r"--command-config (\S+)", kafka)
    assert config, "the health check must authenticate"
    assert config[1] == "/opt/kafka/config/ikd/admin.properties"
    assert 'conf="${IKD_KAFKA_CONFIG_DIR:-$kafka/config/ikd}"' in KAFKA_START.read_text()
    assert '>"$conf/admin.properties"' in KAFKA_START.read_text()
    postgres = SERVICES["postgres"]["healthcheck"]["test"]
    assert "pg_isready" in postgres
    # over TCP: the image's first-start server (while the init hook runs) has no TCP listener
    assert "-h" in postgres


def test_the_init_job_creates_topics_users_and_acls_once() -> None:
    init = SERVICES["init"]
    assert init["entrypoint"] == ["bash", "/opt/ikd/kafka-init.sh"]
    assert f"./{KAFKA_INIT.relative_to(REPO)}:/opt/ikd/kafka-init.sh:ro" in init["volumes"]
    assert [str(part) for part in init["command"]] == AGENCIES, "every gateway's agency"
    assert str(init.get("restart", "no")) == "no"
    assert init["depends_on"] == {"kafka": {"condition": "service_healthy"}}
    script = KAFKA_INIT.read_text()
    steps = [
        'ikdctl topics ensure --agencies "$*"',
        'ikdctl kafka users apply --credentials-dir "$users"',
        'ikdctl kafka acls apply --agencies "$*"',
    ]
    assert [script.index(step) for step in steps] == sorted(script.index(s) for s in steps)
    runner = CliRunner()
    for command in (["topics", "ensure"], ["kafka", "users", "apply"], ["kafka", "acls", "apply"]):
        result = runner.invoke(ops_cli, [*command, "--help"])
        assert result.exit_code == 0, command
    assert "--agencies" in runner.invoke(ops_cli, ["topics", "ensure", "--help"]).output


@pytest.mark.parametrize("name", sorted(set(SERVICES) - {"init"}))
def test_a_crashed_container_is_restarted(name: str) -> None:
    # "unless-stopped" restarts after any exit, a kill -9 included, but not after `docker stop`.
    assert str(SERVICES[name].get("restart", "no")) in ("unless-stopped", "always"), name


@pytest.mark.parametrize("name", [f"gateway-{agency}" for agency in AGENCIES])
def test_a_gateway_container_runs_serve_which_restarts_its_api_or_worker_alone(name: str) -> None:
    # `serve` is the container's main process (exec): a dead worker is restarted inside the
    # container while the API keeps answering (tests/integration/gateway/test_gateway_serve.py).
    assert command_line(SERVICES[name]).endswith("exec ikd-gateway serve")
    serve = typer.main.get_command(gateway_cli).commands["serve"]  # type: ignore[attr-defined]
    assert "restarting either if it exits" in (serve.help or "")


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_depends_on_names_services_and_waits_for_them(name: str) -> None:
    depends = SERVICES[name].get("depends_on") or {}
    assert isinstance(depends, dict), "use the long form with a condition"
    for target, spec in depends.items():
        assert target in SERVICES, f"{name} depends on unknown {target}"
        condition = spec["condition"]
        if target == "init":
            assert condition == "service_completed_successfully"
        else:
            assert condition == "service_healthy"
            assert SERVICES[target].get("healthcheck", {}).get("test"), target


@pytest.mark.parametrize("app", SERVICE_APPS, ids=[app.name for app in SERVICE_APPS])
def test_services_start_after_kafka_postgres_and_the_topics(app: AppService) -> None:
    platform = {
        "kafka": {"condition": "service_healthy"},
        "postgres": {"condition": "service_healthy"},
        "init": {"condition": "service_completed_successfully"},
    }
    if app.name != "identity":  # and once identity serves the token keys they fetch
        platform |= {
            "identity": {"condition": "service_healthy"},
            "identity-tls": {"condition": "service_healthy"},
        }
    assert SERVICES[app.name]["depends_on"] == platform


@pytest.mark.parametrize("app", SERVICE_APPS, ids=[app.name for app in SERVICE_APPS])
def test_services_migrate_then_serve(app: AppService) -> None:
    line = command_line(SERVICES[app.name])
    match = re.fullmatch(
        r"sh -c (?P<cli>[a-z-]+) migrate && (unset \w+ && )?exec (?P=cli) serve", line
    )
    assert match, line
    commands = typer.main.get_command(CLIS[match["cli"]]).commands  # type: ignore[attr-defined]
    assert {"migrate", "serve"} <= set(commands)


def test_the_receiver_runs_the_example_receiver_on_all_interfaces() -> None:
    command = [str(part) for part in SERVICES["webhook-receiver"]["command"]]
    assert command[0] == "example-receiver"
    assert command[command.index("--host") + 1] == ALL_INTERFACES
    assert "example-receiver" in typer.main.get_command(gateway_cli).commands  # type: ignore[attr-defined]


@pytest.mark.parametrize("app", HTTP_APPS, ids=[app.name for app in HTTP_APPS])
def test_ports_are_those_of_the_settings_and_of_make_up(app: AppService) -> None:
    port = effective_port(app)
    assert port == app.local_port, f"{app.name} listens on {port}, make up uses {app.local_port}"
    if app.agency is not None:  # gateways: consecutive ports from the settings' default
        index = AGENCIES.index(app.agency)
        assert port == GatewaySettings.model_fields["port"].default + index
    elif app.settings is not None:
        assert port == app.settings.model_fields["port"].default
    ports = [parse_port(spec) for spec in SERVICES[app.name]["ports"]]
    assert ports == [("127.0.0.1", port, port)]


def test_platform_ports_are_those_of_make_up_on_loopback() -> None:
    assert [parse_port(p) for p in SERVICES["kafka"]["ports"]] == [
        ("127.0.0.1", int(DEV_ENV["KAFKA_PORT"]), int(DEV_ENV["KAFKA_PORT"]))
    ]
    assert [parse_port(p) for p in SERVICES["postgres"]["ports"]] == [
        ("127.0.0.1", int(DEV_ENV["PG_PORT"]), 5432)
    ]
    advertised = environment(SERVICES["kafka"])["KAFKA_ADVERTISED_LISTENERS"]
    assert f"EXTERNAL://127.0.0.1:{DEV_ENV['KAFKA_PORT']}" in advertised.split(",")


def test_no_port_is_published_beyond_loopback() -> None:
    for name, service in SERVICES.items():
        for spec in service.get("ports", []):
            assert parse_port(spec)[0] == "127.0.0.1", name


def test_kafka_is_a_single_kraft_node_without_automatic_topics() -> None:
    env = environment(SERVICES["kafka"])
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"{env['KAFKA_NODE_ID']}@kafka:9093"
    assert re.search(r"-Xmx\d+[mM]\b", env["KAFKA_HEAP_OPTS"])
    assert env["CLUSTER_ID"], "the apache/kafka image needs CLUSTER_ID in KRaft mode"
    assert f"kafka-data:{env['KAFKA_LOG_DIRS']}" in SERVICES["kafka"]["volumes"]
    listeners = env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    advertised = {address: name for name, address in (x.split("://", 1) for x in listeners)}
    pairs = env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    protocols = dict(pair.split(":") for pair in pairs)
    for name in ("init", *(app.name for app in SERVICE_APPS)):
        bootstrap = environment(SERVICES[name])["IKD_KAFKA_BOOTSTRAP_SERVERS"]
        assert bootstrap in advertised, name
        assert protocols[advertised[bootstrap]] == "SASL_SSL", name


def test_named_volumes_are_declared_and_hold_the_data() -> None:
    declared = set(COMPOSE.get("volumes") or {})
    used = set()
    for name, service in COMPOSE["services"].items():  # the profiles' volumes too
        for volume in service.get("volumes", []):
            source = volume_source_target(volume)[0]
            if source == KAFKA_CA_SOURCE:
                continue  # written by make-secrets.sh, not in git
            if source.startswith((".", "/")):
                assert (REPO / source).exists(), f"{name} mounts missing {source}"
            else:
                assert source in declared, f"{name} uses undeclared volume {source}"
                used.add(source)
    assert used == declared
    assert "postgres-data:/var/lib/postgresql/data" in SERVICES["postgres"]["volumes"]
    hook = f"./{POSTGRES_INIT.relative_to(REPO)}:/docker-entrypoint-initdb.d/"
    assert any(str(v).startswith(hook) for v in SERVICES["postgres"]["volumes"])
    assert os.access(POSTGRES_INIT, os.X_OK), "the image sources a non-executable hook instead"


@pytest.mark.parametrize("app", APPS.values(), ids=list(APPS))
def test_ikd_variables_are_real_settings(app: AppService) -> None:
    env = environment(SERVICES[app.name])
    if app.name == "init":  # ikdctl reads the shared Kafka variables, kafka-init.sh the rest
        known = (
            {"IKD_ENVIRONMENT"}
            | SHARED_KAFKA_VARIABLES
            | {kafka_principal_variable(principal) for principal in APPLIED_PRINCIPALS}
        )
    elif app.name == "webhook-receiver":
        known = {"IKD_GATEWAY_RECEIVER_SECRET"}
        assert known <= set(settings_env_names(GatewaySettings))
    else:
        assert app.settings is not None
        known = set(settings_env_names(app.settings))
    unknown = {name for name in env if name.startswith("IKD_")} - known
    assert not unknown, f"{app.name}: not settings of the service: {sorted(unknown)}"


@pytest.mark.parametrize("app", SETTINGS_APPS, ids=[app.name for app in SETTINGS_APPS])
def test_every_required_setting_is_provided(app: AppService) -> None:
    assert app.settings is not None
    env = environment(SERVICES[app.name])
    names = {field: name for name, field in settings_env_names(app.settings).items()}
    required = {
        names[field] for field, info in app.settings.model_fields.items() if info.is_required()
    }
    assert required <= set(env), f"missing {sorted(required - set(env))}"
    if app.is_service:  # owner role for the `migrate` that runs before `serve`
        assert names["migration_database_url"] in env


@pytest.mark.parametrize("app", SETTINGS_APPS, ids=[app.name for app in SETTINGS_APPS])
def test_secrets_and_trust_anchors_come_from_the_environment_without_defaults(
    app: AppService,
) -> None:
    assert app.settings is not None
    env = environment(SERVICES[app.name])
    fields = settings_env_names(app.settings)
    for name, value in env.items():
        field = fields.get(name)
        if field is None:
            continue
        if is_secret_field(app.settings, field) or field.endswith("jwks"):
            match = REQUIRED_REFERENCE.fullmatch(value)
            assert match, f"{app.name}: {name} must be ${{VAR:?message}}, is {value!r}"
    if issubclass(app.settings, DeploymentSettings):  # the services and the signer
        assert env["IKD_ENVIRONMENT"] == "${IKD_ENVIRONMENT:-production}"
    if app.is_service:
        assert REQUIRED_REFERENCE.fullmatch(env["IKD_PSEUDONYM_KEY"])


@pytest.mark.parametrize("app", DATABASE_APPS, ids=[app.name for app in DATABASE_APPS])
def test_database_urls_use_the_service_database_roles_and_own_passwords(app: AppService) -> None:
    assert app.settings is not None
    env = environment(SERVICES[app.name])
    names = {field: name for name, field in settings_env_names(app.settings).items()}
    postgres_env = environment(SERVICES["postgres"])
    assert app.database is not None
    short = app.database.removeprefix("ikd_")
    assert short in postgres_env["IKD_DATABASES"].split(), "postgres-init.sh creates it"
    roles = [("database_url", app.database_role)]
    if app.is_service:
        roles.append(("migration_database_url", "owner"))
    else:  # the signer: its own role only, never the owner's
        assert "migration_database_url" not in app.settings.model_fields
    for field, role in roles:
        url = env[names[field]]
        match = re.fullmatch(
            r"postgresql://(?P<user>\w+):(?P<password>\$\{[^}]+\})@postgres:5432/(?P<db>\w+)", url
        )
        assert match, f"{names[field]}={url}"
        assert match["db"] == app.database
        assert match["user"] == f"{app.database}_{role}"
        password = REQUIRED_REFERENCE.fullmatch(match["password"])
        assert password, f"{names[field]}: the password must be required"
        variable = f"IKD_PG_{short.upper()}_{role.upper()}_PASSWORD"
        assert password["name"] == variable, "the variable postgres-init.sh reads for the role"
        assert REQUIRED_REFERENCE.fullmatch(postgres_env[variable]), variable
        assert postgres_env[variable].startswith(f"${{{variable}:?")


def test_postgres_creates_exactly_the_databases_the_services_use() -> None:
    env = environment(SERVICES["postgres"])
    wanted = {app.database.removeprefix("ikd_") for app in DATABASE_APPS if app.database}
    assert set(env["IKD_DATABASES"].split()) == wanted
    signed = {
        app.database.removeprefix("ikd_")
        for app in DATABASE_APPS
        if app.database and app.database_role == "signer"
    }
    assert set(env["IKD_SIGNER_DATABASES"].split()) == signed == {"audit"}
    assert REQUIRED_REFERENCE.fullmatch(env["POSTGRES_PASSWORD"])
    for name in env["IKD_DATABASES"].split():
        roles = ("OWNER", "APP", "SIGNER") if name in signed else ("OWNER", "APP")
        for role in roles:
            assert REQUIRED_REFERENCE.fullmatch(env[f"IKD_PG_{name.upper()}_{role}_PASSWORD"])
    assert "IKD_PG_${name^^}_${role}_PASSWORD" in POSTGRES_INIT.read_text()


def test_consumers_fetch_identitys_token_keys_over_tls_and_share_its_trust_anchors() -> None:
    """Gateways and audit verify identity's tokens with the keys identity publishes, fetched
    over https from identity-tls (the compose CA); identity and audit trust the same issuer."""

    def variable(service: str, setting: str) -> str:
        match = REQUIRED_REFERENCE.fullmatch(environment(SERVICES[service])[setting])
        assert match, setting
        return str(match["name"])

    consumers = {"audit": "IKD_AUDIT_", **{f"gateway-{a}": "IKD_GATEWAY_" for a in AGENCIES}}
    for name, prefix in consumers.items():
        env = environment(SERVICES[name])
        assert env[f"{prefix}TOKEN_JWKS_URL"] == IDENTITY_JWKS_URL, name
        assert env[f"{prefix}TOKEN_JWKS_CA_FILE"] == KAFKA_CA_TARGET, name
        assert f"{prefix}TOKEN_JWKS" not in env, f"{name}: one key source, the URL"
        assert KAFKA_CA_TARGET in volume_targets(SERVICES[name]), name
    assert variable("identity", "IKD_IDENTITY_TRUST_JWKS") == variable(
        "audit", "IKD_AUDIT_TRUST_JWKS"
    )


def volume_targets(service: dict[str, Any]) -> set[str]:
    return {volume_source_target(volume)[1] for volume in service.get("volumes", [])}


def test_identity_tls_passes_only_the_jwks_to_identity_under_the_urls_name() -> None:
    proxy = SERVICES["identity-tls"]
    url = urlsplit(IDENTITY_JWKS_URL)
    conf = IDENTITY_TLS_CONF.read_text()
    assert re.search(rf"listen {url.port} ssl;", conf)
    # exactly one location reaches identity over the TLS listener: the JWKS, GET only
    tls_server = conf[conf.index(f"listen {url.port} ssl;") : conf.index("# The health check")]
    assert re.findall(r"location (= )?(\S+)", tls_server) == [("= ", url.path), ("", "/")]
    assert "limit_except GET" in tls_server
    assert f"set $identity http://identity:{effective_port(APPS['identity'])};" in tls_server
    assert "return 404;" in tls_server
    assert re.search(r"ssl_protocols TLSv1\.2 TLSv1\.3;", conf)
    # its key comes from the environment, never from a file on the host
    assert REQUIRED_REFERENCE.fullmatch(environment(proxy)["IKD_IDENTITY_TLS_KEYSTORE"])
    start = IDENTITY_TLS_START.read_text()
    written = "/tmp/tls/identity-tls.pem"  # noqa: S108 - the container's own tmpfs
    assert written in start
    assert written in conf
    assert "umask 077" in start
    mounts = dict(volume_source_target(volume) for volume in proxy["volumes"])
    assert mounts == {
        f"./{IDENTITY_TLS_START.relative_to(REPO)}": "/opt/ikd/identity-tls-start.sh",
        f"./{IDENTITY_TLS_CONF.relative_to(REPO)}": "/etc/ikd/identity-tls.conf",
    }
    assert all(str(volume).endswith(":ro") for volume in proxy["volumes"])
    assert proxy["read_only"] is True
    assert proxy["cap_drop"] == ["ALL"]
    assert "ports" not in proxy, "on the compose network only"
    assert proxy["depends_on"] == {"identity": {"condition": "service_healthy"}}


# ------------------------------------------------------------ the audit log's keys --


def _variables_in(service: dict[str, Any]) -> set[str]:
    return {
        match["name"]
        for value in environment(service).values()
        for match in INTERPOLATION.finditer(value)
    }


def test_only_the_signer_is_given_the_tree_head_key_and_only_the_witness_its_own() -> None:
    holders = {
        variable: sorted(
            name for name, service in SERVICES.items() if variable in _variables_in(service)
        )
        for variable in ("IKD_TREE_HEAD_SIGNING_KEY", "IKD_WITNESS_SIGNING_KEY")
    }
    assert holders == {
        "IKD_TREE_HEAD_SIGNING_KEY": ["signer"],
        "IKD_WITNESS_SIGNING_KEY": ["witness"],
    }
    # the service knows the log by its verifier key, which the witness trusts too
    log_vkey = {"IKD_LOG_VKEY"}
    assert log_vkey <= _variables_in(SERVICES["audit"])
    assert log_vkey <= _variables_in(SERVICES["witness"])


@pytest.mark.parametrize("name", ["signer", "witness"])
def test_the_signer_and_the_witness_run_from_the_audit_image_without_kafka(name: str) -> None:
    service = SERVICES[name]
    command = [str(part) for part in service["command"]]
    assert command == {"signer": ["signer"], "witness": ["witness", "serve"]}[name]
    cli = typer.main.get_command(audit_cli)
    assert command[0] in cli.commands  # type: ignore[attr-defined]
    assert service["image"] == SERVICES["audit"]["image"]
    env = environment(service)
    assert not [variable for variable in env if variable.startswith("IKD_KAFKA")]
    assert "IKD_PSEUDONYM_KEY" not in env
    mounts = [volume_source_target(v)[1] for v in service.get("volumes", [])]
    assert KAFKA_CA_TARGET not in mounts
    # the signer's grants come from audit's migrations: it starts once audit is healthy
    assert service["depends_on"]["audit"] == {"condition": "service_healthy"}
    assert service["read_only"] is True
    assert service["cap_drop"] == ["ALL"]


def test_the_service_and_the_witness_know_the_log_by_the_signers_verifier_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    variables = generated_secrets()
    loaded = {
        name: _load(APPS[name], _compose_environment(APPS[name], variables), monkeypatch)
        for name in ("audit", "signer", "witness")
    }
    log_vkey = loaded["signer"].note_signer.verifier.vkey
    assert loaded["audit"].log_vkey == log_vkey
    assert loaded["witness"].log_vkey == log_vkey
    assert loaded["witness"].origin == loaded["signer"].log_origin
    witness = checkpoint.signer_from_pem(
        loaded["witness"].name,
        loaded["witness"].signing_key.get_secret_value(),
        checkpoint.COSIGNATURE_V1,
    )
    assert [v.vkey for v in loaded["audit"].witness_verifiers()] == [witness.verifier.vkey]
    assert loaded["witness"].log_url == f"http://audit:{effective_port(APPS['audit'])}"


def test_the_witness_keeps_its_file_on_a_volume_of_its_own() -> None:
    service = SERVICES["witness"]
    path = Path(environment(service)["IKD_WITNESS_DATABASE"])
    mounts = dict(volume_source_target(v)[::-1] for v in service["volumes"])
    assert str(path.parent) in mounts, "the witness's memory must survive a new container"
    volume = mounts[str(path.parent)]
    assert volume in (COMPOSE.get("volumes") or {})
    users = [
        name
        for name, other in SERVICES.items()
        if volume in [volume_source_target(v)[0] for v in other.get("volumes", [])]
    ]
    assert users == ["witness"]
    # a new named volume takes the owner of the image's directory: the service user's
    dockerfile = (REPO / APPS["witness"].dockerfile).read_text()
    assert f"mkdir -m 700 {path.parent} && chown 10001:10001 {path.parent}" in dockerfile


def _stub_psql(tmp_path: Path) -> tuple[Path, Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "psql.log"
    # each call: its arguments (the -v variables) and the SQL it was fed
    _stub(bin_dir / "psql", f'echo "CALL $*" >>{log}; cat >>{log}')
    return bin_dir, log


def test_postgres_init_gives_audit_a_signer_role_with_its_own_password(tmp_path: Path) -> None:
    bin_dir, log = _stub_psql(tmp_path)
    variables = generated_secrets()
    env = {k: interpolate(v, variables) for k, v in environment(SERVICES["postgres"]).items()}
    env["PATH"] = f"{bin_dir}:{os.environ['PATH']}"
    subprocess.run(["bash", str(POSTGRES_INIT)], env=env, check=True, capture_output=True)  # noqa: S603, S607
    calls = log.read_text().split("CALL ")[1:]
    signers = [call for call in calls if "signer=" in call]
    assert len(signers) == 1
    assert "signer=ikd_audit_signer" in signers[0]
    assert "signer_env=IKD_PG_AUDIT_SIGNER_PASSWORD" in signers[0]
    assert "CREATE ROLE %I LOGIN NOSUPERUSER" in signers[0]
    assert "GRANT CONNECT ON DATABASE %I TO %I', :'db', :'signer'" in signers[0]
    assert "db=ikd_audit " in signers[0]
    # a missing signer password stops the hook before anything is created, naming it
    log.unlink()
    del env["IKD_PG_AUDIT_SIGNER_PASSWORD"]
    result = subprocess.run(["bash", str(POSTGRES_INIT)], env=env, capture_output=True, text=True)  # noqa: S603, S607
    assert result.returncode != 0
    assert "IKD_PG_AUDIT_SIGNER_PASSWORD" in result.stderr
    assert not log.exists()


def test_no_secret_has_a_default_anywhere() -> None:
    text = COMPOSE_FILE.read_text()
    required = required_variables()
    for match in INTERPOLATION.finditer(text):
        if match["name"] in required:
            assert match["op"] in (":?", "?"), f"{match[0]} gives a required variable a default"
    for match in INTERPOLATION.finditer(text):
        if match["op"] in (":?", "?"):
            assert match["arg"].strip(), f"{match[0]}: say how to set it"


def _compose_environment(app: AppService, variables: dict[str, str]) -> dict[str, str]:
    return {
        name: interpolate(value, variables)
        for name, value in environment(SERVICES[app.name]).items()
    }


def _load(app: AppService, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    for name in list(os.environ):
        if name.startswith("IKD_"):
            monkeypatch.delenv(name)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert app.settings is not None
    return app.settings()


@pytest.mark.parametrize("app", SETTINGS_APPS, ids=[app.name for app in SETTINGS_APPS])
def test_settings_load_in_production_from_the_compose_environment(
    app: AppService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the container gets validates, placeholder checks included."""
    settings = _load(app, _compose_environment(app, generated_secrets()), monkeypatch)
    if isinstance(settings, DeploymentSettings):
        assert settings.environment is Environment.PRODUCTION
    assert settings.host == ALL_INTERFACES
    assert settings.port == effective_port(app)
    if app.agency is not None:
        assert settings.agency == app.agency
        policy = Path(str(settings.policy_file))
        assert (REPO / policy.relative_to("/app")).is_file(), "the image copies it to /app"
        tmpfs = " ".join(SERVICES[app.name]["tmpfs"])
        assert f"{settings.resolved_data_dir()}:uid=10001" in tmpfs, "writable faust data dir"


def test_placeholder_secrets_are_refused_by_the_compose_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The production default has teeth: a short session secret stops the audit service."""
    variables = {**generated_secrets(), "IKD_AUDIT_SESSION_SECRET": "change-me"}
    with pytest.raises(ValueError, match="IKD_AUDIT_SESSION_SECRET"):
        _load(APPS["audit"], _compose_environment(APPS["audit"], variables), monkeypatch)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="make-secrets.sh needs openssl")
def test_make_secrets_writes_every_required_variable_with_working_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / ".env"
    subprocess.run(["bash", str(MAKE_SECRETS), "--out", str(out)], check=True, capture_output=True)  # noqa: S603, S607
    assert out.stat().st_mode & 0o077 == 0, "readable by its owner only"
    variables = read_env_file(out)
    assert required_variables() <= set(variables)
    for app in SETTINGS_APPS:
        _load(app, _compose_environment(app, variables), monkeypatch)
    # a token signed with the generated key verifies against the generated JWKS
    issuer = TokenIssuer(
        load_ed25519_private_key(variables["IKD_TOKEN_SIGNING_KEY"]),
        kid=variables["IKD_TOKEN_KEY_ID"],
        issuer="ikd-identity",
    )
    token = issuer.issue("c", {"gateway:prefill"}, ["ikd-gateway"], agency="bank-bjb")
    verifier = TokenVerifier(
        json.loads(variables["IKD_TOKEN_JWKS"]), issuer="ikd-identity", audience="ikd-gateway"
    )
    assert verifier.verify(token).agency == "bank-bjb"
    # the verifier keys are those of the generated keys, under the names written beside them
    log_key = checkpoint.signer_from_pem(
        variables["IKD_LOG_ORIGIN"], variables["IKD_TREE_HEAD_SIGNING_KEY"]
    )
    assert variables["IKD_LOG_VKEY"] == log_key.verifier.vkey
    witness_key = checkpoint.signer_from_pem(
        variables["IKD_WITNESS_NAME"],
        variables["IKD_WITNESS_SIGNING_KEY"],
        checkpoint.COSIGNATURE_V1,
    )
    assert variables["IKD_WITNESS_VKEY"] == witness_key.verifier.vkey
    assert variables["IKD_TREE_HEAD_SIGNING_KEY"] != variables["IKD_WITNESS_SIGNING_KEY"]
    # identity-tls's certificate is good for the JWKS URL's host under the compose CA
    keystore = tmp_path / "identity-tls.pem"
    keystore.write_text(variables["IKD_IDENTITY_TLS_KEYSTORE"] + "\n")
    host = urlsplit(IDENTITY_JWKS_URL).hostname
    tls_handshake(keystore, tmp_path / ".secrets/kafka/ca.pem", host)
    # the trial issuer's key matches the trust anchors, and a second run keeps the file
    trial = (tmp_path / ".secrets" / "dukcapil-jwks.json").read_text()
    assert json.loads(trial) == json.loads(variables["IKD_TRUST_JWKS"])
    again = subprocess.run(["bash", str(MAKE_SECRETS), "--out", str(out)], capture_output=True)  # noqa: S603, S607
    assert again.returncode != 0
    assert read_env_file(out) == variables


def tls_handshake(keystore: Path, ca_file: Path, hostname: str | None) -> None:
    """A TLS handshake in memory: a server on `keystore` (key, certificate, CA in one PEM,
    as nginx reads it), a client trusting `ca_file` alone and checking `hostname`."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(keystore, keystore)
    client_context = ssl.create_default_context(cafile=str(ca_file))
    to_server, to_client = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_context.wrap_bio(to_client, to_server, server_hostname=hostname)
    server = server_context.wrap_bio(to_server, to_client, server_side=True)
    done = {"client": False, "server": False}
    for _ in range(10):
        for name, end in (("client", client), ("server", server)):
            if not done[name]:
                try:
                    end.do_handshake()
                    done[name] = True
                except ssl.SSLWantReadError:
                    pass
        if all(done.values()):
            return
    raise AssertionError("the TLS handshake did not finish")


def _compose_command() -> list[str] | None:
    for command in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(command[0]) is None:
            continue
        probe = subprocess.run([*command, "version"], capture_output=True, text=True)  # noqa: S603
        if probe.returncode == 0 and re.search(r"\bv?2\.\d+", probe.stdout):
            return command
    return None


COMPOSE_COMMAND = _compose_command()


@pytest.mark.skipif(
    COMPOSE_COMMAND is None, reason="no Compose v2 (`docker compose` or docker-compose 2.x)"
)
def test_docker_compose_config_accepts_the_file(tmp_path: Path) -> None:
    assert COMPOSE_COMMAND is not None
    empty = tmp_path / "empty.env"
    empty.write_text("")
    base = [*COMPOSE_COMMAND, "--env-file", str(empty), "--project-directory", str(REPO)]
    base += ["-f", str(COMPOSE_FILE), "config", "--format", "json"]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("IKD_", "KAFKA_"))}
    env = {**clean, **generated_secrets()}
    result = subprocess.run(base, env=env, capture_output=True, text=True)  # noqa: S603
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    assert set(config["services"]) == set(SERVICES)
    identity_env = config["services"]["identity"]["environment"]
    assert identity_env["IKD_PSEUDONYM_KEY"] == env["IKD_PSEUDONYM_KEY"]
    assert identity_env["IKD_IDENTITY_TOKEN_SIGNING_KEY"] == env["IKD_TOKEN_SIGNING_KEY"]
    # and a missing secret stops compose, naming it
    del env["IKD_TREE_HEAD_SIGNING_KEY"]
    missing = subprocess.run(base, env=env, capture_output=True, text=True)  # noqa: S603
    assert missing.returncode != 0
    assert "IKD_TREE_HEAD_SIGNING_KEY" in missing.stderr


# ------------------------------------------------------------------- the locked bus --

KAFKA_ENV = environment(SERVICES["kafka"])
BROKER = broker_properties(KAFKA_ENV)


def _protocols(properties: dict[str, str]) -> dict[str, str]:
    pairs = properties["listener.security.protocol.map"].split(",")
    return dict(pair.split(":", 1) for pair in pairs)


def _listener_names(spec: str) -> list[str]:
    return [listener.split("://", 1)[0] for listener in spec.split(",")]


def test_no_listener_lets_a_client_in_without_tls_and_sasl() -> None:
    protocols = _protocols(BROKER)
    assert set(protocols.values()) <= {"SASL_SSL", "SSL"}, protocols
    controllers = BROKER["controller.listener.names"].split(",")
    for name in _listener_names(BROKER["listeners"]):
        if name in controllers:
            # only peers holding a certificate of the CA: the controller
            assert protocols[name] == "SSL"
            assert BROKER[f"listener.name.{name.lower()}.ssl.client.auth"] == "required"
        else:
            assert protocols[name] == "SASL_SSL", name
    for name in _listener_names(BROKER["advertised.listeners"]):
        assert protocols[name] == "SASL_SSL", f"clients reach {name}"
    assert BROKER["sasl.enabled.mechanisms"] == "SCRAM-SHA-512"
    assert protocols[BROKER["inter.broker.listener.name"]] == "SASL_SSL"
    assert BROKER["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-512"


def test_the_broker_denies_what_no_acl_allows() -> None:
    assert BROKER["authorizer.class.name"] == (
        "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
    )
    assert BROKER["allow.everyone.if.no.acl.found"] == "false"
    assert sorted(BROKER["super.users"].split(";")) == [
        "User:admin",
        "User:broker",
        "User:controller",
    ]
    # the controller certificate's subject (kafka-pki.sh: /O=.../CN=controller) maps to the
    # super user `controller`; the broker's certificate maps to no super user
    rule = re.fullmatch(r"RULE:(.+)/(.+)/,DEFAULT", BROKER["ssl.principal.mapping.rules"])
    assert rule, BROKER["ssl.principal.mapping.rules"]
    pattern, replacement = rule[1], rule[2].replace("$1", r"\1")
    assert re.sub(pattern, replacement, "CN=controller,O=IKD MPP") == "controller"
    assert re.sub(pattern, replacement, "CN=kafka,O=IKD MPP") == "kafka"


def test_the_broker_gets_its_keystores_and_bootstrap_users_from_secrets() -> None:
    kafka = SERVICES["kafka"]
    assert kafka["entrypoint"] == ["bash", "/opt/ikd/kafka-start.sh"]
    assert f"./{KAFKA_START.relative_to(REPO)}:/opt/ikd/kafka-start.sh:ro" in kafka["volumes"]
    for name in (
        "IKD_KAFKA_ADMIN_PASSWORD",
        "IKD_KAFKA_BROKER_PASSWORD",
        "IKD_KAFKA_BROKER_KEYSTORE",
        "IKD_KAFKA_CONTROLLER_KEYSTORE",
    ):
        match = REQUIRED_REFERENCE.fullmatch(KAFKA_ENV[name])
        assert match, name
        assert match["name"] == name
    assert KAFKA_ENV["IKD_KAFKA_CA_FILE"] == KAFKA_CA_TARGET
    assert (KAFKA_CA_SOURCE, KAFKA_CA_TARGET) in map(volume_source_target, kafka["volumes"])


@pytest.mark.parametrize("name", KAFKA_CLIENTS)
def test_every_kafka_client_connects_with_its_own_principal_over_tls(name: str) -> None:
    service = SERVICES[name]
    env = environment(service)
    assert env["IKD_KAFKA_SECURITY_PROTOCOL"] == "SASL_SSL"
    principal = "admin" if name == "init" else service_principal(APPS[name])
    assert env["IKD_KAFKA_USERNAME"] == principal
    password = REQUIRED_REFERENCE.fullmatch(env["IKD_KAFKA_PASSWORD"])
    assert password, f"{name}: the Kafka password must be required"
    assert password["name"] == kafka_principal_variable(str(principal))
    # the CA file the settings read is the CA mounted read-only
    assert env["IKD_KAFKA_CA_FILE"] == KAFKA_CA_TARGET
    mounts = [v for v in service["volumes"] if volume_source_target(v)[1] == KAFKA_CA_TARGET]
    assert mounts, f"{name} does not mount the CA"
    assert all((isinstance(m, dict) and m["read_only"]) or str(m).endswith(":ro") for m in mounts)
    assert volume_source_target(mounts[0])[0] == KAFKA_CA_SOURCE


def test_no_two_kafka_clients_share_a_password() -> None:
    variables = [environment(SERVICES[name])["IKD_KAFKA_PASSWORD"] for name in KAFKA_CLIENTS]
    assert len(set(variables)) == len(variables)
    assert (
        environment(SERVICES["init"])["IKD_KAFKA_PASSWORD"] == KAFKA_ENV["IKD_KAFKA_ADMIN_PASSWORD"]
    ), "init runs as the admin the broker creates at format"


def test_init_applies_the_password_each_service_uses() -> None:
    init = environment(SERVICES["init"])
    for principal in APPLIED_PRINCIPALS:
        variable = kafka_principal_variable(principal)
        assert init[variable] == f"${{{variable}:?run deploy/compose/make-secrets.sh}}"
    for app in SERVICE_APPS:
        principal = service_principal(app)
        assert principal in APPLIED_PRINCIPALS
        service_password = environment(SERVICES[app.name])["IKD_KAFKA_PASSWORD"]
        assert service_password == init[kafka_principal_variable(str(principal))]


def _stub(path: Path, body: str) -> None:
    path.write_text(f"#!/usr/bin/env bash\n{body}\n")
    path.chmod(0o755)


def test_kafka_start_writes_the_secured_broker_settings_and_formats_with_the_users(
    tmp_path: Path,
) -> None:
    """The entrypoint against stub Kafka scripts: what the broker would be started with."""
    home = tmp_path / "kafka"
    (home / "bin").mkdir(parents=True)
    _stub(home / "bin" / "kafka-storage.sh", f'printf "%s\\n" "$@" >{tmp_path}/format.args')
    _stub(
        home / "bin" / "kafka-server-start.sh",
        f'printf "%s\\n" "$@" >{tmp_path}/start.args; env >{tmp_path}/start.env',
    )
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    variables = generated_secrets()
    env = {name: interpolate(value, variables) for name, value in KAFKA_ENV.items()}
    env |= {"IKD_KAFKA_HOME": str(home), "IKD_KAFKA_CA_FILE": str(ca), "PATH": os.environ["PATH"]}
    subprocess.run(["bash", str(KAFKA_START)], env=env, check=True, capture_output=True)  # noqa: S603, S607
    config = home / "config" / "ikd"
    written = dict(
        line.split("=", 1)
        for line in (config / "server.properties").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert {key: written[key] for key in BROKER} == BROKER
    assert written["ssl.keystore.type"] == "PEM"
    assert (Path(written["ssl.keystore.location"])).read_text().strip() == env[
        "IKD_KAFKA_BROKER_KEYSTORE"
    ]
    controller = Path(written["listener.name.controller.ssl.keystore.location"])
    assert controller.read_text().strip() == env["IKD_KAFKA_CONTROLLER_KEYSTORE"]
    assert written["ssl.truststore.location"] == str(ca)
    for name, protocol in _protocols(BROKER).items():
        jaas = written.get(f"listener.name.{name.lower()}.scram-sha-512.sasl.jaas.config")
        if protocol == "SASL_SSL":
            assert jaas
            assert 'username="broker"' in jaas
            assert f'password="{env["IKD_KAFKA_BROKER_PASSWORD"]}"' in jaas
        else:
            assert jaas is None
    for path in config.iterdir():
        assert path.stat().st_mode & 0o077 == 0, f"{path.name} is readable by others"
    admin = (config / "admin.properties").read_text()
    assert "security.protocol=SASL_SSL" in admin
    assert f'username="admin" password="{env["IKD_KAFKA_ADMIN_PASSWORD"]}"' in admin
    format_args = (tmp_path / "format.args").read_text().splitlines()
    assert format_args[:2] == ["format", "--ignore-formatted"]
    for user in ("admin", "broker"):
        password = env[f"IKD_KAFKA_{user.upper()}_PASSWORD"]
        assert f"SCRAM-SHA-512=[name={user},password={password}]" in format_args
    assert (tmp_path / "start.args").read_text().split() == [str(config / "server.properties")]
    started = (tmp_path / "start.env").read_text()
    assert "IKD_KAFKA_ADMIN_PASSWORD" not in started, "the broker process keeps no secrets"
    assert "IKD_KAFKA_BROKER_KEYSTORE" not in started


def test_kafka_start_refuses_a_missing_secret(tmp_path: Path) -> None:
    env = {name: interpolate(value, generated_secrets()) for name, value in KAFKA_ENV.items()}
    del env["IKD_KAFKA_CONTROLLER_KEYSTORE"]
    env |= {"IKD_KAFKA_HOME": str(tmp_path), "PATH": os.environ["PATH"]}
    result = subprocess.run(["bash", str(KAFKA_START)], env=env, capture_output=True, text=True)  # noqa: S603, S607
    assert result.returncode != 0
    assert "IKD_KAFKA_CONTROLLER_KEYSTORE" in result.stderr


def test_kafka_init_applies_users_acls_and_topics_as_compose_runs_it(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "ikdctl.log"
    # records each call; for `users apply`, the password files it was given
    _stub(
        bin_dir / "ikdctl",
        f"""echo "$*" >>{log}
if [[ "$*" == "kafka users apply --credentials-dir "* ]]; then
  for f in "$5"/*; do echo "$(basename "$f")=$(cat "$f")" >>{log}; done
fi""",
    )
    variables = generated_secrets()
    init = SERVICES["init"]
    env = {name: interpolate(value, variables) for name, value in environment(init).items()}
    env |= {"PATH": f"{bin_dir}:{os.environ['PATH']}", "TMPDIR": str(tmp_path)}
    command = [str(part) for part in init["command"]]
    subprocess.run(["bash", str(KAFKA_INIT), *command], env=env, check=True, capture_output=True)  # noqa: S603, S607
    lines = log.read_text().splitlines()
    agencies = " ".join(AGENCIES)
    assert lines[0] == f"topics ensure --agencies {agencies}"
    assert lines[1].startswith("kafka users apply --credentials-dir ")
    files = dict(line.split("=", 1) for line in lines[2:-1])
    assert files == {
        f"{principal}.password": variables[kafka_principal_variable(principal)]
        for principal in APPLIED_PRINCIPALS
    }
    assert lines[-1] == f"kafka acls apply --agencies {agencies}"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("tmp")], "files left behind"
    # a missing password stops the job, naming the variable
    del env[kafka_principal_variable("audit")]
    result = subprocess.run(  # noqa: S603
        ["bash", str(KAFKA_INIT), *command],  # noqa: S607
        env=env,
        capture_output=True,
        text=True,
    )
    assert result.returncode != 0
    assert kafka_principal_variable("audit") in result.stderr


def _chain(pem: str) -> tuple[x509.Certificate, x509.Certificate]:
    certificates = x509.load_pem_x509_certificates(pem.encode())
    assert len(certificates) == 2, "key, certificate, CA"
    serialization.load_pem_private_key(pem.encode(), password=None)  # unencrypted PKCS#8
    assert pem.startswith("-----BEGIN PRIVATE KEY-----")
    return certificates[0], certificates[1]


@pytest.mark.skipif(shutil.which("openssl") is None, reason="make-secrets.sh needs openssl")
def test_make_secrets_writes_the_kafka_ca_keystores_and_passwords(tmp_path: Path) -> None:
    out = tmp_path / ".env"
    subprocess.run(["bash", str(MAKE_SECRETS), "--out", str(out)], check=True, capture_output=True)  # noqa: S603, S607
    variables = read_env_file(out)
    kafka = tmp_path / ".secrets" / "kafka"
    assert variables["IKD_KAFKA_CA_HOST_FILE"] == str(kafka / "ca.pem")
    assert (kafka / "ca.key").stat().st_mode & 0o777 == 0o600
    assert (kafka / "ca.pem").stat().st_mode & 0o777 == 0o644, "public, read by the containers"
    ca = x509.load_pem_x509_certificate((kafka / "ca.pem").read_bytes())
    for name, subject, hosts, client in (
        ("IKD_KAFKA_BROKER_KEYSTORE", "kafka", {"kafka", "localhost"}, False),
        ("IKD_KAFKA_CONTROLLER_KEYSTORE", "controller", {"kafka"}, True),
    ):
        certificate, chained = _chain(variables[name])
        assert chained == ca
        certificate.verify_directly_issued_by(ca)
        cn = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
        assert [attribute.value for attribute in cn] == [subject]
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert set(san.get_values_for_type(x509.DNSName)) == hosts
        usage = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert (x509.ExtendedKeyUsageOID.CLIENT_AUTH in usage) is client
    principals = ["admin", "broker", *APPLIED_PRINCIPALS]
    passwords = [variables[kafka_principal_variable(p)] for p in principals]
    assert all(re.fullmatch(r"[0-9a-f]{48}", password) for password in passwords)
    assert len(set(passwords)) == len(passwords)
    # a fresh .env keeps the CA, so the clients' trust does not change
    ca_key = (kafka / "ca.key").read_bytes()
    out.rename(tmp_path / "old.env")
    subprocess.run(["bash", str(MAKE_SECRETS), "--out", str(out)], check=True, capture_output=True)  # noqa: S603, S607
    assert (kafka / "ca.key").read_bytes() == ca_key
    certificate, _ = _chain(read_env_file(out)["IKD_KAFKA_BROKER_KEYSTORE"])
    certificate.verify_directly_issued_by(ca)


@pytest.mark.skipif(
    shutil.which("nginx") is None or shutil.which("openssl") is None,
    reason="needs nginx and openssl",
)
def test_identity_tls_serves_identitys_jwks_and_nothing_else(tmp_path: Path) -> None:
    """identity-tls.conf run by a real nginx in front of a stand-in identity, with a
    certificate as make-secrets.sh makes it (identity and the listeners on loopback here)."""
    ca = tmp_path / "ca"
    pki = f"source {REPO}/deploy/compose/kafka-pki.sh && kafka_ca {ca} && "
    pki += f"kafka_keystore {ca} identity-tls DNS:identity-tls serverAuth"
    keystore = subprocess.run(  # noqa: S603
        ["bash", "-c", pki],  # noqa: S607
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    (tmp_path / "tls").mkdir()
    (tmp_path / "tls/identity-tls.pem").write_text(keystore)
    jwks = {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "A" * 43, "kid": "k1"}]}

    class Identity(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps(jwks if self.path == "/.well-known/jwks.json" else {}).encode()
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    identity = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Identity)
    threading.Thread(target=identity.serve_forever, daemon=True).start()
    tls_port, health_port = free_ports(2)
    conf = IDENTITY_TLS_CONF.read_text()
    conf = conf.replace("http://identity:18000", f"http://127.0.0.1:{identity.server_port}")
    conf = conf.replace("listen 18443 ssl", f"listen 127.0.0.1:{tls_port} ssl")
    conf = conf.replace("127.0.0.1:18444", f"127.0.0.1:{health_port}")
    conf = conf.replace("/tmp/", f"{tmp_path}/")  # noqa: S108 - the container's tmpfs
    (tmp_path / "nginx.conf").write_text(conf)
    command = ["nginx", "-e", str(tmp_path / "error.log"), "-c", str(tmp_path / "nginx.conf")]
    nginx = subprocess.Popen([*command, "-g", "daemon off;"])  # noqa: S603
    try:
        context = ssl.create_default_context(cafile=str(ca / "ca.pem"))
        context.check_hostname = False  # the name: the handshake test of make-secrets.sh
        base = f"https://127.0.0.1:{tls_port}"
        with httpx.Client(verify=context, timeout=5) as client:
            for _ in range(100):
                try:
                    answer = client.get(f"{base}/.well-known/jwks.json")
                    break
                except httpx.ConnectError:
                    time.sleep(0.05)
            assert answer.json() == jwks
            assert client.get(f"{base}/healthz").status_code == 404
            assert client.post(f"{base}/.well-known/jwks.json").status_code == 403
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{base}/.well-known/jwks.json", timeout=5)  # not without the compose CA
        assert httpx.get(f"http://127.0.0.1:{health_port}/healthz").status_code == 200
    finally:
        nginx.terminate()
        nginx.wait(timeout=10)
        identity.shutdown()


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()
