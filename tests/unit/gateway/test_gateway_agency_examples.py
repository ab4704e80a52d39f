"""The agency guide's webhook examples verify what the gateway's signer produces, and refuse a
tampered body, another secret and an old timestamp; the guide's requests are documented."""

from __future__ import annotations

import base64
import datetime as dt
import importlib.util
import json
import re
import shutil
import subprocess
import uuid
from types import ModuleType
from typing import Any

import pytest
from standardwebhooks import WebhookVerificationError

from ikd_gateway.adapters.webhooks import SignedRequest, generate_secret, sign
from ikd_gateway.service_layer.unit_of_work import WebhookMessage
from ikd_gateway.service_layer.webhooks import TEST_EVENT, webhook_test_body
from tests.support.environment import REPO
from tests.support.gateway_factories import context
from tests.unit.shared.test_shared_nik_never_in_url import apps, operations

EXAMPLES = REPO / "docs" / "examples"
GUIDE = REPO / "docs" / "agency-guide.md"


def python_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("verify_webhook", EXAMPLES / "verify_webhook.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def delivery(secret: str, at: dt.datetime | None = None) -> SignedRequest:
    """A test event as the dispatcher builds and signs it."""
    now = at or dt.datetime.now(dt.UTC)
    message = WebhookMessage(uuid.uuid4(), uuid.uuid4(), "", 0, TEST_EVENT, ())
    body = webhook_test_body(context("dinsos-cirebon"), message, now)
    return sign(secret, str(message.id), now, body)


def tampered(request: SignedRequest) -> bytes:
    return request.body.replace(b"dinsos-cirebon", b"dinsos-cirebox")


def test_the_python_example_verifies_the_gateways_signature() -> None:
    verify = python_example().verify
    secret = generate_secret()
    request = delivery(secret)
    event = verify(secret, request.headers, request.body)
    assert (event["type"], event["data"]["agency"]) == (TEST_EVENT, "dinsos-cirebon")
    old = delivery(secret, dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    for args in (
        (secret, request.headers, tampered(request)),
        (generate_secret(), request.headers, request.body),
        (secret, old.headers, old.body),
    ):
        with pytest.raises(WebhookVerificationError):
            verify(*args)


def node(secret: str, headers: dict[str, str], body: bytes) -> subprocess.CompletedProcess[str]:
    stdin = {"secret": secret, "headers": headers, "body": base64.b64encode(body).decode()}
    return subprocess.run(  # noqa: S603 - node on our own example
        ["node", str(EXAMPLES / "verify-webhook.mjs"), "--check"],  # noqa: S607
        input=json.dumps(stdin),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_node_example_verifies_the_gateways_signature() -> None:
    secret = generate_secret()
    request = delivery(secret)
    done = node(secret, request.headers, request.body)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["type"] == TEST_EVENT
    old = delivery(secret, dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    for args in (
        (secret, request.headers, tampered(request)),
        (generate_secret(), request.headers, request.body),
        (secret, old.headers, old.body),
    ):
        assert node(*args).returncode == 1


def test_every_request_in_the_guide_is_a_documented_gateway_operation() -> None:
    document: dict[str, Any] = apps()["gateway"].openapi()
    documented = [
        (method, re.compile("^" + re.sub(r"\{[^}]+\}", "[^/]+", path) + "$"))
        for method, path, _ in operations(document)
    ]
    text = GUIDE.read_text()
    asked = re.findall(r"-X (GET|POST|DELETE) \"?\$GATEWAY(/v1/[^\s\"?]*)", text)
    assert len(asked) >= 6, asked
    for method, path in asked:
        concrete = re.sub(r"\$\{?\w+\}?", "x", path)
        assert any(m == method and p.match(concrete) for m, p in documented), (method, path)
