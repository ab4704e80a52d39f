"""The three APIs' OpenAPI documents as client generators read them: every operation has a
clean, stable, unique id, and every operation that takes a token declares the OAuth2
client-credentials scheme with the scope it requires."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.utils import generate_unique_id

from ikd_audit.witness.app import create_app as witness_app
from ikd_gateway.adapters.webhooks import generate_secret
from ikd_gateway.entrypoints.receiver import create_receiver_app
from ikd_shared.auth import Scope
from ikd_shared.openapi import OAUTH2, OPERATION_ID
from tests.unit.audit.test_audit_witness import Log
from tests.unit.audit.test_audit_witness import settings as witness_settings
from tests.unit.shared.test_shared_nik_never_in_url import apps, operations

# Operations that take no access token, each for a reason.
PUBLIC = {
    "identity": {
        "POST /oauth/token",  # where the token comes from
        "GET /.well-known/jwks.json",  # the keys that verify it
        # The citizen's own consent credential, in the body, authenticates these.
        "POST /v1/citizen/consents",
        "POST /v1/citizen/consents/{consent_id}/revoke",
    },
    "gateway": set(),
    "audit": {
        "POST /v1/citizen/trail",  # the citizen's trail credential, in the body
        # The public log: checkpoints, proofs, the verifier key, witnesses' cosignatures.
        "GET /v1/log/checkpoint",
        "GET /v1/log/checkpoints/{tree_size}",
        "GET /v1/log/vkey",
        "GET /v1/log/info",
        "GET /v1/log/proof/consistency",
        "GET /v1/log/proof/inclusion",
        "POST /v1/log/cosignatures",
    },
}
PROBES = {"GET /healthz", "GET /readyz", "GET /metrics"}

# The agency-facing API's ids are what generated clients call: renaming one breaks them.
GATEWAY_IDS = {
    "GET /v1/prefill/{service}": "prefillByPseudonym",
    "POST /v1/prefill/{service}/lookup": "prefillByNik",
    "POST /v1/registrations": "registerCitizen",
    "POST /v1/registrations/{relationship_id}/end": "endRegistration",
    "GET /v1/webhooks/endpoints": "listWebhookEndpoints",
    "POST /v1/webhooks/endpoints": "createWebhookEndpoint",
    "DELETE /v1/webhooks/endpoints/{endpoint_id}": "disableWebhookEndpoint",
    "GET /v1/webhooks/endpoints/{endpoint_id}/deliveries": "listWebhookDeliveries",
    "POST /v1/webhooks/endpoints/{endpoint_id}/test": "sendWebhookTestEvent",
    "POST /v1/webhooks/endpoints/{endpoint_id}/rotate-secret": "rotateWebhookSecret",
    "POST /v1/webhooks/endpoints/{endpoint_id}/messages/{webhook_id}/redeliver": (
        "redeliverWebhookMessage"
    ),
}


@pytest.fixture(scope="module")
def built() -> dict[str, tuple[FastAPI, dict[str, Any]]]:
    return {name: (app, app.openapi()) for name, app in apps().items()}


def all_operations(document: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    found = [(f"{method} {path}", op) for method, path, op in operations(document)]
    for name, item in document.get("webhooks", {}).items():
        found += [(f"webhook {method.upper()} {name}", op) for method, op in item.items()]
    return found


def test_every_operation_id_is_set_unique_camel_case_and_not_generated(
    built: dict[str, tuple[FastAPI, dict[str, Any]]],
) -> None:
    for service, (app, document) in built.items():
        ids = [(where, op.get("operationId")) for where, op in all_operations(document)]
        assert ids, service
        missing = [where for where, op_id in ids if not op_id]
        assert missing == [], (service, missing)
        bad = [(where, i) for where, i in ids if not OPERATION_ID.fullmatch(i or "")]
        assert bad == [], (service, bad)
        names = [i for _, i in ids]
        assert len(names) == len(set(names)), (service, sorted(names))
        # FastAPI's own ids carry the path and the method (`list_entries_v1_entries_get`).
        generated = {generate_unique_id(r) for r in app.routes if isinstance(r, APIRoute)}
        assert not generated & set(names), service
        for name in names:
            assert "v1" not in name.lower(), (service, name)


def test_the_gateway_operation_ids_are_the_published_ones(
    built: dict[str, tuple[FastAPI, dict[str, Any]]],
) -> None:
    _, document = built["gateway"]
    ids = {
        f"{method} {path}": op["operationId"]
        for method, path, op in operations(document)
        if f"{method} {path}" not in PROBES
    }
    assert ids == GATEWAY_IDS


def test_every_protected_operation_declares_oauth2_with_its_scope(
    built: dict[str, tuple[FastAPI, dict[str, Any]]],
) -> None:
    scopes = {scope.value for scope in Scope}
    for service, (_, document) in built.items():
        schemes = document["components"]["securitySchemes"]
        assert set(schemes) == {OAUTH2}, service
        flow = schemes[OAUTH2]["flows"]["clientCredentials"]
        assert flow["tokenUrl"].endswith("/oauth/token")
        declared = set(flow["scopes"])
        assert declared <= scopes
        unprotected = set()
        for method, path, operation in operations(document):
            where = f"{method} {path}"
            security = operation.get("security")
            if not security:
                unprotected.add(where)
                continue
            assert security == [{OAUTH2: security[0][OAUTH2]}], (service, where, security)
            [needed] = security[0][OAUTH2]
            assert needed in declared, (service, where, needed)
        # Exactly the operations known to be public: a new route without a token fails here.
        assert unprotected - PROBES == PUBLIC[service], service


def test_scopes_per_route_are_the_ones_the_gateway_enforces(
    built: dict[str, tuple[FastAPI, dict[str, Any]]],
) -> None:
    _, document = built["gateway"]
    scope_of = {
        f"{method} {path}": operation["security"][0][OAUTH2][0]
        for method, path, operation in operations(document)
        if operation.get("security")
    }
    assert scope_of["POST /v1/prefill/{service}/lookup"] == Scope.PREFILL
    assert scope_of["POST /v1/registrations"] == Scope.REGISTRATIONS
    for where, scope in scope_of.items():
        if "/webhooks/" in where:
            assert scope == Scope.WEBHOOKS, where


def test_the_witness_and_the_example_receiver_have_clean_ids(tmp_path: Path) -> None:
    receiver = create_receiver_app(generate_secret())
    witness = witness_app(witness_settings(Log(), tmp_path), poll=False)
    for app in (receiver, witness):
        names = [op["operationId"] for _, _, op in operations(app.openapi())]
        assert names, app.title
        assert all(OPERATION_ID.fullmatch(name) for name in names), names
        assert len(names) == len(set(names)), names
