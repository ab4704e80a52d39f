"""Backfill: N citizens registered at an agency whose gateway is down, then into its view.

What an agency onboarded (or back from downtime) meets: while its gateway does not run, N
citizens are registered for one of its services (at identity, with the gateway's own client,
as its gateway would: one record each on the profile topic, in the agency's consumer group's
backlog). Then the gateway starts and its worker applies the backlog. The bench polls one
count on the view every 100 ms until the view holds all N; the write times come from the
view rows' `updated_at` afterwards (each the start of the worker's batch transaction).
The rate is N over first write → the poll that saw all N (which errs low by up to a poll);
the time from the process start adds interpreter start-up and joining the consumer group.

The gateway's process (`ikd-gateway serve`, started by procs.sh in its own session) is stopped
and started again with the command line and environment it ran with, read from /proc, and its
pid file updated, so bench.sh's clean-up stops the new one.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.common import LIMITS, Context, Gateway, connect, count, wait_until

POLL = 0.1
IN_FLIGHT = 16


@dataclass(frozen=True)
class Process:
    """How to start a bench service again: its argv, environment and log."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path


def _read_process(services: Path, name: str) -> tuple[int, Process]:
    pid = int((services / f"{name}.pid").read_text().strip())
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    raw = Path(f"/proc/{pid}/environ").read_bytes().rstrip(b"\0").split(b"\0")
    env = dict(item.decode().split("=", 1) for item in raw if b"=" in item)
    return pid, Process(name, [a.decode() for a in argv], env, services / f"{name}.log")


async def stop(services: Path, name: str) -> Process:
    """SIGTERM the service's process group (as procs.sh's proc_stop), SIGKILL after 15 s."""
    pid, process = _read_process(services, name)
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            break
        await asyncio.sleep(0.1)
    else:
        os.killpg(pid, signal.SIGKILL)
    (services / f"{name}.pid").unlink(missing_ok=True)
    return process


def start(services: Path, process: Process) -> int:
    """Start it again in a session of its own (as procs.sh's proc_start); its pid."""
    with process.log.open("ab") as log:
        child = subprocess.Popen(  # noqa: S603 - the argv the bench itself started
            process.argv,
            env=process.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
    (services / f"{process.name}.pid").write_text(f"{child.pid}\n")
    return child.pid


async def wait_ready(gateway: Gateway, *, within: float = 120) -> None:
    async def ready() -> bool:
        try:
            async with httpx.AsyncClient(timeout=2) as http:
                return (await http.get(f"{gateway.url}/readyz")).status_code == 200
        except httpx.HTTPError:
            return False

    await wait_until(ready, within=within, interval=0.5, what=f"{gateway.name} ready")


async def register_at_identity(
    ctx: Context, gateway: Gateway, service: str, niks: Sequence[str]
) -> float:
    """Register the citizens at identity as the gateway's own client does; seconds taken."""
    token = await ctx.token(f"gateway-{gateway.code}", fresh=True)
    queue: asyncio.Queue[str] = asyncio.Queue()
    for nik in niks:
        queue.put_nowait(nik)
    started = time.monotonic()
    async with httpx.AsyncClient(
        base_url=ctx.identity_url,
        timeout=60,
        limits=LIMITS,
        headers={"Authorization": f"Bearer {token}"},
    ) as http:

        async def worker() -> None:
            while not queue.empty():
                nik = queue.get_nowait()
                response = await http.post(
                    "/v1/registrations",
                    json={"nik": nik, "service": service, "legal_reference": "benchmark backfill"},
                )
                if response.status_code != 201:
                    raise RuntimeError(f"registration: {response.status_code} {response.text}")

        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    return time.monotonic() - started


async def run_once(
    ctx: Context,
    *,
    gateway: Gateway,
    service: str,
    niks: Sequence[str],
    services: Path,
    pids: dict[str, int],
) -> dict[str, Any]:
    name = f"gateway-{gateway.code}"
    pseudonyms = [ctx.pseudonym(nik) for nik in niks]
    held_before = await count(gateway.dsn, "SELECT count(*) FROM citizen_view")
    process = await stop(services, name)
    try:
        registering = await register_at_identity(ctx, gateway, service, niks)
        # every registration's record on the topic before the gateway starts
        await wait_until(
            lambda: _outbox_sent(ctx),
            within=120,
            interval=0.2,
            what="identity's outbox sent",
        )
    finally:
        started = time.time()
        pids[name] = start(services, process)
    want = held_before + len(niks)
    view = await connect(gateway.dsn)
    try:
        deadline = time.time() + max(180.0, len(niks) / 20)
        while True:
            held = await view.fetchval("SELECT count(*) FROM citizen_view")
            polled = time.time()  # after the answer: the rate errs low, never high
            if held >= want:
                break
            if time.time() > deadline:
                raise TimeoutError(f"{gateway.name}'s view did not hold the {len(niks)} citizens")
            await asyncio.sleep(POLL)
        row = await view.fetchrow(
            """SELECT count(*) AS n, min(updated_at) AS first, max(updated_at) AS last
               FROM citizen_view WHERE pseudonym = ANY($1::text[])""",
            pseudonyms,
        )
    finally:
        await view.close()
    await wait_ready(gateway)
    if row["n"] != len(niks):
        raise RuntimeError(f"{gateway.name} holds {row['n']} of the {len(niks)} registered")
    first, last = row["first"].timestamp(), row["last"].timestamp()
    seen_window = max(polled - first, 1e-3)
    return {
        "citizens": len(niks),
        "registering_seconds": registering,
        "first_write_after_start_s": first - started,
        "seen_complete_after_start_s": polled - started,
        "write_window_s": last - first,
        "citizens_per_second": len(niks) / seen_window,
        "citizens_per_second_write_window": len(niks) / max(last - first, 1e-3),
        "citizens_per_second_from_start": len(niks) / (polled - started),
    }


async def _outbox_sent(ctx: Context) -> bool:
    return await count(ctx.identity_dsn, "SELECT count(*) FROM outbox WHERE sent_at IS NULL") == 0
