"""A leaf's times keep their one textual form (the log's hashes depend on it byte for byte)."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ikd_shared.transparency import format_time, parse_time


def strftime_form(value: dt.datetime) -> str:
    """The form the log was written with from its start."""
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@given(
    st.datetimes(min_value=dt.datetime(1000, 1, 2), max_value=dt.datetime(9999, 12, 30)),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
)
def test_any_aware_time_is_written_as_before(naive: dt.datetime, minutes: int) -> None:
    value = naive.replace(tzinfo=dt.timezone(dt.timedelta(minutes=minutes)))
    assert format_time(value) == strftime_form(value)
    assert parse_time(format_time(value)) == value


def test_utc_times_and_whole_seconds_keep_their_microseconds() -> None:
    value = dt.datetime(2026, 11, 30, 14, 0, 5, tzinfo=dt.UTC)
    assert format_time(value) == "2026-11-30T14:00:05.000000Z"


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        format_time(dt.datetime(2026, 1, 1))
