"""Schemathesis against the OpenAPI document, in-process (ASGI) with a real database: no 5xx."""

from __future__ import annotations

import schemathesis

from ikd_identity.entrypoints.api import create_app
from tests.support.fuzzing import fuzz_for_5xx

EXAMPLES_PER_OPERATION = 60


def test_api_never_answers_5xx(make_settings) -> None:
    app = create_app(make_settings(), run_relay=False)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    # The first call starts the app's lifespan in schemathesis's event loop thread.
    schema["/healthz"]["GET"].Case().call()
    container = app.state.container
    token = container.token_issuer.issue(
        "fuzzer",
        {"identity:verify", "identity:feed", "identity:consent", "identity:register"},
        ["ikd-identity"],
        agency="fuzz-agency",
    )
    failures = fuzz_for_5xx(schema, token, examples=EXAMPLES_PER_OPERATION, min_operations=10)
    assert not failures, failures
