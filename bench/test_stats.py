"""Unit tests of the bench's statistics (run: .venv/bin/pytest bench/test_stats.py)."""

from __future__ import annotations

import math

import pytest

from bench.stats import latency_summary, percentile, spread, summarize_runs


def test_percentile_interpolates_like_numpy_linear() -> None:
    values = [1.0, 2.0, 3.0, 4.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == 2.5
    assert percentile(values, 95) == pytest.approx(3.85)


def test_percentile_of_one_value_and_of_none() -> None:
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))
    with pytest.raises(ValueError, match="q must"):
        percentile([1.0], 101)


def test_percentile_ignores_input_order() -> None:
    assert percentile([5.0, 1.0, 3.0], 50) == 3.0


def test_latency_summary_in_milliseconds() -> None:
    summary = latency_summary([0.010] * 99 + [0.5])
    assert summary["count"] == 100
    assert summary["p50_ms"] == pytest.approx(10.0)
    assert summary["max_ms"] == pytest.approx(500.0)
    assert 10.0 < summary["p99_ms"] < 500.0


def test_spread_over_runs_skips_missing_figures() -> None:
    assert spread([3.0, 1.0, 2.0]) == {"median": 2.0, "min": 1.0, "max": 3.0, "runs": 3}
    assert spread([math.nan, 4.0])["median"] == 4.0
    assert spread([])["runs"] == 0
    runs = [{"rate": 10.0}, {"rate": 30.0}, {"other": 1.0}]
    assert summarize_runs(runs, ["rate"])["rate"]["median"] == 20.0
