"""Purge after a relationship ends while a bulk feed is still being consumed.

Beforehand, a few citizens are registered at dinsos-cirebon (their only relationship there)
and held in its view. Per run, Dukcapil's bulk feed sends N new citizens through identity
(bench/bulk.py's requests); as soon as identity has committed them all, and the workers are
behind by most of them, dinsos's backend ends the registrations of some of those citizens at
once. Each ended citizen's view row is polled every 20 ms on a connection of its own until it
is gone. The latency counts from identity's transaction of the end (its outbox row's
`created_at`: the transaction's start, a little before its commit, so the figure errs high)
to the first poll that no longer finds the row. The backlog at that moment is N minus the
feed's records dinsos's worker had applied by then (`processed_events.processed_at`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

import httpx

from bench import bulk
from bench.common import Context, connect, count
from bench.relate import backend, register
from bench.stats import latency_summary

POLL = 0.02
AGENCY = "dinsos-cirebon"


async def prepare(ctx: Context, niks: Sequence[str]) -> list[str]:
    """Register the citizens at dinsos; wait until its view holds them; the relationship ids."""
    gateway = ctx.gateway(AGENCY)
    ids = await register(ctx, gateway, niks, in_flight=4)
    pseudonyms = [ctx.pseudonym(nik) for nik in niks]
    deadline = time.time() + 120
    while await count(
        gateway.dsn,
        "SELECT count(*) FROM citizen_view WHERE pseudonym = ANY($1::text[])",
        pseudonyms,
    ) < len(niks):
        if time.time() > deadline:
            raise TimeoutError(f"{AGENCY} does not hold the citizens registered for the purge")
        await asyncio.sleep(0.5)
    return ids


async def _gone(dsn: str, pseudonym: str, within: float) -> float:
    """Wall time of the first poll that no longer finds the citizen's row."""
    connection = await connect(dsn)
    try:
        deadline = time.time() + within
        while time.time() < deadline:
            issued = time.time()
            if not await connection.fetchval(
                "SELECT EXISTS (SELECT 1 FROM citizen_view WHERE pseudonym = $1)", pseudonym
            ):
                return issued
            await asyncio.sleep(POLL)
    finally:
        await connection.close()
    raise TimeoutError(f"purge of {pseudonym[:12]} not seen within {within:.0f} s")


async def run_once(
    ctx: Context,
    *,
    run: int,
    n: int,
    first: int,
    ended: Sequence[tuple[str, str]],  # (nik, relationship id) of citizens held by dinsos
) -> dict[str, Any]:
    gateway = ctx.gateway(AGENCY)
    payloads = bulk.bodies(run, n, first)
    base = await count(ctx.identity_dsn, "SELECT coalesce(max(position), 0) FROM outbox")
    t0 = time.time()
    fed = await bulk._feed(ctx, payloads)  # returns once identity committed every profile
    token = await ctx.token(backend(gateway), fresh=True)
    async with httpx.AsyncClient(
        base_url=gateway.url, timeout=30, headers={"Authorization": f"Bearer {token}"}
    ) as http:

        async def end(nik: str, relationship: str) -> float:
            pseudonym = ctx.pseudonym(nik)
            # first poll only after the end is committed: the row is there until then
            response = await http.post(f"/v1/registrations/{relationship}/end")
            response.raise_for_status()
            return await _gone(gateway.dsn, pseudonym, within=max(120.0, n / 20))

        gone = await asyncio.gather(*(end(nik, rid) for nik, rid in ended))
    pseudonyms = [ctx.pseudonym(nik) for nik, _ in ended]
    identity = await connect(ctx.identity_dsn)
    try:
        rows = await identity.fetch(
            """SELECT key, max(created_at) AS at FROM outbox
               WHERE position > $1 AND key = ANY($2::text[]) GROUP BY key""",
            base,
            pseudonyms,
        )
    finally:
        await identity.close()
    committed = {row["key"]: row["at"].timestamp() for row in rows}
    missing = [p[:12] for p in pseudonyms if p not in committed]
    if missing:
        raise RuntimeError(f"no outbox row of the end for {', '.join(missing)}")
    latencies = [at - committed[p] for p, at in zip(pseudonyms, gone, strict=True)]
    view = await connect(gateway.dsn)
    try:
        backlog = []
        for pseudonym in pseudonyms:
            applied = await view.fetchval(
                """SELECT count(*) FROM processed_events
                   WHERE processed_at >= to_timestamp($1) AND processed_at <= to_timestamp($2)""",
                t0 - 1,
                committed[pseudonym],
            )
            backlog.append(n - int(applied))
    finally:
        await view.close()
    summary = latency_summary(latencies)
    return {
        "feed_events": n,
        "feed_seconds": fed - t0,
        "ended": len(ended),
        "backlog_at_end": min(backlog),
        "backlog_at_end_max": max(backlog),
        "median_s": summary["p50_ms"] / 1000,
        "max_s": summary["max_ms"] / 1000,
        "latencies": summary,
    }
