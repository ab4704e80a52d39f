"""What the deployment files are checked against: the repository's own sources of truth.

Ports come from the settings classes and deploy/scripts/services.sh, the demo agencies from
deploy/dev.env, the packages from the workspace's pyproject.toml files.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import subprocess
import tomllib
import typing
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import AliasChoices, SecretStr
from pydantic_settings import BaseSettings

from ikd_audit.config import AuditSettings, SignerSettings
from ikd_audit.witness.config import WitnessSettings
from ikd_gateway.config import GatewaySettings
from ikd_identity.config import IdentitySettings
from ikd_shared import checkpoint
from ikd_shared.auth import TokenIssuer
from ikd_shared.settings import ServiceSettings
from tests.support.environment import REPO

COMPOSE_FILE = REPO / "docker-compose.yml"
POSTGRES_INIT = REPO / "deploy" / "compose" / "postgres-init.sh"
MAKE_SECRETS = REPO / "deploy" / "compose" / "make-secrets.sh"
KAFKA_START = REPO / "deploy" / "compose" / "kafka-start.sh"
KAFKA_INIT = REPO / "deploy" / "compose" / "kafka-init.sh"
CLUSTER_FILE = REPO / "deploy" / "cluster" / "kafka-cluster.compose.yml"
CLUSTER_SECRETS = REPO / "deploy" / "cluster" / "make-secrets.sh"

# ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?message}, ${NAME?message}
INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}")
REQUIRED_REFERENCE = re.compile(r"^\$\{(?P<name>[A-Za-z_]\w*):\?(?P<message>[^}]+)\}$")


def shell_assignments(path: Path) -> dict[str, str]:
    """NAME=value lines of a shell or env file (values unquoted, no expansion)."""
    values = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^([A-Z_][A-Z0-9_]*)=(.*)$", line.strip())
        if match:
            values[match.group(1)] = match.group(2).strip("'\"")
    return values


DEV_ENV = shell_assignments(REPO / "deploy" / "dev.env")


def local_ports() -> dict[str, str]:
    """The ports `make up` gives the services by default (deploy/scripts/services.sh)."""
    names = (
        "IDENTITY_PORT",
        "AUDIT_PORT",
        "SIGNER_PORT",
        "WITNESS_PORT",
        "GATEWAY_BASE_PORT",
        "RECEIVER_PORT",
    )
    script = 'source deploy/scripts/services.sh && for v in "$@"; do echo "$v=${!v}"; done'
    env = {k: v for k, v in os.environ.items() if not k.startswith("IKD_")}
    out = subprocess.run(  # noqa: S603
        ["bash", "-c", script, "ports", *names],  # noqa: S607
        cwd=REPO,
        env={**env, "IKD_ROOT": str(REPO)},
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return dict(line.split("=", 1) for line in out.splitlines())


LOCAL_PORTS = local_ports()
AGENCIES: list[str] = DEV_ENV["IKD_DEMO_AGENCIES"].split()


@dataclass(frozen=True)
class AppService:
    """A service of ours in docker-compose.yml and what it must agree with."""

    name: str
    dockerfile: str
    settings: type[BaseSettings] | None  # None: the process reads no settings class
    local_port: int | None  # the port of `make up`; None: no HTTP
    database: str | None = None  # ikd_<...>; None: no database
    agency: str | None = None
    database_role: str = "app"  # the role its database_url connects as

    @property
    def is_service(self) -> bool:
        """One of the services (ServiceSettings): Kafka, the pseudonym key, its migrations."""
        return self.settings is not None and issubclass(self.settings, ServiceSettings)


def app_services() -> dict[str, AppService]:
    gateway_base = int(LOCAL_PORTS["GATEWAY_BASE_PORT"])
    services = [
        AppService("init", "ops/Dockerfile", None, None),
        AppService(
            "identity",
            "services/identity/Dockerfile",
            IdentitySettings,
            int(LOCAL_PORTS["IDENTITY_PORT"]),
            "ikd_identity",
        ),
        AppService(
            "audit",
            "services/audit/Dockerfile",
            AuditSettings,
            int(LOCAL_PORTS["AUDIT_PORT"]),
            "ikd_audit",
        ),
        AppService(
            "signer",
            "services/audit/Dockerfile",
            SignerSettings,
            int(LOCAL_PORTS["SIGNER_PORT"]),
            "ikd_audit",
            database_role="signer",
        ),
        AppService(
            "witness",
            "services/audit/Dockerfile",
            WitnessSettings,
            int(LOCAL_PORTS["WITNESS_PORT"]),
        ),
        *(
            AppService(
                f"gateway-{agency}",
                "services/agency_gateway/Dockerfile",
                GatewaySettings,
                gateway_base + index,
                f"ikd_gateway_{agency.replace('-', '_')}",
                agency,
            )
            for index, agency in enumerate(AGENCIES)
        ),
        AppService(
            "webhook-receiver",
            "services/agency_gateway/Dockerfile",
            None,
            int(LOCAL_PORTS["RECEIVER_PORT"]),
        ),
    ]
    return {service.name: service for service in services}


def load_compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict)
    return document


def kafka_principal_variable(principal: str) -> str:
    """The variable holding a Kafka principal's SCRAM password (make-secrets.sh, kafka-init.sh)."""
    return f"IKD_KAFKA_{principal.upper().replace('-', '_')}_PASSWORD"


def service_principal(app: AppService) -> str | None:
    """The Kafka principal a service of ours connects as; None: it does not use Kafka."""
    if not app.is_service:
        return None
    return app.name  # identity, audit, gateway-<agency>


def broker_properties(env: dict[str, str]) -> dict[str, str]:
    """The broker settings of a kafka container's KAFKA_* variables, named as kafka-start.sh
    names them (`_` -> `.`, `__` -> `_`, `___` -> `-`)."""
    jvm = {"KAFKA_HEAP_OPTS", "KAFKA_OPTS", "KAFKA_JVM_PERFORMANCE_OPTS"}
    properties = {}
    for name, value in env.items():
        if name.startswith("KAFKA_") and name not in jvm:
            key = name.removeprefix("KAFKA_").lower().replace("_", ".")
            properties[key.replace("...", "-").replace("..", "_")] = value.replace("$$", "$")
    return properties


def volume_source_target(volume: str | dict[str, Any]) -> tuple[str, str]:
    """(source, target) of a short (`src:dst[:ro]`) or long (`type: bind`) volume entry."""
    if isinstance(volume, dict):
        return str(volume["source"]), str(volume["target"])
    source, target = str(volume).split(":")[:2]
    return source, target


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's `environment` as a dict, whichever form the file uses."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, "") for item in env)
        return {key: value for key, value in pairs}
    return {key: "" if value is None else str(value) for key, value in env.items()}


def settings_env_names(settings_cls: type[BaseSettings]) -> dict[str, str]:
    """Every environment variable the class reads -> its field (alias, else prefix + name)."""
    prefix = str(settings_cls.model_config.get("env_prefix", ""))
    names: dict[str, str] = {}
    for field_name, field in settings_cls.model_fields.items():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            for choice in alias.choices:
                if isinstance(choice, str):
                    names[choice.upper()] = field_name
        elif isinstance(alias, str):
            names[alias.upper()] = field_name
        else:
            names[f"{prefix}{field_name}".upper()] = field_name
    return names


def is_secret_field(settings_cls: type[BaseSettings], field_name: str) -> bool:
    annotation = settings_cls.model_fields[field_name].annotation
    return annotation is SecretStr or SecretStr in typing.get_args(annotation)


def ed25519_pem(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


@cache
def generated_secrets() -> dict[str, str]:
    """Fresh production-grade values for every variable the compose file requires."""
    token_key = Ed25519PrivateKey.generate()
    kid = "compose-test-token"
    trust_key = Ed25519PrivateKey.generate()
    trust_jwks = TokenIssuer(trust_key, kid="compose-test-dukcapil", issuer="x").jwks()
    values: dict[str, str] = {}
    for name in required_variables():
        if name.endswith("TOKEN_SIGNING_KEY"):
            values[name] = ed25519_pem(token_key)
        elif name.endswith("TOKEN_KEY_ID"):
            values[name] = kid
        elif name.endswith("TOKEN_JWKS"):
            values[name] = json.dumps(TokenIssuer(token_key, kid=kid, issuer="x").jwks())
        elif name.endswith("TRUST_JWKS"):
            values[name] = json.dumps(trust_jwks)
        elif name.endswith("SIGNING_KEY"):
            values[name] = ed25519_pem(Ed25519PrivateKey.generate())
        elif name.endswith("KEYSTORE"):
            values[name] = "-----BEGIN PRIVATE KEY-----\n" + secrets.token_hex(32)
        elif name.endswith("RECEIVER_SECRET"):
            values[name] = "whsec_" + secrets.token_urlsafe(24)
        elif name.endswith("LOG_ORIGIN"):
            values[name] = "compose.test.example/audit-log"
        elif name.endswith("WITNESS_NAME"):
            values[name] = "witness.compose.test.example/w1"
        else:
            values[name] = secrets.token_hex(32)
    # verifier keys of the keys and names above, as make-secrets.sh derives them
    vkeys = {
        "IKD_LOG_VKEY": ("IKD_LOG_ORIGIN", "IKD_TREE_HEAD_SIGNING_KEY", checkpoint.ED25519),
        "IKD_WITNESS_VKEY": (
            "IKD_WITNESS_NAME",
            "IKD_WITNESS_SIGNING_KEY",
            checkpoint.COSIGNATURE_V1,
        ),
    }
    for name, (key_name, key, kind) in vkeys.items():
        if name in values:
            signer = checkpoint.signer_from_pem(values[key_name], values[key], kind)
            values[name] = signer.verifier.vkey
    return values


def required_variables() -> set[str]:
    """Every ${NAME:?...} of the compose file."""
    return {
        match["name"]
        for match in INTERPOLATION.finditer(COMPOSE_FILE.read_text())
        if match["op"] in (":?", "?")
    }


def interpolate(value: str, variables: dict[str, str]) -> str:
    """What docker compose makes of a value, for the forms this file uses."""

    def substitute(match: re.Match[str]) -> str:
        name, op, arg = match["name"], match["op"], match["arg"]
        if name in variables and (variables[name] or op not in (":-", ":?")):
            return variables[name]
        if op in (":-", "-"):
            return str(arg)
        raise KeyError(f"{name} is required: {arg}")

    return INTERPOLATION.sub(substitute, value).replace("$$", "$")


def parse_port(spec: str | dict[str, Any]) -> tuple[str | None, int, int]:
    """(host ip, published port, container port) of one `ports` entry."""
    if isinstance(spec, dict):
        return spec.get("host_ip"), int(spec["published"]), int(spec["target"])
    parts = str(spec).split(":")
    if len(parts) == 3:
        return parts[0], int(parts[1]), int(parts[2].split("/")[0])
    if len(parts) == 2:
        return None, int(parts[0]), int(parts[1].split("/")[0])
    raise AssertionError(f"port {spec!r} is not published on a host port")


def read_env_file(path: Path) -> dict[str, str]:
    """The .env written by make-secrets.sh: NAME=value, NAME='...', NAME="...multi-line..."."""
    pattern = re.compile(r'^([A-Z_][A-Z0-9_]*)=(?:"(.*?)"|\'(.*?)\'|(.*?))$', re.M | re.S)
    return {
        match.group(1): next(g for g in match.groups()[1:] if g is not None)
        for match in pattern.finditer(path.read_text())
    }


# ----------------------------------------------------------------- workspace --


@dataclass(frozen=True)
class Member:
    dist: str
    path: str  # folder in the repository
    scripts: frozenset[str]
    workspace_deps: frozenset[str]


@cache
def workspace() -> dict[str, Member]:
    root = tomllib.loads((REPO / "pyproject.toml").read_text())
    members = {}
    paths = root["tool"]["uv"]["workspace"]["members"]
    manifests = {
        path: tomllib.loads((REPO / path / "pyproject.toml").read_text()) for path in paths
    }
    names = {manifest["project"]["name"] for manifest in manifests.values()}
    for path, manifest in manifests.items():
        project = manifest["project"]
        deps = {re.split(r"[<>=!~\[; ]", dep, maxsplit=1)[0] for dep in project["dependencies"]}
        members[project["name"]] = Member(
            dist=project["name"],
            path=path,
            scripts=frozenset(project.get("scripts", {})),
            workspace_deps=frozenset(deps & names),
        )
    return members


def closure(dist: str) -> set[str]:
    """The workspace members `uv sync --package dist` installs."""
    seen: set[str] = set()
    todo = [dist]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(workspace()[name].workspace_deps)
    return seen
