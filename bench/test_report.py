"""Unit tests of the report's page handling (run: .venv/bin/pytest bench/test_report.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.report import (
    BEGIN,
    END,
    backfill_row,
    has_markers,
    purge_backlog_row,
    splice,
)
from bench.stats import summarize_runs

PAGE = Path(__file__).resolve().parent.parent / "docs" / "BENCHMARKS.md"


def test_splice_rewrites_only_between_the_markers() -> None:
    page = f"intro by hand\n{BEGIN}\n# old figures\n{END}\n\n## Whole MPP on one machine\nkept\n"
    new = splice(page, "# Benchmarks\n\nnew figures\n")
    assert new == (
        f"intro by hand\n{BEGIN}\n# Benchmarks\n\nnew figures\n{END}\n\n"
        "## Whole MPP on one machine\nkept\n"
    )
    assert splice(new, "# Benchmarks\n\nnew figures\n") == new  # stable when run again


def test_splice_of_a_new_page_is_the_markers_around_the_report() -> None:
    page = splice(None, "# Benchmarks\n")
    assert page == f"{BEGIN}\n# Benchmarks\n{END}\n"
    assert has_markers(page)


@pytest.mark.parametrize(
    "page",
    ["# Benchmarks\nno markers\n", f"{END}\n{BEGIN}\n", f"{BEGIN}\n{END}\n{BEGIN}\n{END}\n"],
)
def test_splice_refuses_a_page_without_one_ordered_pair_of_markers(page: str) -> None:
    with pytest.raises(ValueError, match="markers"):
        splice(page, "# Benchmarks\n")


def test_the_committed_page_keeps_its_hand_written_sections_after_the_report() -> None:
    text = PAGE.read_text()
    assert has_markers(text)
    after = text.split(END, 1)[1]
    assert "## Whole MPP on one machine" in after
    assert "## Since then: measuring without disturbing" in after
    assert "## What limits the numbers" in text.split(END, 1)[0]


def test_summary_rows_judge_the_backfill_and_the_purge_under_a_backlog() -> None:
    runs = [
        {"citizens_per_second": r, "seen_complete_after_start_s": 9.0} for r in (900, 1100, 12000)
    ]
    backfill = {
        "agency": "dinsos-cirebon",
        "citizens": 4000,
        "runs": runs,
        "summary": summarize_runs(runs, ["citizens_per_second", "seen_complete_after_start_s"]),
    }
    row = backfill_row(backfill)
    assert row[1].startswith("1,100 citizens/s")  # the median, not the best run
    assert row[2] == "**not met**"
    purges = [
        {"median_s": m, "max_s": x, "backlog_at_end": 3000, "consent_max_s": 0.5}
        for m, x in ((1.0, 2.0), (2.0, 6.0))
    ]
    purge = {
        "agency": "dinsos-cirebon",
        "runs": purges,
        "summary": summarize_runs(purges, ["median_s", "backlog_at_end"]),
    }
    assert purge_backlog_row(purge)[2] == "**not met**"  # one run's worst purge took 6 s
    purges[1]["max_s"] = 2.0
    assert purge_backlog_row(purge)[2] == "**met**"
    purges[1]["consent_max_s"] = 5.5  # a revocation's purge counts as much as an end's
    assert purge_backlog_row(purge)[2] == "**not met**"
    assert backfill_row({"failed": "TimeoutError: x"})[1] == "TimeoutError: x"
    assert purge_backlog_row(None)[1] == "not run"
