"""Unit tests of the citizen ranges and the scaling measurement's pieces (run: .venv/bin/pytest
bench/test_scaling.py)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from bench import bulk, run, scaling, scaling_report, verify
from bench.backfill import Process


@pytest.mark.parametrize("plan", [run.FULL, run.QUICK], ids=["full", "quick"])
def test_every_section_feeds_citizens_no_other_section_fed(plan: run.Plan) -> None:
    ranges = run.citizen_ranges(plan)
    assert len(ranges) == 8
    for (a, first), (b, second) in itertools.combinations(ranges.items(), 2):
        assert not set(first) & set(second), f"ranges {a} and {b} overlap"
    for index, indexes in ranges.items():
        assert indexes.start == index * bulk.RUN_STRIDE
        assert len(indexes) <= bulk.RUN_STRIDE


def test_the_verification_minter_starts_in_its_own_range() -> None:
    assert verify.FIRST_INDEX == run.VERIFIED * bulk.RUN_STRIDE


def test_an_extra_worker_is_serves_command_as_a_worker_without_its_ports() -> None:
    serve = Process(
        "gateway-bench-dinsos-cirebon",
        ["/repo/.venv/bin/python3", "/repo/.venv/bin/ikd-gateway", "serve"],
        {
            "IKD_GATEWAY_AGENCY": "bench-dinsos-cirebon",
            "IKD_GATEWAY_DATA_DIR": "/repo/.run/bench/gateway/bench-dinsos-cirebon",
            "IKD_GATEWAY_WORKER_METRICS_PORT": "28201",
        },
        Path("/repo/.run/bench/services/gateway-bench-dinsos-cirebon.log"),
    )
    worker = scaling.worker_process(serve, 2)
    assert worker.name == "gateway-bench-dinsos-cirebon-worker2"
    assert worker.argv == ["/repo/.venv/bin/python3", "/repo/.venv/bin/ikd-gateway", "worker"]
    assert worker.env == {
        "IKD_GATEWAY_AGENCY": "bench-dinsos-cirebon",
        "IKD_GATEWAY_DATA_DIR": "/repo/.run/bench/gateway/bench-dinsos-cirebon-worker2",
    }
    assert worker.log == Path("/repo/.run/bench/services/gateway-bench-dinsos-cirebon-worker2.log")
    with pytest.raises(ValueError, match="serve"):
        scaling.worker_process(worker, 3)


def _entry(value: float, busy: float, key: str = "events_per_second") -> dict[str, object]:
    return {
        "summary": {
            key: {"median": value, "min": value, "max": value},
            "machine_busy_percent": {"median": busy, "min": busy, "max": busy},
        }
    }


def test_the_scaling_table_and_what_limits_it() -> None:
    figures = {
        "settings": {"bulk_events": 2000, "prefill_connections": 64, "verify_rate": 1000},
        "bulk_workers": {"1": _entry(1000, 190), "2": _entry(950, 198)},
        "verify_identity": {
            "1": _entry(100, 120, "achieved_rate"),
            "2": _entry(180, 150, "achieved_rate"),
        },
    }
    page = "\n".join(scaling_report.section(figures))
    assert "| 1 | 1,000; busy 190 % | – | 100; busy 120 % |" in page
    assert "| 2 | 950; busy 198 % | – | 180; busy 150 % |" in page
    limits = "\n".join(scaling_report.limits(figures))
    assert "1,000 → 950 events/s (×0.95)" in limits
    assert "both cores were already busy with one process" in limits
    assert "the second process used CPU the first left idle" in limits
    assert scaling_report.limits({"failed": "x"}) == []


def test_a_failed_count_or_kind_is_reported_not_hidden() -> None:
    figures = {
        "bulk_workers": {"1": _entry(1000, 190), "2": {"failed": "TimeoutError: readyz"}},
        "prefill_api": {"failed": "TimeoutError: group"},
    }
    page = "\n".join(scaling_report.section(figures))
    assert "| 2 | failed: TimeoutError: readyz |" in page
    assert "Failed (prefill, API processes of one gateway): TimeoutError: group" in page
    assert scaling_report.limits(figures) == []
