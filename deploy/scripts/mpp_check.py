"""The whole MPP on one machine (deploy/scripts/mpp-check.sh): what it takes, and a walk-in
citizen served by agencies of every kind.

  mpp_check.py figures SUPERVISORD_CONF   memory, processes, CPU and PostgreSQL connections
  mpp_check.py walk                        one agency of each kind of the policy serves a citizen

Reads /proc directly (Linux): RSS and PSS (shared pages split among the processes sharing them,
so the PSS column adds up to what the processes really take) of every process supervisord
runs, and of Kafka and PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

from ikd_ops.cli import DEV_KEYS, _platform
from ikd_ops.demo import RECEPTION_CLIENT, Walkthrough
from ikd_shared.credentials import Purpose
from ikd_shared.policy import DEFAULT_POLICY, ServicePolicy, load_policy

ROOT = Path(__file__).resolve().parents[2]
CLK_TCK = os.sysconf("SC_CLK_TCK")


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = defaultdict(list)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            tree[ppid].append(int(entry.name))
    return tree


def _tree(pid: int, tree: dict[int, list[int]]) -> list[int]:
    pids, todo = [], [pid]
    while todo:
        current = todo.pop()
        pids.append(current)
        todo.extend(tree.get(current, []))
    return pids


def _memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in kB; (0, 0) for a process gone meanwhile."""
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:
        return 0, 0
    values = dict(re.findall(r"^(Rss|Pss):\s+(\d+) kB", text, re.MULTILINE))
    return int(values.get("Rss", 0)), int(values.get("Pss", 0))


def _cpu_ticks(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def _programs(conf: str) -> dict[str, int]:
    out = subprocess.run(  # noqa: S603
        [sys.executable, "-m", "supervisor.supervisorctl", "-c", conf, "status"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return {
        match.group(1): int(match.group(2))
        for match in re.finditer(r"^(\S+)\s+RUNNING\s+pid (\d+)", out, re.MULTILINE)
    }


def _server_pids(tree: dict[int, list[int]]) -> dict[str, list[int]]:
    """Kafka's and PostgreSQL's processes of this checkout (by their data folders)."""
    servers: dict[str, list[int]] = {}
    postmaster = ROOT / ".run" / "postgres" / "data" / "postmaster.pid"
    if postmaster.exists():
        servers["postgresql"] = _tree(int(postmaster.read_text().split()[0]), tree)
    kafka_dir = str(ROOT / ".run" / "kafka")
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "kafka.Kafka" in cmdline and kafka_dir in cmdline:
                servers.setdefault("kafka", []).append(int(entry.name))
    return servers


def _psql(sql: str) -> str:
    out = subprocess.run(  # noqa: S603
        ["bash", str(ROOT / "deploy" / "scripts" / "postgres.sh"), "psql", "-XtA", "-c", sql],  # noqa: S607
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def figures(conf: str, cpu_seconds: float = 10.0) -> None:
    tree = _children()
    groups: dict[str, list[int]] = {name: _tree(pid, tree) for name, pid in _programs(conf).items()}
    groups.update(_server_pids(tree))
    before = {pid: _cpu_ticks(pid) for pids in groups.values() for pid in pids}
    time.sleep(cpu_seconds)
    rows = []
    for name, pids in sorted(groups.items()):
        rss = pss = 0
        for pid in pids:
            r, p = _memory_kb(pid)
            rss, pss = rss + r, pss + p
        ticks = sum(_cpu_ticks(pid) - before.get(pid, 0) for pid in pids)
        rows.append((name, len(pids), rss // 1024, pss // 1024, ticks / CLK_TCK / cpu_seconds))

    def kind(name: str) -> str:
        if name.endswith("-api"):
            return "gateway APIs"
        if name.endswith("-worker"):
            return "gateway workers"
        if name in ("kafka", "postgresql"):
            return name
        return "identity, audit, signer, witness, receiver"

    summary: dict[str, list[float]] = defaultdict(lambda: [0, 0, 0, 0.0, 0])
    for name, count, rss, pss, cpu in rows:
        item = summary[kind(name)]
        item[0] += 1
        item[1] += count
        item[2] += pss
        item[3] += cpu
        item[4] = max(item[4], rss)
    print(
        "| group | programs | processes | PSS MB total | PSS MB each | RSS MB max"
        " | CPU % of one core |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    total: list[float] = [0, 0, 0, 0]
    for group, figures_ in sorted(summary.items()):
        programs, processes, group_pss, group_cpu, rss_max = figures_
        each = group_pss / programs if programs else 0
        print(
            f"| {group} | {programs:.0f} | {processes:.0f} | {group_pss:.0f} | {each:.0f} |"
            f" {rss_max:.0f} | {group_cpu * 100:.0f} |"
        )
        total = [a + b for a, b in zip(total, figures_[:4], strict=True)]
    print(
        f"| **total** | {total[0]:.0f} | {total[1]:.0f} | {total[2]:.0f} | | |"
        f" {total[3] * 100:.0f} |"
    )
    used = _psql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend'")
    limit = _psql("SHOW max_connections")
    busiest = _psql(
        "SELECT coalesce(datname, '-') || ' ' || count(*) FROM pg_stat_activity"
        " WHERE backend_type = 'client backend' GROUP BY datname ORDER BY count(*) DESC LIMIT 3"
    ).replace("\n", ", ")
    print(f"\nPostgreSQL client connections: {used} of max_connections {limit} (most: {busiest})")
    meminfo = Path("/proc/meminfo").read_text()
    available = int(re.search(r"MemAvailable:\s+(\d+)", meminfo).group(1)) // 1024  # type: ignore[union-attr]
    print(f"machine: MemAvailable {available} MB, load average {os.getloadavg()[0]:.2f}")


def walk(index: int = 1) -> None:
    """A walk-in citizen names, at reception, one service at an agency of each kind (those
    without consent); a consent-based service of a private firm is then consented to; the
    citizen is prefilled everywhere, and the consent revoked purges the firm's copy."""
    policy = load_policy(DEFAULT_POLICY)
    running = set(os.environ.get("IKD_DEMO_AGENCIES", "").split())
    chosen: dict[str, tuple[str, str]] = {}
    consent: tuple[str, ServicePolicy] | None = None
    # The last of each kind: agencies beyond the small demo's four.
    for entry in reversed(policy.agencies):
        if entry.code not in running:
            continue
        for rule in entry.services:
            if not rule.needs_consent and entry.kind.value not in chosen:
                chosen[entry.kind.value] = (entry.code, rule.code)
            if rule.needs_consent and consent is None and entry.kind.value == "private_firm":
                consent = (entry.code, rule)
    kinds = {entry.kind.value for entry in policy.agencies}
    missing = kinds - set(chosen)
    if missing:
        sys.exit(f"no running agency of kind {', '.join(sorted(missing))}")
    with _platform() as platform:
        citizen = Walkthrough(platform, DEV_KEYS, print, index)
        print(f"1. {citizen.profile.full_name} names at reception, one service per kind:")
        for kind_name, (agency, service) in sorted(chosen.items()):
            print(f"   {kind_name:20} {agency}/{service}")
        platform.call(
            "POST",
            f"{platform.endpoints.identity}/v1/verifications",
            client_id=RECEPTION_CLIENT,
            json={
                "credential": citizen.credential(Purpose.VERIFICATION),
                "services": [service for _, service in chosen.values()],
            },
        )
        print("2. prefill at each of them")
        for _, (agency, service) in sorted(chosen.items()):
            took = citizen.wait_served(agency, service)
            fields = citizen.prefill(agency, service).json()["fields"]
            print(f"   {agency}/{service}: {len(fields)} fields after {took * 1000:.0f} ms")
        if consent is not None:
            agency, consented = consent
            service = consented.code
            before = citizen.prefill(agency, service).status_code
            print(f"3. {agency}/{service} (consent-based) before consent: {before}")
            given = platform.call(
                "POST",
                f"{platform.endpoints.identity}/v1/consents",
                client_id="mpp-officer",
                json={
                    "credential": citizen.credential(Purpose.CONSENT),
                    "agency": agency,
                    "service": service,
                    "fields": sorted(consented.fields),
                    "purpose_code": consented.purpose.code,
                    "purpose_text": consented.purpose.text,
                    "expires_at": (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).isoformat(),
                },
            ).json()["consent"]
            took = citizen.wait_served(agency, service)
            print(f"   consented: served after {took * 1000:.0f} ms")
            platform.call(
                "POST",
                f"{platform.endpoints.identity}/v1/consents/{given['consent_id']}/revoke",
                client_id="mpp-officer",
                json={"credential": citizen.credential(Purpose.CONSENT)},
            )
            started = time.monotonic()
            while citizen.prefill(agency, service).status_code != 404:
                if time.monotonic() - started > 20:
                    sys.exit(f"{agency} still serves the citizen 20 s after revocation")
                time.sleep(0.05)
            print(f"   revoked: purged {(time.monotonic() - started) * 1000:.0f} ms later")
    print(f"agencies of all {len(kinds)} kinds served the citizen")


if __name__ == "__main__":
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command == "figures" and len(sys.argv) == 3:
        figures(sys.argv[2])
    elif command == "walk":
        walk()
    else:
        sys.exit(__doc__)
