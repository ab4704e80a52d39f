"""Where each stage's CPU goes: py-spy during one extra, profiled run of a bench section.

After a section's timed runs (so their medians are not disturbed), `Profiler.record` runs the
section's work once more while py-spy samples each platform process of that stage (processes
found as bench/cpu.py finds them: the bench services' process groups and command lines; once
restarted, as the backfill's gateway is, looked for every second). py-spy runs with
`--nonblocking` (it reads the process's memory without stopping it) at RATE_HZ, and without
idle threads; from its raw output (collapsed stacks, one line per distinct stack) come an SVG
flame graph per process, `<out>/flamegraphs/<section>-<process>.svg`, and the top functions by
self time (the leaf frame of a sample) and by inclusive time (anywhere on the stack).

BENCH_PROFILE=0 turns it off. Needs root or ptrace rights over the services (py-spy reads
their memory); a process py-spy cannot read is reported with py-spy's error.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from bench import cpu

RATE_HZ = 50  # low: py-spy's own CPU and its reads of the services' memory stay small
TOP = 8
POLL_S = 1.0  # how often new processes of the stage are looked for
MIN_SAMPLES = 20  # fewer: the process was idle in this stage; listed, no flame graph
STOP_WITHIN_S = 20.0

# Which processes each section exercises (component names of bench/cpu.classify). "bench" is
# this process: the audit append runs here, against the bench's audit database.
STAGES: dict[str, tuple[str, ...]] = {
    "bulk": ("identity", "audit", "worker"),
    "prefill": ("api", "worker", "audit"),
    "verification": ("identity", "worker", "audit"),
    "backfill": ("identity", "worker"),
    "audit": ("bench",),
}


def enabled() -> bool:
    return os.environ.get("BENCH_PROFILE", "1") not in ("0", "")


def wanted(component: str, kinds: Iterable[str]) -> bool:
    """`component` (e.g. "gateway-bench-polres-cirebon worker") is of one of `kinds`."""
    return any(component == kind or component.endswith(f" {kind}") for kind in kinds)


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower()


# -- py-spy's raw output ---------------------------------------------------------------------


def parse_collapsed(text: str) -> Counter[tuple[str, ...]]:
    """py-spy `--format raw`: `root;...;leaf COUNT` per line (the flamegraph.pl input)."""
    stacks: Counter[tuple[str, ...]] = Counter()
    for line in text.splitlines():
        stack, _, number = line.rstrip().rpartition(" ")
        if not stack or not number.isdigit():
            continue  # blank or cut short (py-spy stopped mid-write)
        stacks[tuple(stack.split(";"))] += int(number)
    return stacks


# The event loop's and threads' dispatch frames: on (nearly) every sample of an asyncio
# service, so they would fill the inclusive list and say nothing about where the time goes.
DISPATCH = ("(asyncio/", "(threading.py)", "(concurrent/futures/thread.py)", "(runpy.py)")


def dispatch(frame: str) -> bool:
    return frame.startswith("<module> ") or any(where in frame for where in DISPATCH)


def waiting(leaf: str) -> bool:
    """The sample's innermost Python frame is a wait in native code: the event loop's poll
    (epoll, or uvloop's loop, which has no Python frames), a lock, a queue. py-spy's
    `--nonblocking` mode cannot tell idle threads by their OS state, so they are sampled."""
    name, _, where = leaf.partition(" (")
    module = where.rstrip(")").rsplit("/", 1)[-1]
    return (
        module in WAIT_MODULES
        or (module == "runners.py" and name in ("Runner.run", "run"))
        or (module == "base_events.py" and name.endswith(("run_forever", "run_until_complete")))
        or (module == "thread.py" and name == "_worker")
    )


WAIT_MODULES = ("selectors.py", "threading.py", "queue.py")


def top_functions(stacks: Mapping[tuple[str, ...], int], n: int = TOP) -> dict[str, Any]:
    """The n functions with the most self time and with the most inclusive time, as % of the
    working samples (those not `waiting`). Inclusive counts a function once per sample even
    when it recurses, and leaves out dispatch frames (DISPATCH) and pass-through frames (no
    self time, always the same callee: a command line's or server's trunk), which only
    repeat the share of what they call."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    callees: dict[str, set[str | None]] = {}
    waits = 0
    for stack, samples in stacks.items():
        if not stack:
            continue
        if waiting(stack[-1]):
            waits += samples
            continue
        own[stack[-1]] += samples
        for i, frame in enumerate(stack):
            callees.setdefault(frame, set()).add(stack[i + 1] if i + 1 < len(stack) else None)
        for frame in set(stack):
            if not dispatch(frame):
                inclusive[frame] += samples
    working = sum(own.values())
    total = working + waits
    for frame, below in callees.items():
        if len(below) == 1 and None not in below:
            inclusive.pop(frame, None)

    def ranked(counter: Counter[str]) -> list[tuple[str, float]]:
        # ties by name, so the table is the same for the same samples
        best = sorted(counter.items(), key=lambda item: (-item[1], item[0]))[:n]
        return [(name, 100 * count / working) for name, count in best]

    return {
        "waiting_percent": 100 * waits / total if total else 0.0,
        "self": ranked(own) if working else [],
        "inclusive": ranked(inclusive) if working else [],
    }


# -- flame graph -----------------------------------------------------------------------------


@dataclass
class _Node:
    name: str
    value: int = 0
    children: dict[str, _Node] = field(default_factory=dict)


def _tree(stacks: Mapping[tuple[str, ...], int]) -> _Node:
    root = _Node("all")
    for stack, samples in sorted(stacks.items()):  # alphabetical, as flamegraph.pl sorts
        root.value += samples
        node = root
        for frame in stack:
            node = node.children.setdefault(frame, _Node(frame))
            node.value += samples
    return root


def _colour(name: str) -> str:
    # warm hues, stable per module so one library keeps its colour across graphs
    module = name.partition("(")[2] or name
    h = hashlib.blake2s(module.encode(), digest_size=2).digest()
    return f"rgb({205 + h[0] % 50},{80 + h[1] % 130},{40 + (h[0] ^ h[1]) % 50})"


def flamegraph_svg(stacks: Mapping[tuple[str, ...], int], title: str, *, width: int = 1200) -> str:
    """A static flame graph (root at the bottom; hover a frame for its samples and share)."""
    root = _tree(stacks)
    frame_h, top_margin, font_px = 16, 40, 11
    scale = (width - 20) / max(root.value, 1)
    min_px = 0.3  # narrower frames are left out, as flamegraph.pl does
    rects: list[tuple[int, float, float, _Node]] = []

    def place(node: _Node, depth: int, x: float) -> None:
        rects.append((depth, x, node.value * scale, node))
        for child in node.children.values():
            if child.value * scale >= min_px:
                place(child, depth + 1, x)
            x += child.value * scale

    place(root, 0, 10.0)
    depth = max(d for d, *_ in rects) + 1
    height = top_margin + depth * frame_h + 10
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="Verdana,sans-serif" '
        f'font-size="{font_px}">',
        '<rect width="100%" height="100%" fill="#fdfdf5"/>',
        f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="15">{escape(title)}</text>',
        f'<text x="10" y="34" fill="#555">{root.value} samples; width = share of samples, '
        "stacks from the root (bottom) up</text>",
    ]
    char_px = font_px * 0.6
    for d, x, w, node in rects:
        y = height - 10 - (d + 1) * frame_h
        share = 100 * node.value / max(root.value, 1)
        label = f"{node.name} ({node.value} samples, {share:.2f} %)"
        fill = "rgb(220,220,220)" if d == 0 else _colour(node.name)
        out.append(
            f"<g><title>{escape(label)}</title>"
            f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{frame_h - 1}" '
            f'fill="{fill}" rx="2"/>'
        )
        fits = int((w - 4) / char_px)
        if fits >= 3:
            text = node.name if len(node.name) <= fits else node.name[: fits - 2] + ".."
            out.append(f'<text x="{x + 2:.1f}" y="{y + frame_h - 4}">{escape(text)}</text>')
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"


# -- processes and py-spy --------------------------------------------------------------------


def processes(service_pids: Mapping[str, int], kinds: Iterable[str]) -> dict[int, str]:
    """pid → component of the running processes of these kinds (bench/cpu.py's names)."""
    kinds = tuple(kinds)
    groups = {pid: name for name, pid in service_pids.items()}
    found: dict[int, str] = {}
    if "bench" in kinds:
        found[os.getpid()] = "bench"
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:  # the process group first: a command line is read only for the bench services'
            pgid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[2])
        except (OSError, IndexError, ValueError):
            continue
        if pgid not in groups:
            continue
        read = cpu._read(entry)
        if read is None:
            continue
        component = cpu.classify(read[2], read[0], groups)
        if component is not None and wanted(component, kinds):
            found[int(entry)] = component
    return found


def py_spy() -> str | None:
    beside = Path(sys.executable).with_name("py-spy")  # the venv's, from the dev dependencies
    return str(beside) if beside.exists() else shutil.which("py-spy")


@dataclass
class _Sampler:
    pid: int
    component: str
    raw: Path
    process: asyncio.subprocess.Process
    started: float
    target_cpu: float  # CPU seconds of the sampled process when the sampler started
    cpu_seconds: float = 0.0
    busy_percent: float = 0.0


async def _start(binary: str, pid: int, component: str, folder: Path) -> _Sampler:
    raw = folder / f"{pid}.txt"
    process = await asyncio.create_subprocess_exec(
        binary,
        "record",
        "--pid",
        str(pid),
        "--rate",
        str(RATE_HZ),
        "--nonblocking",
        "--nolineno",
        "--format",
        "raw",
        "--output",
        str(raw),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    return _Sampler(pid, component, raw, process, time.monotonic(), _cpu_seconds(pid))


def _cpu_seconds(pid: int) -> float:
    try:
        rest = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(rest[11]) + int(rest[12])) / cpu.TICKS


async def _stop(sampler: _Sampler) -> str:
    """SIGINT: py-spy writes what it sampled and exits. Its stderr (errors) is returned."""
    sampler.cpu_seconds = _cpu_seconds(sampler.process.pid)
    took = max(time.monotonic() - sampler.started, 1e-3)
    sampler.busy_percent = 100 * (_cpu_seconds(sampler.pid) - sampler.target_cpu) / took
    if sampler.process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            sampler.process.send_signal(signal.SIGINT)
    try:
        _, err = await asyncio.wait_for(sampler.process.communicate(), STOP_WITHIN_S)
    except TimeoutError:
        sampler.process.kill()
        _, err = await sampler.process.communicate()
    return err.decode(errors="replace")


@dataclass
class Profiler:
    out: Path  # BENCH_OUT; the flame graphs go to out/flamegraphs
    service_pids: dict[str, int]  # the bench's live dict (backfill updates it)
    results: dict[str, Any] = field(default_factory=dict)
    on: bool = field(default_factory=enabled)

    async def record(
        self,
        section: str,
        work: Callable[[], Awaitable[Any]],
        *,
        prepare: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        """Run `prepare` (not sampled), then `work` once with its stage's processes sampled.
        A failure here is recorded in the results, never fails the section."""
        if not self.on:
            return
        binary = py_spy()
        if binary is None:
            self.results[section] = {"failed": "py-spy is not installed (uv sync --all-packages)"}
            return
        print(f"bench:   profiling {section} (py-spy, {RATE_HZ} Hz, nonblocking)", flush=True)
        try:
            if prepare is not None:
                await prepare()
            self.results[section] = await self._sampled(section, binary, work)
        except Exception as error:
            self.results[section] = {"failed": f"{type(error).__name__}: {error}"}
            print(f"bench:   profiling {section} failed: {error}", flush=True)

    async def _sampled(
        self, section: str, binary: str, work: Callable[[], Awaitable[Any]]
    ) -> dict[str, Any]:
        kinds = STAGES[section]
        samplers: dict[int, _Sampler] = {}
        with tempfile.TemporaryDirectory(prefix="bench-profile-") as tmp:
            folder = Path(tmp)

            async def attach() -> None:
                for pid, component in processes(self.service_pids, kinds).items():
                    if pid not in samplers:
                        samplers[pid] = await _start(binary, pid, component, folder)

            errors: dict[int, str] = {}
            try:
                await attach()
                began = time.monotonic()
                task = asyncio.ensure_future(work())
                services = dict(self.service_pids)
                while not task.done():
                    await asyncio.wait({task}, timeout=POLL_S)
                    # a service restarted during the run (the backfill's gateway): its new
                    # processes; /proc is not scanned otherwise (a scan costs ~20 ms of CPU)
                    if not task.done() and self.service_pids != services:
                        await attach()
                seconds = time.monotonic() - began
            finally:  # no sampler outlives the run, whatever failed
                for pid, sampler in samplers.items():
                    errors[pid] = await _stop(sampler)
            task.result()  # the work's own failure fails the profile too
            return self._tables(section, samplers, errors, seconds)

    def _tables(
        self,
        section: str,
        samplers: Mapping[int, _Sampler],
        errors: Mapping[int, str],
        seconds: float,
    ) -> dict[str, Any]:
        graphs = self.out / "flamegraphs"
        graphs.mkdir(parents=True, exist_ok=True)
        names: Counter[str] = Counter(s.component for s in samplers.values())
        seen: Counter[str] = Counter()
        by_process: dict[str, Any] = {}
        for pid, sampler in sorted(samplers.items(), key=lambda item: item[1].component):
            seen[sampler.component] += 1
            name = sampler.component
            if names[name] > 1:
                name = f"{name} {seen[name]}"
            stacks = parse_collapsed(sampler.raw.read_text() if sampler.raw.exists() else "")
            samples = sum(stacks.values())
            row: dict[str, Any] = {
                "pid": pid,
                "samples": samples,
                # its CPU time while sampled (/proc), as % of one core
                "busy_percent": sampler.busy_percent,
                "py_spy_cpu_seconds": round(sampler.cpu_seconds, 3),
            }
            reported = re.search(r"Errors: (\d+)", errors[pid])
            if reported:
                row["py_spy_errors"] = int(reported.group(1))  # torn stacks (nonblocking)
            if samples < MIN_SAMPLES:
                error = errors[pid].strip().splitlines()
                failed = error and not samples and "Errors" not in error[-1]
                row["note"] = error[-1] if failed else "idle in this stage"
            else:
                svg = f"{section}-{slug(name)}.svg"
                title = f"{section}: {name} (pid {pid}), {samples} samples in {seconds:.0f} s"
                (graphs / svg).write_text(flamegraph_svg(stacks, title))
                row["svg"] = f"flamegraphs/{svg}"
                tops = top_functions(stacks)
                row["waiting_percent"] = tops["waiting_percent"]
                row["top_self"] = tops["self"]
                row["top_inclusive"] = tops["inclusive"]
            by_process[name] = row
        return {"seconds": seconds, "rate_hz": RATE_HZ, "processes": by_process}


# -- report ----------------------------------------------------------------------------------


def _cell(entries: Iterable[Iterable[Any]], n: int) -> str:
    return "<br>".join(
        f"{float(share):.1f} % `{_short(str(name))}`" for name, share in list(entries)[:n]
    )


def _short(frame: str) -> str:
    """`func (path/to/module.py)` → `func (module.py)`; the SVG keeps the whole path."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1]}" if where else name


def report_section(profiles: Mapping[str, Any] | None, n: int = 5) -> list[str]:
    """Markdown: per profiled section, per process, its flame graph and top functions."""
    if not profiles:
        return []
    out = ["## Where the time goes: py-spy profiles", ""]
    out += [
        f"One extra run of each section after its timed runs (their medians are not "
        f"disturbed), every process of the stage sampled by py-spy at {RATE_HZ} Hz with "
        "`--nonblocking` (it reads the process's memory without pausing it, so a stack is "
        "now and then torn; it costs each process nothing but its share of the two cores "
        "with the sampler). *CPU*: the process's CPU time while sampled (from /proc), as % "
        "of one core. In this mode py-spy samples waiting threads too: a sample whose "
        "innermost frame is the event loop's poll (epoll, or uvloop's native loop), a lock or "
        "a queue counts as *waiting*; the flame graphs keep them, the tables leave them out. "
        "*Self*: the function was the innermost frame; *inclusive*: anywhere on the stack "
        "(without the event loop's dispatch frames and pass-through frames such as the "
        "command line's, which only repeat what they call); both as % of the working "
        "samples. Each flame graph is linked (SVG; hover a frame for its samples).",
        "",
    ]
    for section, data in profiles.items():
        out += [f"### {section}", ""]
        if "failed" in data:
            out += [f"Not profiled: {data['failed']}", ""]
            continue
        out += [f"{data['seconds']:.0f} s sampled.", ""]
        rows = []
        for name, row in data["processes"].items():
            if "svg" not in row:
                rows.append([name, f"{row['busy_percent']:.0f} %", row.get("note", ""), ""])
                continue
            rows.append(
                [
                    f"[{name}]({row['svg']})",
                    f"{row['busy_percent']:.0f} % CPU; {row.get('waiting_percent', 0):.0f} % of "
                    f"{row['samples']} samples waiting",
                    _cell(row["top_self"], n),
                    _cell(row["top_inclusive"], n),
                ]
            )
        out += [
            "| process | CPU, samples | top self time | top inclusive time |",
            "|---|---|---|---|",
        ]
        out += ["| " + " | ".join(cells) + " |" for cells in rows]
        out.append("")
    return out
