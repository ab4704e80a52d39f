"""Schemathesis against the OpenAPI document, in-process (ASGI) with a real database: no 5xx."""

from __future__ import annotations

import time
from collections import Counter

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ikd_identity.entrypoints.api import create_app

EXAMPLES_PER_OPERATION = 60


def test_api_never_answers_5xx(make_settings) -> None:
    app = create_app(make_settings(), run_relay=False)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    started = time.perf_counter()
    # The first call starts the app's lifespan in schemathesis's event loop thread.
    schema["/healthz"]["GET"].Case().call()
    container = app.state.container
    token = container.token_issuer.issue(
        "fuzzer",
        {"identity:verify", "identity:feed", "identity:consent"},
        ["ikd-identity"],
        agency="fuzz-agency",
    )
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    for operation in operations:

        @given(case=operation.as_strategy(), authenticated=st.booleans())
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case, authenticated: bool) -> None:
            headers = {"Authorization": f"Bearer {token}"} if authenticated else {}
            response = case.call(headers=headers)
            statuses[response.status_code] += 1
            if response.status_code >= 500:
                failures.append(
                    f"{case.method} {case.formatted_path}: "
                    f"{response.status_code} {response.text[:300]}"
                )
            assert response.status_code < 500

        check()
    print(
        f"{len(operations)} operations fuzzed in {time.perf_counter() - started:.1f}s, "
        f"statuses: {dict(sorted(statuses.items()))}"
    )
    assert not failures, failures
