"""A disclosed field's digest stays what it was: fingerprints already published are compared
with new ones, and a different digest of the same value would publish an unchanged citizen."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from ikd_gateway.domain.model import fingerprint


def json_digest(value: Any) -> str:
    """The digest as first written: json.dumps of the value, dates as ISO strings."""

    def iso(v: Any) -> str:
        return v.isoformat() if isinstance(v, dt.date) else str(v)

    encoded = json.dumps(value, sort_keys=True, default=iso, separators=(",", ":"))
    return hashlib.sha256(encoded.encode()).hexdigest()


values = st.one_of(
    st.text(),
    st.dates(),
    st.datetimes(timezones=st.just(dt.UTC)),
    st.integers(),
    st.none(),
    st.lists(st.text(), max_size=3),
)


@given(st.dictionaries(st.text(min_size=1, max_size=8), values, max_size=5))
def test_digests_are_those_of_json_dumps(fields: dict[str, Any]) -> None:
    assert fingerprint({"svc": fields}) == {
        "svc": {name: json_digest(value) for name, value in sorted(fields.items())}
    }


def test_a_date_and_its_iso_string_digest_alike() -> None:
    born = dt.date(1990, 5, 17)
    assert fingerprint({"s": {"d": born}}) == fingerprint({"s": {"d": "1990-05-17"}})
    assert fingerprint({"s": {"n": 'Jalan Ñ "1"'}}) != fingerprint({"s": {"n": "Jalan N 1"}})
