"""A NIK never travels in a URL: no operation of the three HTTP APIs takes a query or path
parameter named like a NIK; the operations that take a NIK take it in their JSON body."""

from __future__ import annotations

import json
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import FastAPI

from ikd_audit.entrypoints.app import create_app as audit_app
from ikd_dev.issuer import generate_issuer_key, public_jwk
from ikd_gateway.config import GatewaySettings
from ikd_gateway.entrypoints.api import create_app as gateway_app
from ikd_identity.config import IdentitySettings
from ikd_identity.entrypoints.api import create_app as identity_app
from tests.support.audit import Keys, audit_env, make_settings
from tests.support.gateway_factories import PSEUDONYM_KEY, Tokens

UNUSED_DB = "postgresql://unused:unused@127.0.0.1:1/unused"


def apps() -> dict[str, FastAPI]:
    """The three APIs as their processes build them (nothing is started)."""
    token_key = Ed25519PrivateKey.generate()
    dukcapil = generate_issuer_key("EdDSA")
    trust = json.dumps({"keys": [public_jwk(dukcapil, "dukcapil-test-1")]})
    pem = token_key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    identity = IdentitySettings(
        database_url=UNUSED_DB,  # type: ignore[arg-type]
        trust_jwks=trust,  # type: ignore[arg-type]
        token_signing_key=pem,  # type: ignore[arg-type]
        environment="development",  # type: ignore[arg-type]
    )
    tokens = Tokens()
    gateway = GatewaySettings(
        agency="polres-cirebon",
        database_url=UNUSED_DB,  # type: ignore[arg-type]
        token_jwks=json.dumps(tokens.jwks()),
        pseudonym_key=PSEUDONYM_KEY.decode(),  # type: ignore[arg-type]
        environment="development",  # type: ignore[arg-type]
    )
    keys = Keys(tree_head=token_key, tokens=tokens.issuer, dukcapil=dukcapil)
    audit = make_settings(audit_env(keys, UNUSED_DB, "unused."))
    return {
        "identity": identity_app(identity),
        "gateway": gateway_app(gateway),
        "audit": audit_app(audit),
    }


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in {"get", "put", "post", "delete", "patch", "head", "options"}
    ]


def body_properties(document: dict[str, Any], operation: dict[str, Any]) -> set[str]:
    content = operation.get("requestBody", {}).get("content", {})
    schema = content.get("application/json", {}).get("schema", {})
    if "$ref" in schema:
        schema = document["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return set(schema.get("properties", {}))


def test_no_api_takes_a_nik_in_a_query_string_or_a_path() -> None:
    in_url: list[str] = []
    in_body: dict[str, set[str]] = {}
    for service, app in apps().items():
        document = app.openapi()
        for method, path, operation in operations(document):
            for parameter in operation.get("parameters", []):
                if parameter["in"] in {"query", "path"} and "nik" in parameter["name"].lower():
                    in_url.append(f"{service}: {method} {path} ({parameter['name']})")
            if "nik" in path.lower():
                in_url.append(f"{service}: {method} {path}")
            if "nik" in body_properties(document, operation):
                in_body.setdefault(service, set()).add(f"{method} {path}")
    assert in_url == []
    # The searches and look-ups by NIK exist, as POSTs with the NIK in the body.
    assert {"POST /v1/prefill/{service}/lookup"} <= in_body["gateway"]
    assert {"POST /v1/entries/search"} <= in_body["audit"]
    assert all(route.startswith("POST ") for routes in in_body.values() for route in routes)
