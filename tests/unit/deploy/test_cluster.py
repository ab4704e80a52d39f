"""deploy/cluster/: the three-broker reference configuration, checked statically."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tests.support.deploy import (
    CLUSTER_FILE,
    CLUSTER_SECRETS,
    INTERPOLATION,
    KAFKA_START,
    REPO,
    REQUIRED_REFERENCE,
    broker_properties,
    environment,
    load_compose,
    read_env_file,
    volume_source_target,
)

CLUSTER = load_compose(CLUSTER_FILE)
BROKERS: dict[str, dict[str, Any]] = CLUSTER["services"]


def _protocols(properties: dict[str, str]) -> dict[str, str]:
    pairs = properties["listener.security.protocol.map"].split(",")
    return dict(pair.split(":", 1) for pair in pairs)


def test_three_combined_nodes_that_all_vote() -> None:
    assert sorted(BROKERS) == ["kafka-1", "kafka-2", "kafka-3"]
    ids = sorted(int(environment(b)["KAFKA_NODE_ID"]) for b in BROKERS.values())
    assert ids == [1, 2, 3]
    for name, broker in BROKERS.items():
        voters = environment(broker)["KAFKA_CONTROLLER_QUORUM_VOTERS"]
        assert f"{environment(broker)['KAFKA_NODE_ID']}@{name}:9093" in voters.split(",")


@pytest.mark.parametrize("name", sorted(BROKERS))
def test_every_listener_and_inter_node_link_is_authenticated(name: str) -> None:
    properties = broker_properties(environment(BROKERS[name]))
    protocols = _protocols(properties)
    assert set(protocols.values()) <= {"SASL_SSL", "SSL"}, "no PLAINTEXT listener"
    controller = properties["controller.listener.names"]
    assert protocols[controller] == "SSL"
    assert properties[f"listener.name.{controller.lower()}.ssl.client.auth"] == "required"
    inter_broker = properties["inter.broker.listener.name"]
    assert protocols[inter_broker] == "SASL_SSL"
    assert properties["sasl.mechanism.inter.broker.protocol"] == "SCRAM-SHA-512"
    for listener in properties["advertised.listeners"].split(","):
        assert protocols[listener.split("://")[0]] == "SASL_SSL", listener
        assert listener.endswith(f"//{name}:9092"), "its certificate's name"
    assert properties["authorizer.class.name"].endswith(".StandardAuthorizer")
    assert properties["allow.everyone.if.no.acl.found"] == "false"
    assert sorted(properties["super.users"].split(";")) == [
        "User:admin",
        "User:broker",
        "User:controller",
    ]
    assert properties["min.insync.replicas"] == "2"
    assert properties["unclean.leader.election.enable"] == "false"


@pytest.mark.parametrize("name", sorted(BROKERS))
def test_every_broker_has_its_own_certificates_from_secrets(name: str) -> None:
    broker = BROKERS[name]
    env = environment(broker)
    assert broker["entrypoint"] == ["bash", "/opt/ikd/kafka-start.sh"]
    mounts = dict(volume_source_target(v) for v in broker["volumes"])
    start = mounts.get("../compose/kafka-start.sh")
    assert start == "/opt/ikd/kafka-start.sh"
    assert (CLUSTER_FILE.parent / "../compose/kafka-start.sh").resolve() == KAFKA_START
    assert env["IKD_KAFKA_CA_FILE"] in mounts.values()
    node = name.upper().replace("-", "_")
    for setting, variable in (
        ("IKD_KAFKA_BROKER_KEYSTORE", f"IKD_{node}_BROKER_KEYSTORE"),
        ("IKD_KAFKA_CONTROLLER_KEYSTORE", f"IKD_{node}_CONTROLLER_KEYSTORE"),
        ("IKD_KAFKA_ADMIN_PASSWORD", "IKD_KAFKA_ADMIN_PASSWORD"),
        ("IKD_KAFKA_BROKER_PASSWORD", "IKD_KAFKA_BROKER_PASSWORD"),
    ):
        match = REQUIRED_REFERENCE.fullmatch(env[setting])
        assert match, setting
        assert match["name"] == variable
    check = " ".join(broker["healthcheck"]["test"])
    assert "--command-config /opt/kafka/config/ikd/admin.properties" in check


@pytest.mark.skipif(shutil.which("openssl") is None, reason="make-secrets.sh needs openssl")
def test_make_secrets_covers_the_file_with_per_broker_certificates(tmp_path: Path) -> None:
    out = tmp_path / "cluster.env"
    command = ["bash", str(CLUSTER_SECRETS), "--out", str(out)]
    subprocess.run(command, check=True, capture_output=True)  # noqa: S603
    assert out.stat().st_mode & 0o077 == 0
    variables = read_env_file(out)
    required = {
        m["name"] for m in INTERPOLATION.finditer(CLUSTER_FILE.read_text()) if m["op"] == ":?"
    }
    assert required <= set(variables)
    ca = x509.load_pem_x509_certificate(Path(variables["IKD_KAFKA_CA_HOST_FILE"]).read_bytes())
    for name in BROKERS:
        node = name.upper().replace("-", "_")
        for kind, subject in (("BROKER", name), ("CONTROLLER", "controller")):
            certificate = x509.load_pem_x509_certificates(
                variables[f"IKD_{node}_{kind}_KEYSTORE"].encode()
            )[0]
            certificate.verify_directly_issued_by(ca)
            cn = certificate.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
            assert cn == subject
            san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            assert san.value.get_values_for_type(x509.DNSName) == [name]


def test_the_readme_says_who_does_what_and_how_to_rotate() -> None:
    readme = (REPO / "deploy" / "cluster" / "README.md").read_text()
    for principal in ("admin", "broker", "controller", "identity", "audit", "gateway-", "agency-"):
        assert re.search(rf"`{principal}", readme), principal
    assert "rotat" in readme.lower()


# What the local cluster (deploy/scripts/kafka.sh with IKD_KAFKA_BROKERS=3, which make
# test-cluster runs) and this file must agree on: roles, security, replication.
SAME_SETTINGS = (
    "process.roles",
    "sasl.enabled.mechanisms",
    "sasl.mechanism.inter.broker.protocol",
    "ssl.principal.mapping.rules",
    "authorizer.class.name",
    "allow.everyone.if.no.acl.found",
    "super.users",
    "auto.create.topics.enable",
    "num.partitions",
    "default.replication.factor",
    "min.insync.replicas",
    "unclean.leader.election.enable",
    "offsets.topic.replication.factor",
    "transaction.state.log.replication.factor",
    "transaction.state.log.min.isr",
    "share.coordinator.state.topic.replication.factor",
    "share.coordinator.state.topic.min.isr",
)


def _local_node(node: int) -> dict[str, str]:
    env = {**os.environ, "IKD_KAFKA_BROKERS": "3"}
    script = REPO / "deploy" / "scripts" / "kafka.sh"
    result = subprocess.run(  # noqa: S603 - the project's own script
        [shutil.which("bash") or "/bin/bash", str(script), "properties", str(node)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    pairs = (
        line.split("=", 1)
        for line in result.stdout.splitlines()
        if line and not line.startswith("#")
    )
    return dict(pairs)


def _listener_protocols(properties: dict[str, str]) -> dict[str, str]:
    """The protocol of each role: clients (advertised), inter-broker, controller."""
    protocols = _protocols(properties)
    advertised = {
        protocols[listener.split("://")[0]]
        for listener in properties["advertised.listeners"].split(",")
        if listener.split("://")[0] != properties["controller.listener.names"]
    }
    return {
        "clients": ",".join(sorted(advertised)),
        "inter-broker": protocols[properties["inter.broker.listener.name"]],
        "controller": protocols[properties["controller.listener.names"]],
        "controller client auth": properties[
            f"listener.name.{properties['controller.listener.names'].lower()}.ssl.client.auth"
        ],
    }


@pytest.mark.parametrize("node", [1, 2, 3])
def test_the_local_cluster_runs_these_settings(node: int) -> None:
    local = _local_node(node)
    compose = broker_properties(environment(BROKERS[f"kafka-{node}"]))
    for setting in SAME_SETTINGS:
        assert local.get(setting) == compose.get(setting), setting
    assert _listener_protocols(local) == _listener_protocols(compose)
    assert local["node.id"] == compose["node.id"] == str(node)
    # the same static quorum of three voters, node N at its own controller address
    local_voters = local["controller.quorum.voters"].split(",")
    compose_voters = compose["controller.quorum.voters"].split(",")
    assert [v.split("@")[0] for v in local_voters] == [v.split("@")[0] for v in compose_voters]
    assert len(local_voters) == 3
    # each node its own certificate
    assert local["ssl.keystore.location"].endswith(f"/node-{node}/node.pem")
