"""Bulk feed: N profiles through identity's outbox, Kafka, three gateways and the audit log.

The feed goes through identity's bulk endpoint (POST /v1/feed/profiles, 1000 profiles per
request and transaction, two requests in flight), as Dukcapil's feed would. An agency holds
only the citizens it has a relationship with: new citizens reach every gateway, which stores
nothing of them; a refresh (`revision`) of citizens registered at some agencies is stored and
audited there. The clock starts before the first request and stops when every gateway has
applied all N records and the audit log holds every access event they caused; the stage
timestamps come from the databases (outbox created_at/sent_at, processed_events.processed_at,
log_entry.recorded_at).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from dataclasses import dataclass
from typing import Any

import httpx

from bench import cpu
from bench.common import CLIENTS, LIMITS, SEED, Context, connect, count, wait_until
from bench.waits import WaitSampler
from ikd_dev.synthetic import iter_citizens
from ikd_shared import codec
from ikd_shared.events.profile_v1 import CitizenProfile

BATCH = 1000
IN_FLIGHT = 2
RUN_STRIDE = 100_000  # citizen indexes of run k start at k * RUN_STRIDE


@dataclass(frozen=True)
class Baseline:
    outbox_position: int
    audit_position: int


def bodies(run: int, n: int, first: int = 0, revision: int = 0) -> list[bytes]:
    """The run's citizens as bulk requests; `revision` > 0: Dukcapil changed their occupation."""
    profiles = [
        (p.model_copy(update={"occupation": f"Pekerjaan {revision}"}) if revision else p)
        for p in iter_citizens(n, seed=SEED, start=first + run * RUN_STRIDE)
    ]
    dumped = [p.model_dump(mode="json") for p in profiles]
    return [codec.dumps({"profiles": dumped[i : i + BATCH]}) for i in range(0, n, BATCH)]


def niks(run: int, n: int, first: int = 0) -> list[str]:
    return [p.nik for p in iter_citizens(n, seed=SEED, start=first + run * RUN_STRIDE)]


def citizens(run: int, n: int, first: int = 0) -> list[CitizenProfile]:
    return list(iter_citizens(n, seed=SEED, start=first + run * RUN_STRIDE))


async def _baseline(ctx: Context) -> Baseline:
    return Baseline(
        outbox_position=await count(
            ctx.identity_dsn, "SELECT coalesce(max(position), 0) FROM outbox"
        ),
        audit_position=await count(ctx.audit_dsn, "SELECT count(*) FROM log_entry"),
    )


async def _feed(ctx: Context, payloads: list[bytes]) -> float:
    token = await ctx.token(CLIENTS["feed"], fresh=True)
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for payload in payloads:
        queue.put_nowait(payload)
    async with httpx.AsyncClient(
        timeout=120,
        limits=LIMITS,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    ) as http:

        async def worker() -> None:
            while not queue.empty():
                payload = queue.get_nowait()
                response = await http.post(f"{ctx.identity_url}/v1/feed/profiles", content=payload)
                response.raise_for_status()
                body = response.json()
                if body["created"] + body["updated"] == 0:
                    raise RuntimeError(f"bulk feed changed nothing: {body}")

        await asyncio.gather(*(worker() for _ in range(IN_FLIGHT)))
    return time.time()


def _ts(value: dt.datetime | None) -> float | None:
    return value.timestamp() if value is not None else None


async def _stage_times(ctx: Context, base: Baseline, t0: float) -> dict[str, Any]:
    stages: dict[str, Any] = {}
    identity = await connect(ctx.identity_dsn)
    try:
        row = await identity.fetchrow(
            """SELECT count(*) AS n, min(created_at) AS first, max(created_at) AS last,
                      min(sent_at) AS first_sent, max(sent_at) AS sent
               FROM outbox WHERE position > $1""",
            base.outbox_position,
        )
        stages["identity outbox"] = {
            "count": row["n"],
            "first": _ts(row["first"]),
            "last": _ts(row["last"]),
        }
        stages["relay publish"] = {
            "count": row["n"],
            "first": _ts(row["first_sent"]),
            "last": _ts(row["sent"]),
        }
    finally:
        await identity.close()
    for gateway in ctx.gateways:
        connection = await connect(gateway.dsn)
        try:
            row = await connection.fetchrow(
                """SELECT count(*) AS n, min(processed_at) AS first, max(processed_at) AS last
                   FROM processed_events WHERE processed_at >= to_timestamp($1)""",
                t0 - 1,
            )
        finally:
            await connection.close()
        stages[f"{gateway.name} view"] = {
            "count": row["n"],
            "first": _ts(row["first"]),
            "last": _ts(row["last"]),
        }
    audit = await connect(ctx.audit_dsn)
    try:
        row = await audit.fetchrow(
            """SELECT count(*) AS n, min(recorded_at) AS first, max(recorded_at) AS last
               FROM log_entry WHERE position >= $1""",
            base.audit_position,
        )
    finally:
        await audit.close()
    stages["audit log"] = {"count": row["n"], "first": _ts(row["first"]), "last": _ts(row["last"])}
    return stages


async def run_once(
    ctx: Context,
    *,
    run: int,
    n: int,
    audited_per_event: int,
    pids: dict[str, int],
    first: int = 0,
    revision: int = 0,
) -> dict[str, Any]:
    payloads = bodies(run, n, first, revision)
    base = await _baseline(ctx)
    expected_audit = base.audit_position + n * audited_per_event
    cpu_before = cpu.snapshot(pids)
    t0 = time.time()
    feeder = asyncio.create_task(_feed(ctx, payloads))

    async def caught_up() -> bool:
        if feeder.done() and feeder.exception() is not None:
            raise feeder.exception()  # type: ignore[misc]
        for gateway in ctx.gateways:
            applied = await count(
                gateway.dsn,
                "SELECT count(*) FROM processed_events WHERE processed_at >= to_timestamp($1)",
                t0 - 1,
            )
            if applied < n:
                return False
        return await count(ctx.audit_dsn, "SELECT count(*) FROM log_entry") >= expected_audit

    timeout = max(120.0, n / 20)
    async with WaitSampler(ctx.identity_dsn) as sampler:
        await wait_until(caught_up, within=timeout, interval=0.5, what=f"bulk run {run}")
    seen = time.time()
    t_fed = await feeder
    cpu_after = cpu.snapshot(pids)
    stages = await _stage_times(ctx, base, t0)
    ends = [
        s["last"] for name, s in stages.items() if name.endswith(" view") or name == "audit log"
    ]
    t_end = max(e for e in ends if e is not None)
    elapsed = t_end - t0
    result: dict[str, Any] = {
        "events": n,
        "seconds": elapsed,
        "events_per_second": n / elapsed,
        "seen_caught_up_after_s": seen - t0,
        "feed_seconds": t_fed - t0,
        "identity_commit_per_second": n / (t_fed - t0),
        "audit_entries": stages["audit log"]["count"],
        "cpu_percent_of_one_core": cpu.usage(cpu_before, cpu_after, seen - t0),
        "database_waits": sampler.result(),
        "stages": {},
    }
    for name, stage in stages.items():
        first, last = stage["first"], stage["last"]
        window = (last - first) if first is not None and last is not None else None
        result["stages"][name] = {
            "count": stage["count"],
            "started_after_s": None if first is None else first - t0,
            "done_after_s": None if last is None else last - t0,
            "per_second_own_window": (stage["count"] / window) if window else None,
            "per_second_from_start": (stage["count"] / (last - t0)) if last else None,
        }
    return result
