"""Schemathesis against the gateway's OpenAPI document, in-process (ASGI) with a real agency
database and topics: no 5xx, and the responses conform to the schema."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from ikd_gateway.config import GatewaySettings
from ikd_gateway.entrypoints.api import create_app
from tests.support.gateway import gateway_env
from tests.support.gateway_factories import POLICY, Tokens

AGENCY = "bank-bjb"
EXAMPLES_PER_OPERATION = 40
CONFORMANCE = [status_code_conformance, content_type_conformance, response_schema_conformance]


def test_api_never_answers_5xx(
    gateway_db: Any, session_topic_prefix: str, tokens: Tokens, tmp_path: Path
) -> None:
    env = gateway_env(AGENCY, gateway_db, session_topic_prefix, tokens, tmp_path)
    gateway_settings = GatewaySettings(
        **{  # type: ignore[arg-type]
            "agency": AGENCY,
            "database_url": gateway_db.app_dsn,
            "token_jwks": env["IKD_GATEWAY_TOKEN_JWKS"],
            # No DNS look-ups of generated host names; the URL checks have their own tests.
            "webhook_allow_private_targets": True,
        }
    ).model_copy(update={"kafka_topic_prefix": session_topic_prefix})
    # The app's lifespan opens the pool and producer in schemathesis's event loop thread.
    app = create_app(gateway_settings)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    services = [service.code for service in POLICY.agency(AGENCY).services]
    token = tokens.for_agency(AGENCY, {"gateway:prefill", "gateway:webhooks"})
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 4
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    started = time.perf_counter()
    for operation in operations:

        @given(
            case=operation.as_strategy(),
            authenticated=st.booleans(),
            service=st.none() | st.sampled_from(services),
        )
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def check(case: schemathesis.Case, authenticated: bool, service: str | None) -> None:
            if service is not None and isinstance(case.body, dict) and "service" in case.body:
                case.body["service"] = service  # get past the policy check to the database
            headers = {"Authorization": f"Bearer {token}"} if authenticated else {}
            response = case.call(headers=headers)
            statuses[response.status_code] += 1
            where = f"{case.method} {case.formatted_path}"
            if response.status_code >= 500:
                failures.append(f"{where}: {response.status_code} {response.text[:300]}")
            try:
                case.validate_response(response, checks=CONFORMANCE)
            except (AssertionError, ExceptionGroup) as failure:
                failures.append(f"{where}: {str(failure)[:300]}")

        check()
    print(
        f"{len(operations)} operations fuzzed in {time.perf_counter() - started:.1f}s, "
        f"statuses: {dict(sorted(statuses.items()))}"
    )
    assert not failures, sorted(set(failures))[:20]
