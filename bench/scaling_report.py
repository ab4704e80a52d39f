"""The report's part on throughput against the number of processes (bench/scaling.py)."""

from __future__ import annotations

from typing import Any

SATURATED = 170.0
"""Machine busy share (per cent of one core, 200 = both cores) read as both cores taken."""

KINDS = (
    ("bulk_workers", "bulk feed, worker processes per agency", "events_per_second", "events/s"),
    ("prefill_api", "prefill, API processes of one gateway", "requests_per_second", "requests/s"),
    ("verify_identity", "verification, identity API processes", "achieved_rate", "answered/s"),
)


def _median(entry: dict[str, Any], key: str) -> float | None:
    figure = entry.get("summary", {}).get(key)
    return None if figure is None else float(figure["median"])


def _cell(entry: dict[str, Any] | None, key: str) -> str:
    if entry is None:
        return "–"
    if "failed" in entry:
        return f"failed: {entry['failed']}"
    value = _median(entry, key)
    if value is None:
        return "–"
    text = f"{value:,.0f}"
    p99 = _median(entry, "p99_ms")
    if p99 is not None:
        text += f" (p99 {p99:,.0f} ms)"
    return text + f"; busy {_median(entry, 'machine_busy_percent') or 0:.0f} %"


def section(scaling: dict[str, Any] | None) -> list[str]:
    out = ["## 10. Throughput against the number of processes", ""]
    if not scaling:
        return [*out, "Not measured in this run (`BENCH_ONLY`).", ""]
    if "failed" in scaling:
        return [*out, f"Failed: {scaling['failed']}", ""]
    settings = scaling.get("settings", {})
    out.append(
        "Each figure is the median of the runs with 1 and with 2 processes of one kind, the "
        "rest as in the other sections; busy = the whole machine's CPU during the runs (200 % = "
        f"both cores). Bulk: {settings.get('bulk_events', '?')} refreshed related profiles per "
        "run, extra `ikd-gateway worker` processes in each agency's consumer group (6 "
        "partitions), timed once every group is stable; prefill: wrk with "
        f"{settings.get('prefill_connections', '?')} connections at polres-cirebon, "
        "`ikd-gateway api --workers`; verification: offered "
        f"{settings.get('verify_rate', '?')}/s, `ikd-identity serve --workers` (one active "
        "relay)."
    )
    out.append("")
    counts = sorted(
        {c for kind, *_ in KINDS for c in scaling.get(kind, {}) if c.isdigit()}, key=int
    )
    header = ["processes", *(f"{title} ({unit})" for _, title, _, unit in KINDS)]
    out += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for count in counts:
        cells = [_cell(scaling.get(kind, {}).get(count), key) for kind, _, key, _ in KINDS]
        out.append("| " + " | ".join([count, *cells]) + " |")
    out.append("")
    for kind, title, _, _ in KINDS:
        if "failed" in scaling.get(kind, {}):
            out += [f"Failed ({title}): {scaling[kind]['failed']}", ""]
    return out


def limits(scaling: dict[str, Any] | None) -> list[str]:
    """Where two cores stop adding processes, from the run's own figures."""
    if not scaling or "failed" in scaling:
        return []
    parts = []
    for kind, title, key, unit in KINDS:
        entries = scaling.get(kind, {})
        one, two = entries.get("1"), entries.get("2")
        if not one or not two:
            continue
        low, high = _median(one, key), _median(two, key)
        busy_one = _median(one, "machine_busy_percent") or 0.0
        busy_two = _median(two, "machine_busy_percent") or 0.0
        if not low or high is None:
            continue
        ratio = high / low
        if busy_one >= SATURATED:
            why = "both cores were already busy with one process, so a second one only shares them"
        elif ratio >= 1.1:
            why = "the second process used CPU the first left idle"
        elif busy_two >= SATURATED:
            why = "the second process took the idle CPU but spent it on contention, not work"
        else:
            why = "the limit is elsewhere than in these processes (the machine was not saturated)"
        parts.append(
            f"{title}: {low:,.0f} → {high:,.0f} {unit} (×{ratio:.2f}), machine busy "
            f"{busy_one:.0f} % → {busy_two:.0f} %: {why}"
        )
    if not parts:
        return []
    return [
        "- **More processes on two cores** (section 10): " + "; ".join(parts) + ". Beyond the "
        "second process per kind, the whole platform (Kafka, PostgreSQL, identity, audit, "
        "three gateways and the load generator) competes for the same two cores.",
    ]
