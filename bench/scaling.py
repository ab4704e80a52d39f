"""Throughput against the number of processes on this machine (issue 14, Build 3).

Three measurements, each with 1 and then 2 processes, each a median of the bench's runs:
- bulk feed with N worker processes per agency: beside each gateway's own worker (the child
  of `ikd-gateway serve`), N-1 more `ikd-gateway worker` processes with the same command line
  and environment (read from /proc; a data directory of their own, no metrics or web port),
  members of the agency's one consumer group, which spreads the profile topic's partitions
  over them; timed only once every group is stable with all its members;
- prefill with N API processes of polres-cirebon's gateway (`ikd-gateway api --workers N`,
  through IKD_GATEWAY_API_WORKERS): the gateway restarted with it;
- verification with N identity API processes (`ikd-identity serve --workers N`, one active
  relay among them, through IKD_IDENTITY_API_WORKERS): identity restarted with it.
Every restarted service is started again as it ran before the measurement. The machine's busy
share (both cores = 200 %) comes with each figure: where it nears 200 %, more processes only
share the same two cores.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import httpx

from bench import backfill, cpu
from bench.cleanup import _kafka
from bench.common import Context, wait_until
from bench.stats import summarize_runs

PROCESS_COUNTS = (1, 2)
WORKER_ENV_DROPPED = ("IKD_GATEWAY_WORKER_METRICS_PORT", "IKD_GATEWAY_WORKER_WEB_PORT")
"""Ports only one of an agency's worker processes can bind."""


def worker_process(serve: backfill.Process, replica: int) -> backfill.Process:
    """Another `ikd-gateway worker` of the agency whose `ikd-gateway serve` is `serve`."""
    if serve.argv[-1] != "serve":
        raise ValueError(f"not an `ikd-gateway serve` command line: {serve.argv}")
    env = {k: v for k, v in serve.env.items() if k not in WORKER_ENV_DROPPED}
    env["IKD_GATEWAY_DATA_DIR"] = f"{serve.env['IKD_GATEWAY_DATA_DIR']}-worker{replica}"
    name = f"{serve.name}-worker{replica}"
    return backfill.Process(
        name, [*serve.argv[:-1], "worker"], env, serve.log.with_name(name + ".log")
    )


def _group_state(bootstrap: str, group: str) -> tuple[str, int]:
    admin = _kafka(bootstrap).confluent_admin()
    description = admin.describe_consumer_groups([group])[group].result(timeout=15)
    return str(description.state), len(description.members)


async def wait_for_groups(ctx: Context, members: int, *, within: float = 120) -> None:
    """Until every gateway's consumer group is stable with `members` members."""
    for gateway in ctx.gateways:
        group = f"ikd-gateway-{gateway.code}"

        async def stable(group: str = group) -> bool:
            try:
                state, count = await asyncio.to_thread(_group_state, ctx.bootstrap, group)
            except Exception:  # the coordinator may be moving: ask again
                return False
            return state.endswith("STABLE") and count == members

        await wait_until(stable, within=within, interval=1, what=f"{group} with {members}")


@contextlib.asynccontextmanager
async def workers(
    ctx: Context, services: Path, count: int, pids: dict[str, int]
) -> AsyncIterator[None]:
    """`count` worker processes per gateway for the block (count-1 beside serve's own)."""
    started = []
    try:
        for gateway in ctx.gateways:
            _, serve = backfill._read_process(services, f"gateway-{gateway.code}")
            for replica in range(2, count + 1):
                process = worker_process(serve, replica)
                backfill.start(services, process)
                started.append(process.name)
        pids.update(cpu.service_pids(services))
        await wait_for_groups(ctx, count)
        yield
    finally:
        for name in started:
            await backfill.stop(services, name)
            pids.pop(name, None)
    if started:
        await wait_for_groups(ctx, 1)


async def _wait_http(url: str, *, within: float = 120) -> None:
    async def answers() -> bool:
        try:
            async with httpx.AsyncClient(timeout=2) as http:
                return (await http.get(url)).status_code == 200
        except httpx.HTTPError:
            return False

    await wait_until(answers, within=within, interval=0.5, what=url)


@contextlib.asynccontextmanager
async def restarted(
    services: Path, name: str, env: dict[str, str], ready_url: str, pids: dict[str, int]
) -> AsyncIterator[None]:
    """The service restarted with `env` added for the block, then as it ran before; `pids`
    (the CPU accounting's process groups) follows the new processes. Left alone if it already
    runs with `env`."""
    _, running = backfill._read_process(services, name)
    if all(running.env.get(key) == value for key, value in env.items()):
        yield
        return
    before = await backfill.stop(services, name)
    backfill.start(services, backfill.Process(name, before.argv, {**before.env, **env}, before.log))
    try:
        await _wait_http(ready_url)
        pids.update(cpu.service_pids(services))
        yield
    finally:
        await backfill.stop(services, name)
        backfill.start(services, before)
        await _wait_http(ready_url)
        pids.update(cpu.service_pids(services))


def busy(run: dict[str, Any]) -> float:
    """The machine's busy share during the run (100 = one core)."""
    return float(run.get("cpu_percent_of_one_core", {}).get("machine busy (all)", 0.0))


async def measure(
    counts: Iterable[int],
    setup: Callable[[int], contextlib.AbstractAsyncContextManager[None]],
    once: Callable[[], Awaitable[dict[str, Any]]],
    *,
    runs: int,
    keys: Sequence[str],
    label: str,
) -> dict[str, Any]:
    """`runs` runs of `once` per process count; each count's runs and their medians."""
    out: dict[str, Any] = {}
    for count in counts:
        started = time.monotonic()
        rows = []
        try:
            async with setup(count):
                for _ in range(runs):
                    one = await once()
                    one["machine_busy_percent"] = busy(one)
                    print(
                        f"bench:   {label} x{count}: "
                        + ", ".join(f"{k} {one[k]:.0f}" for k in (*keys, "machine_busy_percent")),
                        flush=True,
                    )
                    rows.append(one)
        except Exception as error:  # the other count's figures still stand
            traceback.print_exc()
            out[str(count)] = {"failed": f"{type(error).__name__}: {error}"}
            continue
        out[str(count)] = {
            "runs": rows,
            "summary": summarize_runs(rows, [*keys, "machine_busy_percent"]),
            "wall_seconds": time.monotonic() - started,
        }
    return out


async def attempt(work: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """One kind's figures, or why it failed: the other kinds are still measured."""
    try:
        return await work
    except Exception as error:
        traceback.print_exc()
        return {"failed": f"{type(error).__name__}: {error}"}
