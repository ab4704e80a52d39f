"""Percentiles of one run and summaries over repeated runs (median and spread)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by linear interpolation between closest ranks.

    The same definition as numpy's default ("linear"); NaN for no values.
    """
    if not 0 <= q <= 100:
        raise ValueError("q must lie in [0, 100]")
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max in milliseconds of one run's latencies given in seconds."""
    ms = [s * 1000 for s in seconds]
    return {
        "count": len(ms),
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms) if ms else math.nan,
    }


def spread(values: Iterable[float]) -> dict[str, float]:
    """Median, min and max of one figure over repeated runs (NaNs left out)."""
    present = [v for v in values if not math.isnan(v)]
    if not present:
        return {"median": math.nan, "min": math.nan, "max": math.nan, "runs": 0}
    return {
        "median": statistics.median(present),
        "min": min(present),
        "max": max(present),
        "runs": len(present),
    }


def summarize_runs(runs: Sequence[dict[str, Any]], keys: Iterable[str]) -> dict[str, Any]:
    """For each key, the spread of that (numeric) figure over the runs."""
    return {key: spread(float(run[key]) for run in runs if key in run) for key in keys}
