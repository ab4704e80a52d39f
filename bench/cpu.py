"""CPU time by component between two snapshots of /proc: where the machine's two cores went.

Bench services are found by their process group (procs.sh starts each in its own session);
PostgreSQL backends by their process title (the bench's databases vs. everything else); Kafka by
its main class. What is left of the machine's busy time is "other" (e.g. test suites running
beside the bench). Processes that ended between the snapshots are not counted.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Snapshot:
    by_component: dict[str, float]  # CPU seconds
    machine_busy: float  # CPU seconds, all cores
    machine_total: float


def _machine() -> tuple[float, float]:
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # up to steal; guest time is already inside user
    return (total - idle) / TICKS, total / TICKS


def _read(pid: str) -> tuple[int, float, str] | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return None
    rest = stat.rsplit(")", 1)[1].split()
    pgid = int(rest[2])
    seconds = (int(rest[11]) + int(rest[12])) / TICKS  # utime + stime
    return pgid, seconds, cmdline


def classify(cmdline: str, pgid: int, groups: dict[int, str]) -> str | None:
    if pgid in groups:
        name = groups[pgid]
        if name.startswith("gateway-"):
            if "ikd_gateway worker" in cmdline:
                return f"{name} worker"
            if "ikd_gateway api" in cmdline or "multiprocessing" in cmdline:
                return f"{name} api"  # with BENCH_API_WORKERS > 1, uvicorn's spawned workers
        return name
    if cmdline.startswith("postgres:"):
        return "postgres (bench databases)" if "bench" in cmdline else "postgres (other)"
    if "kafka.Kafka" in cmdline:
        return "kafka broker"
    if cmdline.startswith("wrk "):
        return "load generator (wrk)"
    if "ProducerPerformance" in cmdline:
        return "load generator (ProducerPerformance)"
    if "multiprocessing" in cmdline and "bench" in cmdline:
        return "bench poller"
    return None


def snapshot(service_pids: dict[str, int]) -> Snapshot:
    groups = {pid: name for name, pid in service_pids.items()}
    by_component: dict[str, float] = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        read = _read(pid)
        if read is None:
            continue
        pgid, seconds, cmdline = read
        if int(pid) == os.getpid():
            name: str | None = "bench load generator"
        else:
            name = classify(cmdline, pgid, groups)
        if name is not None:
            by_component[name] = by_component.get(name, 0.0) + seconds
    busy, total = _machine()
    return Snapshot(by_component, busy, total)


def usage(before: Snapshot, after: Snapshot, wall_seconds: float) -> dict[str, float]:
    """Each component's share of one core (100 = one core busy) over the interval."""
    if wall_seconds <= 0:
        return {}
    shares: dict[str, float] = {}
    for name, seconds in after.by_component.items():
        used = seconds - before.by_component.get(name, 0.0)
        if used > 0:
            shares[name] = 100 * used / wall_seconds
    busy = 100 * (after.machine_busy - before.machine_busy) / wall_seconds
    shares["other processes"] = max(0.0, busy - sum(shares.values()))
    ordered = dict(sorted(shares.items(), key=lambda item: -item[1]))
    return {"machine busy (all)": busy, **ordered}


def service_pids(directory: Path) -> dict[str, int]:
    """The bench services' process-group leaders from procs.sh's pid files."""
    pids: dict[str, int] = {}
    for pidfile in sorted(directory.glob("*.pid")):
        try:
            pids[pidfile.stem] = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            continue
    return pids
