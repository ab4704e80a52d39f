"""The machine and the versions the numbers were measured with."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def _run(*command: str) -> str:
    try:
        # fixed commands of the project's own scripts
        done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)  # noqa: S603
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    return (done.stdout + done.stderr).strip()


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _ram_gib() -> float:
    match = re.search(r"MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text())
    return round(int(match.group(1)) / 1024 / 1024, 1) if match else float("nan")


def _os() -> str:
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return platform.platform()
    match = re.search(r'^PRETTY_NAME="?([^"\n]+)', text, re.MULTILINE)
    return f"{match.group(1) if match else 'Linux'} (kernel {platform.release()})"


def describe() -> dict[str, Any]:
    java = _run("java", "-version").splitlines()
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": _ram_gib(),
        "os": _os(),
        "python": platform.python_version(),
        "java": java[0] if java else "unknown",
        "kafka": _run("bash", str(REPO / "deploy/scripts/kafka.sh"), "version"),
        "postgresql": _run("bash", str(REPO / "deploy/scripts/postgres.sh"), "version"),
        "wrk": _run("wrk", "--version").splitlines()[0] if _run("wrk", "--version") else "",
    }


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])
