"""Verification path at a fixed rate: from identity's commit to visible in three views, audited.

A load generator (this process) sends pre-minted IKD credentials of new citizens to
POST /v1/verifications on an open-loop schedule (request i at start + i/rate). At most
MAX_IN_FLIGHT requests are outstanding: a request due while that many wait is not sent (shed),
so a run lasts its duration plus the time to answer what is in flight, whatever the service
manages. The commit time of a verification is when its HTTP response arrived.
A poller in its own process watches a sample of the citizens (up to ~100 per second) with
indexed look-ups every POLL_INTERVAL: their row in each of the three gateways' views, and their
`view` access events in the audit log from every gateway that holds fields without consent
(bank-bjb holds none without a consent, so it has a row but no access event). A citizen counts
as seen at the start of the first query that saw it, so the resolution is one poll interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import multiprocessing
import queue
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
from cryptography.hazmat.primitives import serialization

from bench import cpu
from bench.common import CLIENTS, SEED, Context
from bench.stats import latency_summary
from bench.waits import WaitSampler
from ikd_dev.issuer import mint_credential
from ikd_dev.synthetic import iter_citizens
from ikd_shared.credentials import Purpose
from ikd_shared.policy import DEFAULT_POLICY, load_policy

ISSUER = "https://dukcapil.kemendagri.go.id/ikd"
KID = "dev-dukcapil-1"
FIRST_INDEX = 500_000  # far from the bulk runs' citizens (bulk.RUN_STRIDE)
MAX_IN_FLIGHT = 128
POLL_INTERVAL = 0.005
SAMPLES_PER_SECOND = 100
DRAIN_SECONDS = 60


@dataclass(frozen=True)
class PollSpec:
    start: float  # wall time of request 0
    items: list[tuple[str, float]]  # (pseudonym, scheduled offset)
    views: dict[str, str]  # gateway code -> DSN
    audit_dsn: str
    audited_agencies: frozenset[str]
    deadline: float


async def _look_view(
    code: str, connection: asyncpg.Connection, open_: list[str], seen: dict[str, dict[str, float]]
) -> None:
    missing = [p for p in open_ if code not in seen[p]]
    if not missing:
        return
    issued = time.time()
    rows = await connection.fetch(
        "SELECT pseudonym FROM citizen_view WHERE pseudonym = ANY($1::text[])", missing
    )
    for row in rows:
        seen[row["pseudonym"]][code] = issued


async def _look_audit(
    connection: asyncpg.Connection,
    agencies: frozenset[str],
    open_: list[str],
    seen: dict[str, dict[str, float]],
) -> None:
    missing = [p for p in open_ if "audit" not in seen[p]]
    if not missing:
        return
    issued = time.time()
    rows = await connection.fetch(
        """SELECT pseudonym, array_agg(DISTINCT agency) AS agencies FROM log_entry
           WHERE pseudonym = ANY($1::text[]) AND channel = 'view' GROUP BY pseudonym""",
        missing,
    )
    for row in rows:
        if agencies <= set(row["agencies"]):
            seen[row["pseudonym"]]["audit"] = issued


async def _poll(spec: PollSpec, control: Any) -> dict[str, dict[str, float]]:
    views = {code: await asyncpg.connect(dsn) for code, dsn in spec.views.items()}
    audit = await asyncpg.connect(spec.audit_dsn)
    items = spec.items
    seen: dict[str, dict[str, float]] = {p: {} for p, _ in items}
    wanted = len(spec.views) + 1
    try:
        while time.time() < spec.deadline:
            tick = time.time()
            with contextlib.suppress(queue.Empty):
                # the generator is done: only the citizens it verified are still awaited
                verified = set(control.get_nowait())
                items = [item for item in items if item[0] in verified]
            due = [p for p, offset in items if spec.start + offset <= tick]
            open_ = [p for p in due if len(seen[p]) < wanted]
            if not open_ and len(due) == len(items):
                break
            await asyncio.gather(
                _look_audit(audit, spec.audited_agencies, open_, seen),
                *(_look_view(code, c, open_, seen) for code, c in views.items()),
            )
            await asyncio.sleep(max(0.0, tick + POLL_INTERVAL - time.time()))
    finally:
        for connection in [*views.values(), audit]:
            await connection.close()
    return seen


def _poller_main(spec: PollSpec, control: Any, results: Any) -> None:
    results.put(asyncio.run(_poll(spec, control)))


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
    every = max(1, rate // SAMPLES_PER_SECOND)
    sampled = {i for i in range(0, n, every)}
    start = time.time() + 1.5  # the poller connects meanwhile
    spec = PollSpec(
        start=start,
        items=[(ctx.pseudonym(credentials[i][0]), i / rate) for i in sorted(sampled)],
        views={g.code: g.dsn for g in ctx.gateways},
        audit_dsn=ctx.audit_dsn,
        audited_agencies=audited_agencies,
        deadline=start + seconds + DRAIN_SECONDS,
    )
    mp = multiprocessing.get_context("spawn")
    control = mp.Queue()
    results = mp.Queue()
    poller = mp.Process(target=_poller_main, args=(spec, control, results), daemon=True)
    poller.start()

    # The citizen comes for a service at each of the three agencies, so each may hold them.
    policy = load_policy(DEFAULT_POLICY)
    services = [policy.agency(g.name).services[0].code for g in ctx.gateways]
    token = await ctx.token(CLIENTS["counter"], fresh=True)
    responded: dict[int, float] = {}
    request_latency: list[float] = []
    statuses: dict[int, int] = {}
    late = shed = 0
    in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
    limits = httpx.Limits(max_connections=MAX_IN_FLIGHT, max_keepalive_connections=MAX_IN_FLIGHT)
    async with httpx.AsyncClient(
        timeout=60, limits=limits, headers={"Authorization": f"Bearer {token}"}
    ) as http:

        async def send(i: int) -> None:
            try:
                sent = time.time()
                response = await http.post(
                    f"{ctx.identity_url}/v1/verifications",
                    json={"credential": credentials[i][1], "services": services},
                )
                done = time.time()
                status = response.status_code
                if status == 200 and not response.json()["changed"]:
                    status = 0  # an old citizen: no new version, nothing to see
                statuses[status] = statuses.get(status, 0) + 1
                if status == 200:
                    responded[i] = done
                    request_latency.append(done - sent)
            except httpx.HTTPError:
                statuses[-1] = statuses.get(-1, 0) + 1
            finally:
                in_flight.release()

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
    control.put([spec.items[k][0] for k, i in enumerate(sorted(sampled)) if i in responded])
    seen: dict[str, dict[str, float]] = await asyncio.to_thread(results.get)
    poller.join(timeout=10)

    to_view, to_audit, to_both = [], [], []
    missing = 0
    for i in sorted(sampled):
        if i not in responded:
            continue
        marks = seen.get(ctx.pseudonym(credentials[i][0]), {})
        views = [marks.get(g.code) for g in ctx.gateways]
        audited = marks.get("audit")
        if None in views or audited is None:
            missing += 1
            continue
        visible = max(v for v in views if v is not None)
        to_view.append(max(0.0, visible - responded[i]))
        to_audit.append(max(0.0, audited - responded[i]))
        to_both.append(max(0.0, max(visible, audited) - responded[i]))
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
        "sampled": len(sampled),
        "sampled_not_seen": missing,
        "request": latency_summary(request_latency),
        "commit_to_views": latency_summary(to_view),
        "commit_to_audited": latency_summary(to_audit),
        "commit_to_views_and_audited": both,
        "p50_ms": both["p50_ms"],
        "p95_ms": both["p95_ms"],
        "p99_ms": both["p99_ms"],
        "cpu_percent_of_one_core": cpu.usage(cpu_before, cpu_after, last_response - start),
        "database_waits": sampler.result(),
    }
