"""Verification path at a fixed rate: from identity's commit to visible in three views, audited.

A load generator (this process, aiohttp on uvloop: a fraction of the CPU httpx needed) sends
pre-minted IKD credentials of new citizens to POST /v1/verifications on an open-loop schedule
(request i at start + i/rate). At most MAX_IN_FLIGHT requests are outstanding: a request due
while that many wait is not sent (shed), so a run lasts its duration plus the time to answer
what is in flight, whatever the service manages.

Nothing watches the platform while it runs: the latencies come afterwards from timestamps the
platform writes anyway, for every answered citizen. The start is identity's commit of the
verification (the outbox row's created_at: the transaction's time); a view holds the citizen
at its row's updated_at (the worker's transaction time); audited is the earliest recorded_at
of the citizen's `view` entries in the log from each gateway that holds fields without consent
(bank-bjb holds none without a consent: a row, no access event). Transaction times precede
their commits by the transaction's own length (a few ms); the audit entry cannot exist before
the view's commit, so "views + audited" bounds the visible latency from above.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import time
from typing import Any

import aiohttp
import asyncpg
from cryptography.hazmat.primitives import serialization

from bench import cpu
from bench.common import CLIENTS, SEED, Context, wait_until
from bench.stats import latency_summary
from bench.waits import WaitSampler
from ikd_dev.issuer import mint_credential
from ikd_dev.synthetic import iter_citizens
from ikd_shared import codec
from ikd_shared.credentials import Purpose
from ikd_shared.policy import DEFAULT_POLICY, load_policy

ISSUER = "https://dukcapil.kemendagri.go.id/ikd"
KID = "dev-dukcapil-1"
FIRST_INDEX = 600_000  # a range of its own beside bench/run.py's (bulk.RUN_STRIDE apart)
MAX_IN_FLIGHT = 128
DRAIN_SECONDS = 60


async def _times(dsn: str, sql: str, keys: list[str], *args: object) -> dict[str, dt.datetime]:
    connection = await asyncpg.connect(dsn)
    try:
        rows = await connection.fetch(sql, keys, *args)
    finally:
        await connection.close()
    return {row[0]: row[1] for row in rows}


async def platform_times(
    ctx: Context, pseudonyms: list[str], audited_agencies: frozenset[str]
) -> tuple[dict[str, float], dict[str, dict[str, float]], dict[str, float]]:
    """(commit, {gateway: view write}, audited) per citizen, as epoch seconds, from the databases.

    Audited = when the last of the audited gateways' first `view` entries was recorded.
    """
    commits = await _times(
        ctx.identity_dsn,
        "SELECT key, min(created_at) FROM outbox WHERE key = ANY($1::text[]) GROUP BY key",
        pseudonyms,
    )
    views: dict[str, dict[str, float]] = {}
    for gateway in ctx.gateways:
        found = await _times(
            gateway.dsn,
            "SELECT pseudonym, updated_at FROM citizen_view WHERE pseudonym = ANY($1::text[])",
            pseudonyms,
        )
        views[gateway.code] = {p: t.timestamp() for p, t in found.items()}
    connection = await asyncpg.connect(ctx.audit_dsn)
    try:
        rows = await connection.fetch(
            """SELECT pseudonym, agency, min(recorded_at) AS at FROM log_entry
               WHERE pseudonym = ANY($1::text[]) AND channel = 'view'
                 AND agency = ANY($2::text[])
               GROUP BY pseudonym, agency""",
            pseudonyms,
            sorted(audited_agencies),
        )
    finally:
        await connection.close()
    per_citizen: dict[str, dict[str, float]] = {}
    for row in rows:
        per_citizen.setdefault(row["pseudonym"], {})[row["agency"]] = row["at"].timestamp()
    audited = {
        p: max(marks.values()) for p, marks in per_citizen.items() if set(marks) >= audited_agencies
    }
    return {p: t.timestamp() for p, t in commits.items()}, views, audited


async def _caught_up(ctx: Context, pseudonyms: list[str], audited_agencies: frozenset[str]) -> bool:
    _, views, audited = await platform_times(ctx, pseudonyms, audited_agencies)
    return len(audited) == len(pseudonyms) and all(
        len(found) == len(pseudonyms) for found in views.values()
    )


class Minter:
    def __init__(self, ctx: Context, *, first_index: int = FIRST_INDEX) -> None:
        key = serialization.load_pem_private_key(ctx.issuer_key.read_bytes(), password=None)
        self.key: Any = key
        self.next_index = first_index

    def credentials(self, n: int) -> list[tuple[str, str]]:
        """(NIK, credential) of n citizens never seen before."""
        out = []
        for profile in iter_citizens(n, seed=SEED, start=self.next_index):
            token = mint_credential(
                self.key,
                kid=KID,
                issuer=ISSUER,
                purpose=Purpose.VERIFICATION,
                profile=profile,
                lifetime=dt.timedelta(minutes=30),
            )
            out.append((profile.nik, token))
        self.next_index += n
        return out


async def run_once(
    ctx: Context,
    minter: Minter,
    *,
    rate: int,
    seconds: float,
    audited_agencies: frozenset[str],
    pids: dict[str, int],
    waits_dsn: str,
) -> dict[str, Any]:
    n = int(rate * seconds)
    credentials = minter.credentials(n)
    # The citizen comes for a service at each of the three agencies, so each may hold them.
    policy = load_policy(DEFAULT_POLICY)
    services = [policy.agency(g.name).services[0].code for g in ctx.gateways]
    bodies = [codec.dumps({"credential": c, "services": services}) for _, c in credentials]
    token = await ctx.token(CLIENTS["counter"], fresh=True)
    responded: dict[int, float] = {}
    request_latency: list[float] = []
    statuses: dict[int, int] = {}
    late = shed = 0
    in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
    url = f"{ctx.identity_url}/v1/verifications"
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT)
    async with aiohttp.ClientSession(
        connector=connector, headers=headers, timeout=aiohttp.ClientTimeout(total=60)
    ) as http:

        async def send(i: int) -> None:
            try:
                sent = time.time()
                async with http.post(url, data=bodies[i]) as response:
                    body = await response.read()
                    status = response.status
                done = time.time()
                if status == 200 and not codec.loads(body)["changed"]:
                    status = 0  # an old citizen: no new version, nothing to see
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200:
                    responded[i] = done
                    request_latency.append(done - sent)
            except (aiohttp.ClientError, TimeoutError):
                statuses[-1] = statuses.get(-1, 0) + 1
            finally:
                in_flight.release()

        start = time.time() + 0.5
        await asyncio.sleep(max(0.0, start - time.time()))
        cpu_before = cpu.snapshot(pids)
        tasks = []
        async with WaitSampler(waits_dsn) as sampler:
            for i in range(n):
                due = start + i / rate
                now = time.time()
                if due > now:
                    await asyncio.sleep(due - now)
                elif now - due > 0.05:
                    late += 1
                if in_flight.locked():
                    shed += 1
                    continue
                await in_flight.acquire()
                tasks.append(asyncio.create_task(send(i)))
            await asyncio.gather(*tasks)
            last_response = time.time()
    cpu_after = cpu.snapshot(pids)

    # Only now, with the load over, look at what the platform wrote.
    answered = sorted(responded)
    pseudonyms = [ctx.pseudonym(credentials[i][0]) for i in answered]
    with contextlib.suppress(TimeoutError):  # what is still missing is reported as not seen
        await wait_until(
            lambda: _caught_up(ctx, pseudonyms, audited_agencies),
            within=DRAIN_SECONDS,
            interval=0.5,
            what="verified citizens in the views and the audit log",
        )
    commits, views, audited = await platform_times(ctx, pseudonyms, audited_agencies)

    to_view, to_audit, to_both, to_response = [], [], [], []
    missing = 0
    for i, pseudonym in zip(answered, pseudonyms, strict=True):
        committed = commits.get(pseudonym)
        marks = [views[g.code].get(pseudonym) for g in ctx.gateways]
        audit_at = audited.get(pseudonym)
        if committed is None or None in marks or audit_at is None:
            missing += 1
            continue
        visible = max(m for m in marks if m is not None)
        to_view.append(max(0.0, visible - committed))
        to_audit.append(max(0.0, audit_at - committed))
        to_both.append(max(0.0, max(visible, audit_at) - committed))
        to_response.append(max(0.0, responded[i] - committed))
    both = latency_summary(to_both)
    return {
        "target_rate": rate,
        "seconds": seconds,
        "requests": n,
        "ok": len(responded),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "achieved_rate": len(responded) / (last_response - start) if responded else 0.0,
        "sent": n - shed,
        "shed": shed,
        "late_sends": late,
        "measured": len(to_both),
        "not_seen": missing,
        "request": latency_summary(request_latency),
        "commit_to_response": latency_summary(to_response),
        "commit_to_views": latency_summary(to_view),
        "commit_to_audited": latency_summary(to_audit),
        "commit_to_views_and_audited": both,
        "p50_ms": both["p50_ms"],
        "p95_ms": both["p95_ms"],
        "p99_ms": both["p99_ms"],
        "cpu_percent_of_one_core": cpu.usage(cpu_before, cpu_after, last_response - start),
        "database_waits": sampler.result(),
    }
