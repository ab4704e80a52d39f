"""Onboarding an agency backend: its Kafka principal, ACLs and topic, and its OAuth client;
and its gateway's own OAuth client at identity.

The credentials are random and shown once: the platform keeps only the SCRAM verifier and the
client secrets' hashes, so onboarding again issues new ones (and the old ones stop working).
The OAuth clients are registered through identity's own command (`ikd-identity clients ...`),
which owns the clients table; `identity_cli` says how to run it (e.g. inside its container).
The gateway's client (`gateway-<code>`, scope identity:register) is how the gateway registers
citizens at identity for its agency; its secret is for the gateway's deployment, not for the
agency backend, and is written apart from the backend's credentials.
"""

from __future__ import annotations

import os
import secrets
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml

from ikd_ops import kafka_security
from ikd_shared.events import topics
from ikd_shared.kafka import KafkaConnection, ensure_topics, wait_for_broker

BACKEND_SCOPES = ("gateway:prefill", "gateway:webhooks", "gateway:registrations")
GATEWAY_SCOPES = ("identity:register",)


class OnboardingError(Exception):
    """Onboarding cannot proceed; the message says why."""


def client_id(agency: str) -> str:
    return f"backend-{agency}"


def gateway_client_id(agency: str) -> str:
    return f"gateway-{agency}"


def check_agency(agency: str, policy_file: Path) -> None:
    """Only an agency of the MPP's policy has a gateway, hence a topic to read. (Its gateway
    validates the whole policy when it starts; the codes are all onboarding needs.)"""
    try:
        document = yaml.safe_load(policy_file.read_text(encoding="utf-8"))
        codes = {str(item["code"]) for item in document["agencies"]}
    except (OSError, yaml.YAMLError, KeyError, TypeError) as error:
        raise OnboardingError(
            f"cannot read the agencies of policy {policy_file}: {error}"
        ) from None
    if agency not in codes:
        raise OnboardingError(
            f"agency {agency!r} is not in the policy {policy_file}; "
            "only the policy's agencies can be onboarded"
        )


@dataclass(frozen=True)
class IdentityCli:
    """identity's client administration, run as its command (`ikd-identity clients ...`)."""

    command: Sequence[str] = ("ikd-identity",)
    env: Mapping[str, str] | None = None

    @classmethod
    def parse(cls, command: str) -> IdentityCli:
        return cls(tuple(shlex.split(command)))

    def _run(self, *args: str) -> str:
        try:
            done = subprocess.run(  # noqa: S603  # the operator's own command line
                [*self.command, "clients", *args],
                capture_output=True,
                text=True,
                env=dict(self.env) if self.env is not None else None,
                check=False,
                timeout=120,
            )
        except OSError as error:
            raise OnboardingError(f"cannot run {shlex.join(self.command)}: {error}") from None
        if done.returncode != 0:
            why = (done.stderr or done.stdout).strip().splitlines()
            raise OnboardingError(
                f"{shlex.join(self.command)} clients {args[0]} failed: {why[-1] if why else ''}"
            )
        return done.stdout

    def register(self, agency: str) -> str:
        """Register (or re-enable) the agency's backend client with a new secret; the secret."""
        return self._add(client_id(agency), BACKEND_SCOPES, agency)

    def register_gateway(self, agency: str) -> str:
        """Register (or re-enable) the agency gateway's own client with a new secret."""
        return self._add(gateway_client_id(agency), GATEWAY_SCOPES, agency)

    def _add(self, client: str, scopes: Sequence[str], agency: str) -> str:
        out = self._run("add", "--id", client, "--scopes", " ".join(scopes), "--agency", agency)
        for line in out.splitlines():
            if line.startswith("secret: "):
                return line.removeprefix("secret: ").strip()
        raise OnboardingError("identity registered the client but printed no secret")

    def disable(self, agency: str) -> str:
        """Disable the agency's backend client; identity's one-line answer."""
        return self._run("disable", "--id", client_id(agency)).strip()

    def disable_gateway(self, agency: str) -> str:
        """Disable the agency gateway's client; identity's one-line answer."""
        return self._run("disable", "--id", gateway_client_id(agency)).strip()


@dataclass(frozen=True)
class AgencyCredentials:
    agency: str
    bootstrap_servers: str
    security_protocol: str
    sasl_mechanism: str
    username: str
    password: str
    ca_file: str | None
    topic: str
    group: str
    client_id: str
    client_secret: str

    def env_file(self) -> str:
        """As IKD_AGENCY_* lines: what `ikd-gateway agency-consume` reads."""
        values = {
            "IKD_AGENCY_BOOTSTRAP_SERVERS": self.bootstrap_servers,
            "IKD_AGENCY_SECURITY_PROTOCOL": self.security_protocol,
            "IKD_AGENCY_SASL_MECHANISM": self.sasl_mechanism,
            "IKD_AGENCY_USERNAME": self.username,
            "IKD_AGENCY_PASSWORD": self.password,
            "IKD_AGENCY_CA_FILE": self.ca_file or "",
            "IKD_AGENCY_TOPIC": self.topic,
            "IKD_AGENCY_GROUP": self.group,
            "IKD_AGENCY_OAUTH_CLIENT_ID": self.client_id,
            "IKD_AGENCY_OAUTH_CLIENT_SECRET": self.client_secret,
        }
        head = (
            f"# {self.agency}: its bus and API credentials, issued once (onboarding again "
            "replaces them). Keep secret.\n"
        )
        return head + "".join(f"{name}={value}\n" for name, value in values.items())


@dataclass(frozen=True)
class GatewayClient:
    """The gateway's own client at identity: its deployment reads the secret from a file
    (IKD_GATEWAY_IDENTITY_CLIENT_SECRET=@path)."""

    client_id: str
    secret: str


@dataclass(frozen=True)
class Onboarded:
    credentials: AgencyCredentials
    topic_created: bool
    grants: int
    gateway_client: GatewayClient


async def onboard(
    kafka: KafkaConnection,
    agency: str,
    *,
    identity: IdentityCli,
    prefix: str = "",
    replication_factor: int = 1,
    public: KafkaConnection | None = None,
) -> Onboarded:
    """Topic, principal with a new password, ACLs (the gateway's too), OAuth client.

    `kafka` is the operator's (admin) connection; `public`, where and how the agency connects
    (by default the same brokers, TLS with the same CA).
    """
    public = public or kafka
    spec = topics.agency_topic(agency)
    await wait_for_broker(kafka)
    created = await ensure_topics(
        kafka, prefix=prefix, replication_factor=replication_factor, specs=[spec]
    )
    principal = kafka_security.agency_principal(agency)
    # Hex: never mistaken for a placeholder by the settings' check.
    password = secrets.token_hex(24)
    await kafka_security.upsert_users(kafka, {principal: password})
    wanted = kafka_security.agency_grants(agency, prefix=prefix)
    applied, _ = await kafka_security.apply_acls(kafka, wanted)
    secret = identity.register(agency)
    gateway_client = GatewayClient(gateway_client_id(agency), identity.register_gateway(agency))
    credentials = AgencyCredentials(
        agency=agency,
        bootstrap_servers=public.bootstrap_servers,
        security_protocol=public.security_protocol,
        sasl_mechanism=public.sasl_mechanism,
        username=principal,
        password=password,
        ca_file=public.ca_file,
        topic=spec.full_name(prefix),
        group=kafka_security.agency_group(agency),
        client_id=client_id(agency),
        client_secret=secret,
    )
    return Onboarded(
        credentials, topic_created=bool(created), grants=applied, gateway_client=gateway_client
    )


@dataclass(frozen=True)
class Offboarded:
    had_credentials: bool
    acls_deleted: int
    client: str
    gateway_client: str
    topic: str
    topic_deleted: bool


async def offboard(
    kafka: KafkaConnection,
    agency: str,
    *,
    identity: IdentityCli,
    prefix: str = "",
    delete_topic: bool = False,
) -> Offboarded:
    """Remove the backend's credentials and ACLs, disable its client and the gateway's; the
    topic stays unless `delete_topic` (its gateway keeps publishing to it until the gateway is
    retired)."""
    principal = kafka_security.agency_principal(agency)
    await wait_for_broker(kafka)
    deleted = await kafka_security.delete_users(kafka, [principal])
    acls = await kafka_security.revoke_principal(kafka, principal)
    client = identity.disable(agency)
    gateway_client = identity.disable_gateway(agency)
    topic = topics.agency_topic(agency).full_name(prefix)
    removed = await _delete_topic(kafka, topic) if delete_topic else False
    return Offboarded(bool(deleted), acls, client, gateway_client, topic, removed)


async def _delete_topic(kafka: KafkaConnection, topic: str) -> bool:
    admin = kafka.admin()
    await admin.start()
    try:
        if topic not in await admin.list_topics():
            return False
        await admin.delete_topics([topic])
        return True
    finally:
        await admin.close()


def onboarded_clients(folder: Path) -> dict[str, str]:
    """client id -> secret from the credential files `onboard --out` wrote into `folder`."""
    found = {}
    for path in sorted(folder.glob("*.env")) if folder.is_dir() else []:
        values = dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
        if "IKD_AGENCY_OAUTH_CLIENT_ID" in values:
            found[values["IKD_AGENCY_OAUTH_CLIENT_ID"]] = values["IKD_AGENCY_OAUTH_CLIENT_SECRET"]
    return found


def write_private(path: Path, text: str) -> None:
    """Write `text` readable by its owner only, from the first byte on."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # an existing file keeps its mode otherwise
    with os.fdopen(fd, "w") as file:
        file.write(text)
