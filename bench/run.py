"""`make bench` after the services are up (deploy/scripts/bench.sh starts them): measure, report.

Order: the bulk feed (whose profile events give the record size), Kafka's producer benchmark
with that size, prefill, the verification path at fixed rates, consent revocation, the end of
an agency's last relationship with a citizen, an update's fan-out to related agencies. Between
measurements the bench waits until the platform is idle. A measurement that fails is reported
as failed with its reason; the others still run.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import os
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import yaml

from bench import (
    audit_append,
    backfill,
    backlog,
    bulk,
    consent,
    cpu,
    kafka_ceiling,
    machine,
    prefill,
    profile,
    relate,
    report,
    scaling,
    verify,
)
from bench.common import Context, Gateway, count, wait_until
from bench.stats import spread, summarize_runs
from ikd_shared.events.topics import PROFILE

REPO = Path(__file__).resolve().parent.parent
POLICY = REPO / "deploy" / "policies" / "mpp-kabupaten-cirebon.yaml"
SERVICES = REPO / ".run" / "bench" / "services"  # procs.sh's pid files and logs of the bench


@dataclasses.dataclass(frozen=True)
class Plan:
    runs: int
    bulk_events: int
    ceiling_records: int
    prefill_connections: tuple[int, ...]
    prefill_seconds: int
    verify_rates: tuple[int, ...]
    verify_seconds: float
    consent_repetitions: int
    relationship_repetitions: int
    fanout_repetitions: int
    audit_entries: int
    backfill_citizens: int
    purge_backlog_ended: int
    scaling_bulk_events: int  # shorter runs than the bulk section's
    scaling_prefill_connections: int
    scaling_verify_rate: int
    scaling_verify_seconds: float


# BENCH_RUNS: how often each measurement is repeated (the tables give the median)
FULL = Plan(
    runs=int(os.environ.get("BENCH_RUNS", "3")),
    bulk_events=int(os.environ.get("BENCH_BULK_EVENTS", "4000")),
    ceiling_records=300_000,
    prefill_connections=(16, 64),
    prefill_seconds=10,
    verify_rates=(50, 200, 1000),
    verify_seconds=10,
    consent_repetitions=20,
    relationship_repetitions=20,
    fanout_repetitions=10,
    audit_entries=50_000,
    backfill_citizens=int(os.environ.get("BENCH_BACKFILL_CITIZENS", "4000")),
    purge_backlog_ended=4,
    scaling_bulk_events=2000,
    scaling_prefill_connections=64,
    scaling_verify_rate=1000,
    scaling_verify_seconds=5,
)
QUICK = Plan(
    runs=1,
    bulk_events=2000,
    ceiling_records=50_000,
    prefill_connections=(16,),
    prefill_seconds=3,
    verify_rates=(50, 200),
    verify_seconds=4,
    consent_repetitions=4,
    relationship_repetitions=4,
    fanout_repetitions=3,
    audit_entries=10_000,
    backfill_citizens=1000,
    purge_backlog_ended=2,
    scaling_bulk_events=1000,
    scaling_prefill_connections=16,
    scaling_verify_rate=200,
    scaling_verify_seconds=3,
)
FANOUT_SIZES = (1, 2, 3)
# Citizen ranges (bulk.RUN_STRIDE apart): the related citizens of the bulk runs, the new ones
# nobody holds, fresh ones for the relationship and fan-out measurements, the backfill's, the
# backlog feed's of the purge under a backlog, the citizens it purges, the verifications' and
# the scaling verifications'. Disjoint (citizen_ranges), so that every feed brings new citizens.
RELATED, UNRELATED, FRESH, BACKFILL, BACKLOG, PURGED, VERIFIED, SCALED = range(8)
SCALING_REVISION = 100  # the scaling runs' refreshes, after the bulk runs' revisions 1..runs
AUDITED_PER_RELATIONSHIP = 2
"""Access events of one stored update at one agency: its view write, its agency-topic record."""


def citizen_ranges(plan: Plan) -> dict[int, range]:
    """The citizen indexes (after the run's first) each range's sections use."""
    sizes = {
        RELATED: plan.bulk_events,
        UNRELATED: plan.bulk_events,
        FRESH: plan.relationship_repetitions + plan.fanout_repetitions * len(FANOUT_SIZES),
        # the timed runs, then the one profiled run (bench/profile.py)
        BACKFILL: plan.backfill_citizens * (plan.runs + 1),
        BACKLOG: plan.bulk_events * plan.runs,
        PURGED: (plan.purge_backlog_ended + 1) * plan.runs,
        VERIFIED: int(sum(plan.verify_rates) * plan.verify_seconds) * plan.runs
        + int(plan.verify_rates[-1] * plan.verify_seconds),
        SCALED: int(plan.scaling_verify_rate * plan.scaling_verify_seconds)
        * plan.runs
        * len(scaling.PROCESS_COUNTS),
    }
    return {
        index: range(index * bulk.RUN_STRIDE, index * bulk.RUN_STRIDE + size)
        for index, size in sizes.items()
    }


def holds_without_consent(agency: str) -> bool:
    """Whether the agency keeps fields without a consent (then each view write is audited)."""
    for entry in yaml.safe_load(POLICY.read_text())["agencies"]:
        if entry["code"] == agency:
            return any(s["legal_basis"] != "consent" for s in entry["services"])
    raise KeyError(agency)


async def settle(ctx: Context, *, within: float = 180) -> float:
    """Wait until nothing moves for a second: outboxes empty, views and audit log still."""

    async def state() -> tuple[int, ...]:
        figures = [
            await count(ctx.identity_dsn, "SELECT count(*) FROM outbox WHERE sent_at IS NULL"),
            await count(ctx.audit_dsn, "SELECT count(*) FROM log_entry"),
        ]
        for gateway in ctx.gateways:
            figures.append(await count(gateway.dsn, "SELECT count(*) FROM access_outbox"))
            figures.append(await count(gateway.dsn, "SELECT count(*) FROM processed_events"))
        return tuple(figures)

    last = await state()

    async def still() -> bool:
        nonlocal last
        await asyncio.sleep(1.0)
        now = await state()
        quiet = now == last and now[0] == 0 and all(v == 0 for v in now[2::2])
        last = now
        return quiet

    return await wait_until(still, within=within, interval=0, what="platform settling")


async def section(
    name: str, results: dict[str, Any], work: Callable[[], Awaitable[dict[str, Any]]]
) -> None:
    only = os.environ.get("BENCH_ONLY", "").split(",")
    if only != [""] and name not in only:
        return
    print(f"bench: {name} ...", flush=True)
    started = time.monotonic()
    try:
        results[name] = await work()
    except Exception as error:
        traceback.print_exc()
        results[name] = {"failed": f"{type(error).__name__}: {error}"}
    results[name]["wall_seconds"] = time.monotonic() - started
    print(f"bench: {name} done in {results[name]['wall_seconds']:.0f} s", flush=True)


async def main(args: argparse.Namespace) -> None:
    quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
    plan = QUICK if quick else FULL
    page = Path(args.out) / "BENCHMARKS.md"
    if page.exists() and not report.has_markers(page.read_text()):  # before minutes of work
        raise SystemExit(f"bench: {page} lacks the markers between which the report goes")
    gateways = []
    for item in args.gateways.split():
        code, url = item.split("=", 1)
        gateways.append(
            Gateway(code, url, args.gateway_dsn_template.format(db=code.replace("-", "_")))
        )
    ctx = Context(
        identity_url=args.identity,
        identity_dsn=args.identity_dsn,
        audit_dsn=args.audit_dsn,
        gateways=tuple(gateways),
        client_secret=client_secret(args.client_secret_file),
        topic_prefix=args.topic_prefix,
        bootstrap=args.bootstrap,
        issuer_key=Path(args.issuer_key),
        pseudonym_key=os.environ["IKD_PSEUDONYM_KEY"].encode(),
        quick=quick,
    )
    pids = cpu.service_pids(SERVICES)
    profiler = profile.Profiler(Path(args.out), pids)  # BENCH_PROFILE=0: off
    audited = [g for g in ctx.gateways if holds_without_consent(g.name)]
    started = time.monotonic()
    results: dict[str, Any] = {
        "generated_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "quick": quick,
        "plan": dataclasses.asdict(plan),
        "machine": machine.describe(),
        "conditions": {"load_average_before": args.load_before},
        "settings": {
            "topic_prefix": ctx.topic_prefix,
            "gateways": [g.code for g in ctx.gateways],
            "api_workers_per_gateway": args.api_workers,
            "identity_workers": args.identity_workers,
            "audited_view_writes_per_profile": len(audited),
        },
    }

    # new citizens only, also when the harness runs again on the same databases
    first = await count(ctx.identity_dsn, "SELECT count(*) FROM profiles")
    results["settings"]["first_citizen_index"] = first

    async def do_bulk() -> dict[str, Any]:
        n = plan.bulk_events
        # New citizens: every gateway reads them, none holds them (no relationship yet).
        await settle(ctx)
        new = await bulk.run_once(
            ctx, run=UNRELATED, n=n, audited_per_event=0, pids=pids, first=first
        )
        print(f"bench:   new citizens: {new['events_per_second']:.0f} events/s", flush=True)
        # The runs' citizens: fed, then registered at the agencies that take registrations.
        await bulk.run_once(ctx, run=RELATED, n=n, audited_per_event=0, pids=pids, first=first)
        print(f"bench:   registering {n} citizens at {', '.join(relate.REGISTRABLE)}", flush=True)
        related = await relate.relate(ctx, bulk.niks(RELATED, n, first))
        runs = []
        for run in range(plan.runs):
            await settle(ctx)
            one = await bulk.run_once(
                ctx,
                run=RELATED,
                n=n,
                audited_per_event=AUDITED_PER_RELATIONSHIP * len(relate.REGISTRABLE),
                pids=pids,
                first=first,
                revision=run + 1,
            )
            print(
                f"bench:   bulk run {run + 1}: {one['events_per_second']:.0f} events/s", flush=True
            )
            runs.append(one)
        await profiler.record(
            "bulk",
            lambda: bulk.run_once(
                ctx,
                run=RELATED,
                n=n,
                audited_per_event=AUDITED_PER_RELATIONSHIP * len(relate.REGISTRABLE),
                pids=pids,
                first=first,
                revision=plan.runs + 1,
            ),
            prepare=lambda: settle(ctx),
        )
        keys = ["events_per_second", "seconds", "identity_commit_per_second"]
        summary = summarize_runs(runs, keys)
        stages: dict[str, Any] = {}
        for name in runs[0]["stages"]:
            stages[name] = {
                key: spread(
                    float(r["stages"][name][key])
                    for r in runs
                    if r["stages"][name][key] is not None
                )
                for key in ("per_second_own_window", "done_after_s")
            }
        return {
            "runs": runs,
            "summary": summary,
            "stages": stages,
            "related_agencies": list(relate.REGISTRABLE),
            "relating": related,
            "new_citizens": new,
        }

    await section("bulk", results, do_bulk)

    async def do_ceiling() -> dict[str, Any]:
        size = await kafka_ceiling.sample_record_size(
            ctx.bootstrap, PROFILE.full_name(ctx.topic_prefix), partitions=PROFILE.partitions
        )
        topic = f"{ctx.topic_prefix}bench.ceiling"
        await kafka_ceiling.create_topic(ctx.bootstrap, topic, partitions=PROFILE.partitions)
        runs = []
        async with kafka_ceiling.bench_producer(ctx.bootstrap, topic) as config:
            for _ in range(plan.runs):
                await settle(ctx)
                before = cpu.snapshot(pids)
                began = time.time()
                one = await asyncio.to_thread(
                    kafka_ceiling.run_producer_performance,
                    ctx.bootstrap,
                    topic,
                    records=plan.ceiling_records,
                    record_size=size.total,
                    config=config,
                )
                took = time.time() - began
                row = dataclasses.asdict(one)
                row["cpu_percent_of_one_core"] = cpu.usage(before, cpu.snapshot(pids), took)
                print(f"bench:   ceiling: {one.records_per_second:.0f} records/s", flush=True)
                runs.append(row)
        return {
            "record_size": {**dataclasses.asdict(size), "total": size.total},
            "partitions": PROFILE.partitions,
            "security": (
                f"SASL_SSL, SCRAM-SHA-512 as {kafka_ceiling.PRINCIPAL}" if config else "none"
            ),
            "runs": runs,
            "summary": summarize_runs(runs, ["records_per_second", "mb_per_second", "p99_ms"]),
        }

    await section("ceiling", results, do_ceiling)

    niks = bulk.niks(RELATED, min(plan.bulk_events, 5000), first)

    async def do_prefill() -> dict[str, Any]:
        if not prefill.have_wrk():
            return {"failed": "wrk is not installed"}
        by_connections: dict[str, Any] = {}
        for connections in plan.prefill_connections:
            runs = []
            for _ in range(plan.runs):
                await settle(ctx)
                one = await prefill.run_once(
                    ctx,
                    agency="polres-cirebon",
                    service="skck",
                    niks=niks,
                    connections=connections,
                    seconds=plan.prefill_seconds,
                    pids=pids,
                )
                print(
                    f"bench:   prefill c={connections}: {one['requests_per_second']:.0f}/s "
                    f"p99 {one['p99_ms']:.1f} ms",
                    flush=True,
                )
                runs.append(one)
            by_connections[str(connections)] = {
                "runs": runs,
                "summary": summarize_runs(
                    runs,
                    [
                        "requests_per_second",
                        "p50_ms",
                        "p95_ms",
                        "p99_ms",
                        "audit_caught_up_after_run_s",
                    ],
                ),
            }
        await profiler.record(
            "prefill",
            lambda: prefill.run_once(
                ctx,
                agency="polres-cirebon",
                service="skck",
                niks=niks,
                connections=plan.prefill_connections[-1],
                seconds=plan.prefill_seconds,
                pids=pids,
            ),
            prepare=lambda: settle(ctx),
        )
        return {"agency": "polres-cirebon", "service": "skck", "by_connections": by_connections}

    await section("prefill", results, do_prefill)

    async def do_verify() -> dict[str, Any]:
        # new citizens only, also when the harness is run again on the same databases
        minter = verify.Minter(ctx, first_index=VERIFIED * bulk.RUN_STRIDE + first)
        by_rate: dict[str, Any] = {}
        for rate in plan.verify_rates:
            runs = []
            for _ in range(plan.runs):
                await settle(ctx)
                one = await verify.run_once(
                    ctx,
                    minter,
                    rate=rate,
                    seconds=plan.verify_seconds,
                    audited_agencies=frozenset(g.code for g in audited),
                    pids=pids,
                    waits_dsn=ctx.identity_dsn,
                )
                print(
                    f"bench:   verify {rate}/s: achieved {one['achieved_rate']:.0f}/s, "
                    f"p50 {one['p50_ms']:.0f} ms p99 {one['p99_ms']:.0f} ms",
                    flush=True,
                )
                runs.append(one)
            by_rate[str(rate)] = {
                "runs": runs,
                "summary": summarize_runs(runs, ["achieved_rate", "p50_ms", "p95_ms", "p99_ms"]),
            }
        await profiler.record(
            "verification",
            lambda: verify.run_once(
                ctx,
                minter,
                rate=plan.verify_rates[-1],
                seconds=plan.verify_seconds,
                audited_agencies=frozenset(g.code for g in audited),
                pids=pids,
                waits_dsn=ctx.identity_dsn,
            ),
            prepare=lambda: settle(ctx),
        )
        return {"by_rate": by_rate}

    await section("verification", results, do_verify)

    async def do_consent() -> dict[str, Any]:
        await settle(ctx)
        return await consent.run(
            ctx,
            citizens=bulk.citizens(RELATED, plan.consent_repetitions, first),
            repetitions=plan.consent_repetitions,
        )

    await section("consent", results, do_consent)

    fresh = bulk.citizens(
        FRESH, plan.relationship_repetitions + plan.fanout_repetitions * len(FANOUT_SIZES), first
    )

    async def feed_fresh() -> None:
        await settle(ctx)
        await bulk.run_once(
            ctx, run=FRESH, n=len(fresh), audited_per_event=0, pids=pids, first=first
        )

    async def do_relationship() -> dict[str, Any]:
        await feed_fresh()
        await settle(ctx)
        chosen = fresh[: plan.relationship_repetitions]
        return await relate.last_relationship_ends(ctx, [p.nik for p in chosen])

    await section("relationship", results, do_relationship)

    async def do_fanout() -> dict[str, Any]:
        if "relationship" not in results:  # run alone (BENCH_ONLY=fanout)
            await feed_fresh()
        await settle(ctx)
        return await relate.fanout(ctx, fresh[plan.relationship_repetitions :], sizes=FANOUT_SIZES)

    await section("fanout", results, do_fanout)

    async def do_backfill() -> dict[str, Any]:
        size = plan.backfill_citizens
        agency = ctx.gateway(backlog.AGENCY)
        # known to identity first (held by nobody), then registered per run while it is down
        await settle(ctx)
        await bulk.run_once(
            ctx, run=BACKFILL, n=size * plan.runs, audited_per_event=0, pids=pids, first=first
        )
        everyone = bulk.niks(BACKFILL, size * plan.runs, first)
        runs = []
        for run in range(plan.runs):
            await settle(ctx)
            one = await backfill.run_once(
                ctx,
                gateway=agency,
                service=relate.REGISTRABLE[agency.name],
                niks=everyone[run * size : (run + 1) * size],
                services=SERVICES,
                pids=pids,
            )
            print(
                f"bench:   backfill run {run + 1}: {one['citizens_per_second']:.0f} citizens/s, "
                f"all held {one['seen_complete_after_start_s']:.1f} s after the start",
                flush=True,
            )
            runs.append(one)
        extra = bulk.niks(BACKFILL, size, first + size * plan.runs)  # the profiled run's

        async def feed_extra() -> None:
            await settle(ctx)
            await bulk.run_once(
                ctx,
                run=BACKFILL,
                n=size,
                audited_per_event=0,
                pids=pids,
                first=first + size * plan.runs,
            )
            await settle(ctx)

        await profiler.record(
            "backfill",
            lambda: backfill.run_once(
                ctx,
                gateway=agency,
                service=relate.REGISTRABLE[agency.name],
                niks=extra,
                services=SERVICES,
                pids=pids,
            ),
            prepare=feed_extra,
        )
        keys = [
            "citizens_per_second",
            "citizens_per_second_write_window",
            "citizens_per_second_from_start",
            "first_write_after_start_s",
            "seen_complete_after_start_s",
            "registering_seconds",
        ]
        return {
            "agency": agency.name,
            "service": relate.REGISTRABLE[agency.name],
            "citizens": size,
            "runs": runs,
            "summary": summarize_runs(runs, keys),
        }

    await section("backfill", results, do_backfill)

    async def do_purge_backlog() -> dict[str, Any]:
        per_run = plan.purge_backlog_ended
        # per run: per_run registrations at dinsos to end, one consent at bank-bjb to revoke
        people = bulk.citizens(PURGED, (per_run + 1) * plan.runs, first)
        purged = [p.nik for p in people[: per_run * plan.runs]]
        consenting = people[per_run * plan.runs :]
        await settle(ctx)
        await bulk.run_once(
            ctx, run=PURGED, n=len(people), audited_per_event=0, pids=pids, first=first
        )
        ids = await backlog.prepare(ctx, purged)
        consents = await backlog.prepare_consents(ctx, consenting)
        runs = []
        for run in range(plan.runs):
            await settle(ctx)
            chosen = list(zip(purged, ids, strict=True))[run * per_run : (run + 1) * per_run]
            one = await backlog.run_once(
                ctx,
                run=BACKLOG,
                n=plan.bulk_events,
                first=first + run * plan.bulk_events,
                ended=chosen,
                revoked=[(consenting[run], consents[run])],
            )
            print(
                f"bench:   purge under a backlog of {one['backlog_at_end']}: median "
                f"{one['median_s'] * 1000:.0f} ms, max {one['max_s'] * 1000:.0f} ms; "
                f"consent revoked: {one['consent_max_s'] * 1000:.0f} ms",
                flush=True,
            )
            runs.append(one)
        return {
            "agency": backlog.AGENCY,
            "ended_per_run": per_run,
            "poll_ms": backlog.POLL * 1000,
            "runs": runs,
            "summary": summarize_runs(
                runs, ["median_s", "max_s", "consent_max_s", "backlog_at_end", "feed_seconds"]
            ),
        }

    await section("purge_backlog", results, do_purge_backlog)

    async def do_scaling() -> dict[str, Any]:
        # bulk runs refresh the bulk section's related citizens (BENCH_ONLY: needs bulk)
        n = min(plan.scaling_bulk_events, plan.bulk_events)
        revisions = iter(range(SCALING_REVISION, SCALING_REVISION + 1000))
        minter = verify.Minter(ctx, first_index=SCALED * bulk.RUN_STRIDE + first)
        polres = ctx.gateway("polres-cirebon")

        async def bulk_once() -> dict[str, Any]:
            await settle(ctx)
            return await bulk.run_once(
                ctx,
                run=RELATED,
                n=n,
                audited_per_event=AUDITED_PER_RELATIONSHIP * len(relate.REGISTRABLE),
                pids=pids,
                first=first,
                revision=next(revisions),
            )

        async def prefill_once() -> dict[str, Any]:
            await settle(ctx)
            return await prefill.run_once(
                ctx,
                agency=polres.name,
                service="skck",
                niks=niks,
                connections=plan.scaling_prefill_connections,
                seconds=plan.prefill_seconds,
                pids=pids,
            )

        async def verify_once() -> dict[str, Any]:
            await settle(ctx)
            return await verify.run_once(
                ctx,
                minter,
                rate=plan.scaling_verify_rate,
                seconds=plan.scaling_verify_seconds,
                audited_agencies=frozenset(g.code for g in audited),
                pids=pids,
                waits_dsn=ctx.identity_dsn,
            )

        out: dict[str, Any] = {
            "settings": {
                "bulk_events": n,
                "prefill_connections": plan.scaling_prefill_connections,
                "verify_rate": plan.scaling_verify_rate,
                "verify_seconds": plan.scaling_verify_seconds,
            }
        }
        out["bulk_workers"] = await scaling.attempt(
            scaling.measure(
                scaling.PROCESS_COUNTS,
                lambda k: scaling.workers(ctx, SERVICES, k, pids),
                bulk_once,
                runs=plan.runs,
                keys=["events_per_second"],
                label="bulk, workers per agency",
            )
        )
        if prefill.have_wrk():
            out["prefill_api"] = await scaling.attempt(
                scaling.measure(
                    scaling.PROCESS_COUNTS,
                    lambda k: scaling.restarted(
                        SERVICES,
                        f"gateway-{polres.code}",
                        {"IKD_GATEWAY_API_WORKERS": str(k)},
                        f"{polres.url}/readyz",
                        pids,
                    ),
                    prefill_once,
                    runs=plan.runs,
                    keys=["requests_per_second", "p99_ms"],
                    label="prefill, API processes",
                )
            )
        out["verify_identity"] = await scaling.attempt(
            scaling.measure(
                scaling.PROCESS_COUNTS,
                lambda k: scaling.restarted(
                    SERVICES,
                    "identity",
                    {"IKD_IDENTITY_API_WORKERS": str(k)},
                    f"{ctx.identity_url}/healthz",
                    pids,
                ),
                verify_once,
                runs=plan.runs,
                keys=["achieved_rate", "p99_ms"],
                label="verification, identity processes",
            )
        )
        return out

    await section("scaling", results, do_scaling)

    async def do_audit() -> dict[str, Any]:
        # Last: its synthetic entries stay in the bench's log, after everything else measured.
        runs = []
        for _ in range(plan.runs):
            await settle(ctx)
            batch = await asyncio.to_thread(audit_append.records, plan.audit_entries)
            one = {
                "cpu": await asyncio.to_thread(audit_append.cpu_rate, batch[:10_000]),
                **await audit_append.append_rate(ctx.audit_dsn, batch),
            }
            one["cpu_per_second"] = one["cpu"]["per_cpu_second"]
            print(
                f"bench:   audit append: {one['per_second']:.0f} entries/s, "
                f"{one['cpu_per_second']:.0f} per CPU second",
                flush=True,
            )
            runs.append(one)

        again: list[Any] = []  # the profiled run's entries, made before sampling starts

        async def make_batch() -> None:
            await settle(ctx)
            again.extend(await asyncio.to_thread(audit_append.records, plan.audit_entries))

        async def append_again() -> None:
            await asyncio.to_thread(audit_append.cpu_rate, again[:10_000])
            await audit_append.append_rate(ctx.audit_dsn, again)

        await profiler.record("audit", append_again, prepare=make_batch)
        return {
            "batch": audit_append.BATCH,
            "runs": runs,
            "summary": summarize_runs(runs, ["per_second", "cpu_per_second"]),
        }

    await section("audit", results, do_audit)

    results["conditions"]["load_average_after"] = machine.load_average()
    if profiler.results:
        results["profiles"] = profiler.results
    results["measure_seconds"] = time.monotonic() - started
    results["setup_seconds"] = args.setup_seconds
    await asyncio.to_thread(write, Path(args.out), results)


def write(out: Path, results: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "benchmarks.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    page = out / "BENCHMARKS.md"
    existing = page.read_text() if page.exists() else None
    page.write_text(report.splice(existing, report.markdown(results)))
    print(f"bench: wrote {out / 'BENCHMARKS.md'} and {out / 'benchmarks.json'}")


def client_secret(path: Path | None) -> str:
    secret = path.read_text().strip() if path else os.environ.get("IKD_DEMO_CLIENT_SECRET", "")
    if not secret:
        raise SystemExit("bench: give --client-secret-file or set IKD_DEMO_CLIENT_SECRET")
    return secret


def parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--identity", required=True)
    parser.add_argument("--identity-dsn", required=True)
    parser.add_argument("--audit-dsn", required=True)
    parser.add_argument("--gateway-dsn-template", required=True)
    parser.add_argument("--gateways", required=True, help="code=url ...")
    parser.add_argument(
        "--client-secret-file",
        type=Path,
        help="the clients' secret (default: IKD_DEMO_CLIENT_SECRET; never on the command line)",
    )
    parser.add_argument("--topic-prefix", required=True)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--issuer-key", required=True)
    parser.add_argument("--load-before", type=float, default=float("nan"))
    parser.add_argument("--api-workers", type=int, default=1)
    parser.add_argument("--identity-workers", type=int, default=1)
    parser.add_argument("--setup-seconds", type=float, default=float("nan"))
    parser.add_argument("--out", default="docs")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse()))
