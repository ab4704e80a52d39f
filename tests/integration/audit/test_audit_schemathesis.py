"""Schemathesis against the audit API's OpenAPI, in-process (ASGI) with a real database: no 5xx."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis

from ikd_audit.bootstrap import AuditRuntime
from ikd_audit.entrypoints.app import create_app
from ikd_shared.events.profile_v1 import CitizenProfile
from tests.support.audit import Keys, access, audit_env, make_settings
from tests.support.fuzzing import fuzz_for_5xx

EXAMPLES_PER_OPERATION = 100


@pytest.fixture
async def seeded(runtime: AuditRuntime, citizens: list[CitizenProfile]) -> None:
    """Entries and two signed tree heads, so that proofs and trails have data to read."""
    await runtime.log.record([access(c) for c in citizens])
    await runtime.log.sign_tree_head()
    await runtime.log.record([access(citizens[0]), access()])
    await runtime.log.sign_tree_head()


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
    # The first call starts the app's lifespan in schemathesis's event loop thread.
    schema["/v1/log/public-key"]["GET"].Case().call()
    token = keys.token({"audit:read"})
    failures = fuzz_for_5xx(schema, token, examples=EXAMPLES_PER_OPERATION, min_operations=10)
    assert not failures, failures
