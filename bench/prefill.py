"""Prefill: requests per second and latency with authentication, policy and audit.

The load comes from `wrk` (C, one thread, keep-alive connections, a fixed number of
connections each sending its next request when the last one is answered): it costs a fraction
of a core, which on a 2-core machine leaves the most to the gateway. Each request carries the
agency backend's bearer token (verified by the gateway), asks one service's fields for one of
the citizens of the first bulk run (the policy decides the fields) and leaves an access event
in the gateway's outbox in the same transaction; after each run the audit log is polled until
it holds at least one entry per answered request.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import cpu
from bench.common import Context, count, wait_until
from bench.waits import WaitSampler

SCRIPT = Path(__file__).with_name("prefill.lua")


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


async def run_once(
    ctx: Context,
    *,
    agency: str,
    service: str,
    niks: list[str],
    connections: int,
    seconds: int,
    pids: dict[str, int],
) -> dict[str, Any]:
    gateway = ctx.gateway(agency)
    token = await ctx.token(f"backend-{gateway.code}", fresh=True)
    audit_before = await count(ctx.audit_dsn, "SELECT count(*) FROM log_entry")
    with tempfile.NamedTemporaryFile("w", suffix=".niks", delete=False) as handle:
        handle.write("\n".join(niks) + "\n")
        nik_file = handle.name
    env = {
        **os.environ,
        "BENCH_TOKEN": token,
        "BENCH_SERVICE": service,
        "BENCH_NIKS": nik_file,
    }
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--timeout",
        "5s",
        "-s",
        str(SCRIPT),
        gateway.url,
    ]
    cpu_before = cpu.snapshot(pids)
    started = time.time()
    try:
        async with WaitSampler(ctx.identity_dsn) as sampler:
            # wrk, our own script and numbers only
            done = await asyncio.create_subprocess_exec(
                *command,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            stdout, stderr = await asyncio.wait_for(done.communicate(), timeout=seconds + 60)
    finally:
        os.unlink(nik_file)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {stderr.decode()[-2000:]}")
    output = stdout.decode()
    ended = time.time()
    cpu_after = cpu.snapshot(pids)
    line = next((x for x in output.splitlines() if x.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{output[-2000:]}")
    figures = json.loads(line.removeprefix("BENCH_JSON "))
    requests = int(figures["requests"])
    duration = figures["duration_us"] / 1e6
    errors = sum(int(v) for k, v in figures.items() if k.startswith("errors_"))

    usage = cpu.usage(cpu_before, cpu_after, ended - started)

    async def audited() -> bool:
        return (
            await count(ctx.audit_dsn, "SELECT count(*) FROM log_entry") >= audit_before + requests
        )

    try:
        audit_lag = await wait_until(audited, within=120, interval=0.2, what="prefill audit")
    except TimeoutError:
        audit_lag = float("nan")
    audit_after = await count(ctx.audit_dsn, "SELECT count(*) FROM log_entry")
    return {
        "connections": connections,
        "seconds": duration,
        "requests": requests,
        "requests_per_second": requests / duration,
        "non_2xx_or_errors": errors,
        "p50_ms": figures["p50_us"] / 1000,
        "p95_ms": figures["p95_us"] / 1000,
        "p99_ms": figures["p99_us"] / 1000,
        "max_ms": figures["max_us"] / 1000,
        "audit_entries_added": audit_after - audit_before,
        "audit_caught_up_after_run_s": audit_lag,
        "cpu_percent_of_one_core": usage,
        # CPU per request holds on a shared machine where requests per second do not.
        "cpu_ms_per_request": {
            name: round(percent / 100 * (ended - started) / max(requests, 1) * 1000, 3)
            for name, percent in usage.items()
        },
        "database_waits": sampler.result(),
    }
