"""Unit tests of py-spy output → top functions and flame graph (run: .venv/bin/pytest
bench/test_profile.py)."""

from __future__ import annotations

import asyncio
import json
import os
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from bench.profile import (
    MIN_SAMPLES,
    Profiler,
    flamegraph_svg,
    parse_collapsed,
    py_spy,
    report_section,
    slug,
    top_functions,
    wanted,
)

# py-spy record --format raw --nolineno: one line per distinct stack, root first
TRUNK = (
    "<module> (ikd_gateway/__main__.py);run (asyncio/runners.py);_run_once (asyncio/base_events.py)"
)
RAW = "".join(
    f"{TRUNK};{rest} {samples}\n"
    for rest, samples in [
        ("apply (ikd_gateway/worker.py);model_validate_json (pydantic/main.py)", 30),
        ("apply (ikd_gateway/worker.py);needs_consent (ikd_shared/policy.py)", 20),
        ("apply (ikd_gateway/worker.py)", 10),
        ("send (aiokafka/conn.py)", 40),
    ]
)


def test_parse_collapsed_counts_each_stack() -> None:
    stacks = parse_collapsed(RAW + RAW.splitlines()[3] + "\n")  # a stack twice: added up
    assert sum(stacks.values()) == 140
    leaf = (
        "<module> (ikd_gateway/__main__.py)",
        "run (asyncio/runners.py)",
        "_run_once (asyncio/base_events.py)",
        "send (aiokafka/conn.py)",
    )
    assert stacks[leaf] == 80


@pytest.mark.parametrize("line", ["", "   ", "a;b;c", "a;b;c 1x", "a;b 12 cut"])
def test_parse_collapsed_skips_lines_cut_short(line: str) -> None:
    stacks = parse_collapsed(f"{line}\nx;y 3\n")
    assert stacks == {("x", "y"): 3}


def test_top_self_is_the_leaf_frame_as_share_of_samples() -> None:
    tops = top_functions(parse_collapsed(RAW), n=3)
    assert tops["self"] == [
        ("send (aiokafka/conn.py)", 40.0),
        ("model_validate_json (pydantic/main.py)", 30.0),
        ("needs_consent (ikd_shared/policy.py)", 20.0),
    ]


def test_top_inclusive_is_anywhere_on_the_stack() -> None:
    tops = top_functions(parse_collapsed(RAW), n=10)
    inclusive = dict(tops["inclusive"])
    assert "<module> (ikd_gateway/__main__.py)" not in inclusive  # dispatch: on every sample
    assert "_run_once (asyncio/base_events.py)" not in inclusive
    assert inclusive["apply (ikd_gateway/worker.py)"] == 60.0
    assert inclusive["send (aiokafka/conn.py)"] == 40.0
    shares = [share for _, share in tops["inclusive"]]
    assert shares == sorted(shares, reverse=True)


def test_recursion_counts_once_inclusive_and_ties_sort_by_name() -> None:
    stacks = parse_collapsed("main;walk;walk;walk 5\nmain;b 5\n")
    tops = top_functions(stacks, n=3)
    assert dict(tops["inclusive"])["walk"] == 50.0  # not 150 %
    assert tops["self"] == [("b", 50.0), ("walk", 50.0)]


def test_no_samples_no_rows() -> None:
    assert top_functions(parse_collapsed("")) == {
        "waiting_percent": 0.0,
        "self": [],
        "inclusive": [],
    }


def test_waits_in_the_event_loop_are_counted_apart_and_shares_are_of_working_samples() -> None:
    loop = "run (asyncio/runners.py);Runner.run (asyncio/runners.py)"
    stacks = parse_collapsed(
        f"{loop};BaseEventLoop._run_once (asyncio/base_events.py);"
        "EpollSelector.select (selectors.py) 60\n"
        f"{loop} 20\n"  # uvloop: its loop is native, the wait shows as Runner.run
        f"{loop};Handle._run (asyncio/events.py);apply (ikd_gateway/worker.py) 15\n"
        "_bootstrap (threading.py);Thread.run (threading.py);_worker (concurrent/futures/"
        "thread.py) 5\n"
    )
    tops = top_functions(stacks)
    assert tops["waiting_percent"] == 85.0
    assert tops["self"] == [("apply (ikd_gateway/worker.py)", 100.0)]


def test_pass_through_frames_are_left_out_of_the_inclusive_list() -> None:
    tops = top_functions(
        parse_collapsed("app;Command.main;serve;a 5\napp;Command.main;serve;b 5\n")
    )
    inclusive = dict(tops["inclusive"])
    assert "app" not in inclusive
    assert "Command.main" not in inclusive
    assert inclusive["serve"] == 100.0  # it branches: the root of the work


def test_flamegraph_is_valid_svg_with_a_frame_per_function_and_widths_by_samples() -> None:
    svg = flamegraph_svg(parse_collapsed(RAW), "bulk: <worker> & co")
    root = ET.fromstring(svg)  # noqa: S314 - our own SVG; well-formed despite <module> and & in names
    ns = "{http://www.w3.org/2000/svg}"
    widths = {
        g.findtext(f"{ns}title"): float(g.find(f"{ns}rect").attrib["width"])  # type: ignore[union-attr]
        for g in root.iter(f"{ns}g")
    }
    assert "apply (ikd_gateway/worker.py) (60 samples, 60.00 %)" in widths
    whole = widths["all (100 samples, 100.00 %)"]
    send = widths["send (aiokafka/conn.py) (40 samples, 40.00 %)"]
    assert send == pytest.approx(0.4 * whole, abs=0.2)


def test_stage_processes_are_chosen_by_their_cpu_component_name() -> None:
    assert wanted("gateway-bench-polres-cirebon worker", ("worker",))
    assert wanted("identity", ("identity", "worker"))
    assert not wanted("gateway-bench-polres-cirebon api", ("worker", "audit"))
    assert not wanted("postgres (bench databases)", ("identity", "audit", "worker", "api"))
    assert slug("gateway-bench-polres-cirebon worker") == "gateway-bench-polres-cirebon-worker"


def test_report_links_each_flame_graph_and_lists_idle_and_failed() -> None:
    tops = top_functions(parse_collapsed(RAW))
    profiles = {
        "bulk": {
            "seconds": 12.0,
            "rate_hz": 50,
            "processes": {
                "identity": {"pid": 1, "samples": 3, "busy_percent": 0.5, "note": "idle"},
                "gateway-bench-polres-cirebon worker": {
                    "pid": 2,
                    "samples": 100,
                    "busy_percent": 16.7,
                    "waiting_percent": 40.0,
                    "svg": "flamegraphs/bulk-gateway-bench-polres-cirebon-worker.svg",
                    "top_self": tops["self"],
                    "top_inclusive": tops["inclusive"],
                },
            },
        },
        "audit": {"failed": "py-spy is not installed"},
    }
    text = "\n".join(report_section(profiles))
    assert (
        "[gateway-bench-polres-cirebon worker]"
        "(flamegraphs/bulk-gateway-bench-polres-cirebon-worker.svg)"
    ) in text
    assert "40.0 % `send (conn.py)`" in text
    assert "| identity | 0 % | idle |" in text
    assert "Not profiled: py-spy is not installed" in text
    assert report_section(None) == []


def spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        json.dumps(list(range(200)))


@pytest.mark.skipif(
    py_spy() is None or os.geteuid() != 0, reason="needs py-spy and ptrace rights (root)"
)
def test_profiler_samples_the_stage_and_writes_its_flame_graph(tmp_path: Path) -> None:
    profiler = Profiler(tmp_path, {}, on=True)
    # the "audit" stage is this process (the append runs in the bench)
    asyncio.run(profiler.record("audit", lambda: asyncio.to_thread(spin, 3.0)))
    row = profiler.results["audit"]["processes"]["bench"]
    assert row["samples"] >= MIN_SAMPLES
    svg = (tmp_path / row["svg"]).read_text()
    assert "spin (" in svg
    assert any(name.startswith("spin ") for name, _ in row["top_inclusive"])


def test_profiler_off_runs_nothing(tmp_path: Path) -> None:
    called = []

    async def work() -> None:
        called.append(1)

    profiler = Profiler(tmp_path, {}, on=False)
    asyncio.run(profiler.record("bulk", work))
    assert called == []
    assert profiler.results == {}
    assert not (tmp_path / "flamegraphs").exists()
