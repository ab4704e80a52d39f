"""Schemathesis against the audit API's OpenAPI, in-process (ASGI) with a real database: no 5xx."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import pytest
import schemathesis
from audit_support import Keys, access, audit_env, make_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ikd_audit.bootstrap import Services
from ikd_audit.entrypoints.app import create_app
from ikd_shared.events.profile_v1 import CitizenProfile

EXAMPLES_PER_OPERATION = 100


@pytest.fixture
async def seeded(services: Services, citizens: list[CitizenProfile]) -> None:
    """Entries and two signed tree heads, so that proofs and trails have data to read."""
    await services.log.record([access(c) for c in citizens])
    await services.log.sign_tree_head()
    await services.log.record([access(citizens[0]), access()])
    await services.log.sign_tree_head()


def test_api_never_answers_5xx(audit_db: Any, keys: Keys, seeded: None) -> None:
    app = create_app(
        make_settings(
            audit_env(
                keys,
                audit_db.app_dsn,
                "unused.",
                IKD_AUDIT_RUN_CONSUMER="false",
                IKD_AUDIT_PRUNE_INTERVAL_SECONDS="0",
            )
        )
    )
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    started = time.perf_counter()
    schema["/v1/log/public-key"][
        "GET"
    ].Case().call()  # starts the app's lifespan in schemathesis's loop
    token = keys.token({"audit:read"})
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
                    f"{case.method} {case.formatted_path} {case.query}: "
                    f"{response.status_code} {response.text[:300]}"
                )

        check()
    print(
        f"{len(operations)} operations fuzzed in {time.perf_counter() - started:.1f}s, "
        f"statuses: {dict(sorted(statuses.items()))}"
    )
    assert not failures, failures
