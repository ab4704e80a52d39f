"""Schemathesis over every operation of an in-process ASGI app, with and without a token."""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st


def fuzz_for_5xx(schema: Any, token: str, *, examples: int, min_operations: int) -> list[str]:
    """Call each operation with generated input; return the calls that answered 5xx."""
    started = time.perf_counter()
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= min_operations
    failures: list[str] = []
    statuses: Counter[int] = Counter()
    for operation in operations:

        @given(case=operation.as_strategy(), authenticated=st.booleans())
        @settings(
            max_examples=examples,
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
    return failures
