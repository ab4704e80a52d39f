"""Create the development key files under .run/dev/ once (never used outside development).

`dev_secrets.py --agencies` prints the agency codes IKD_DEMO_AGENCIES stands for (`all`: the
whole MPP of the policy).

- token-signing.pem / token-jwks.json: the identity service's access-token key and its JWKS
- dukcapil-issuer.pem / dukcapil-jwks.json: a development IKD issuer and the trust anchors
- tree-head.pem: the audit log's tree-head key, read by `ikd-audit signer` alone (the service
  gets log.vkey, which `make up` derives from it)
- witness.pem: the demo witness's own cosigning key (in production another organisation's)
- kafka/: the broker's development CA (ca.pem), its TLS key and certificate chain (broker.pem,
  a PEM keystore) and one SCRAM password file per Kafka principal (<principal>.password)
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import secrets
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ikd_dev.issuer import generate_issuer_key, public_jwk
from ikd_shared.auth import TokenIssuer
from ikd_shared.policy import DEFAULT_POLICY, load_policy


def write_pem(path: Path, key: Ed25519PrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


# The broker's own identities: `broker` (inter-broker SCRAM) and the controller listener's
# client certificate, whose CN the broker maps to the principal `controller`.
KAFKA_FIXED_PRINCIPALS = ("admin", "broker", "identity", "audit")


def kafka_principals(agencies: list[str]) -> list[str]:
    # Agency backends get theirs from `ikdctl agencies onboard` (make up), which issues a fresh
    # password each time: a file here would reset it whenever `kafka users apply` runs.
    return [*KAFKA_FIXED_PRINCIPALS, *(f"gateway-{code}" for code in agencies)]


DEV_ENV = Path(__file__).resolve().parent.parent / "dev.env"
ALL_AGENCIES = "all"
"""IKD_DEMO_AGENCIES=all: every agency of the policy (the whole MPP)."""


def _dev_env_agencies() -> str:
    for line in DEV_ENV.read_text().splitlines():
        if line.startswith("IKD_DEMO_AGENCIES="):
            return line.partition("=")[2]
    return ""


def expand_agencies(value: str, policy_file: Path = DEFAULT_POLICY) -> list[str]:
    """The agency codes IKD_DEMO_AGENCIES names; `all`: dev.env's demo agencies first (their
    ports stay those of the small demo, which the walkthrough knows), then the rest of the
    policy in its order."""
    if value.strip() != ALL_AGENCIES:
        return value.split()
    codes = [agency.code for agency in load_policy(policy_file).agencies]
    first = [code for code in _dev_env_agencies().split() if code in codes]
    return [*first, *(code for code in codes if code not in first)]


def demo_agencies() -> list[str]:
    value = os.environ.get("IKD_DEMO_AGENCIES")
    return expand_agencies(_dev_env_agencies() if value is None else value)


def _write_private(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(x509.NameOID.ORGANIZATION_NAME, "IKD MPP development"),
            x509.NameAttribute(x509.NameOID.COMMON_NAME, common_name),
        ]
    )


def _pkcs8(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def write_kafka_tls(out: Path) -> None:
    """A development CA and the broker's certificate (localhost, 127.0.0.1), 2 years."""
    if (out / "broker.pem").exists():
        return
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("IKD MPP development Kafka CA"))
        .issuer_name(_name("IKD MPP development Kafka CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=730))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    broker_key = ec.generate_private_key(ec.SECP256R1())
    hosts = x509.SubjectAlternativeName(
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    # One certificate for both listeners: the client listener's server identity and the
    # controller listener's mutual-TLS identity (CN=controller), so both usages are allowed.
    usages = [x509.ExtendedKeyUsageOID.SERVER_AUTH, x509.ExtendedKeyUsageOID.CLIENT_AUTH]
    broker = (
        x509.CertificateBuilder()
        .subject_name(_name("controller"))
        .issuer_name(ca.subject)
        .public_key(broker_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=730))
        .add_extension(hosts, critical=False)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    (out / "ca.pem").write_bytes(ca.public_bytes(pem))
    _write_private(out / "ca.key", _pkcs8(ca_key))
    # Kafka's PEM keystore: the PKCS8 key, then the certificate chain.
    _write_private(
        out / "broker.pem", _pkcs8(broker_key) + broker.public_bytes(pem) + ca.public_bytes(pem)
    )


def write_kafka_passwords(out: Path, principals: list[str]) -> None:
    """One random SCRAM password per principal; existing ones are kept."""
    for principal in principals:
        path = out / f"{principal}.password"
        if not path.exists():
            # Hex: never mistaken for a placeholder by the settings' check.
            _write_private(path, secrets.token_hex(24).encode())


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    kafka = out / "kafka"
    kafka.mkdir(exist_ok=True)
    write_kafka_tls(kafka)
    write_kafka_passwords(kafka, kafka_principals(demo_agencies()))
    if not (out / "witness.pem").exists():
        write_pem(out / "witness.pem", Ed25519PrivateKey.generate())
    if (out / "token-jwks.json").exists():
        return
    token_key = Ed25519PrivateKey.generate()
    write_pem(out / "token-signing.pem", token_key)
    issuer = TokenIssuer(token_key, kid="dev-token-1", issuer="ikd-identity")
    (out / "token-jwks.json").write_text(json.dumps(issuer.jwks(), indent=2))

    dukcapil = generate_issuer_key("EdDSA")
    assert isinstance(dukcapil, Ed25519PrivateKey)
    write_pem(out / "dukcapil-issuer.pem", dukcapil)
    anchors = {"keys": [public_jwk(dukcapil, "dev-dukcapil-1")]}
    (out / "dukcapil-jwks.json").write_text(json.dumps(anchors, indent=2))

    write_pem(out / "tree-head.pem", Ed25519PrivateKey.generate())
    print(f"development keys written to {out}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--agencies"]:  # services.sh: the codes IKD_DEMO_AGENCIES stands for
        print(" ".join(demo_agencies()))
    else:
        main(Path(sys.argv[1] if len(sys.argv) > 1 else ".run/dev"))
