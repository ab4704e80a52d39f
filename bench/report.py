"""docs/BENCHMARKS.md from the figures of one `make bench` run (docs/benchmarks.json)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from typing import Any

from bench import profile, scaling_report

TARGETS = {
    "bulk": 10_000.0,  # profile events/s end to end
    "verify_rate": 1000,  # verifications/s ...
    "verify_p99_ms": 100.0,  # ... with p99 commit -> 3 views + audited
    "prefill_rps": 5000.0,
    "prefill_p99_ms": 25.0,
    "purge_s": 5.0,
    "audit_append": 50_000.0,  # entries/s alone
    "backfill": 10_000.0,  # citizens/s into a newly onboarded agency's view
}

# docs/BENCHMARKS.md: `make bench` rewrites only what lies between these two lines; the
# sections written by hand around them (e.g. the whole-MPP run) stay.
BEGIN = "<!-- make bench writes from here: edits up to the END line are overwritten -->"
END = "<!-- make bench END: what follows is written by hand and kept -->"


def has_markers(text: str) -> bool:
    return text.count(BEGIN) == 1 and text.count(END) == 1 and text.index(BEGIN) < text.index(END)


def splice(existing: str | None, generated: str) -> str:
    """`generated` between the markers of `existing` (None: a new file of the markers alone);
    everything outside them stays as it is. ValueError if `existing` lacks the markers."""
    block = f"{BEGIN}\n{generated.rstrip()}\n{END}"
    if existing is None:
        return block + "\n"
    if not has_markers(existing):
        raise ValueError(f"no single pair of markers {BEGIN!r} ... {END!r}")
    head, rest = existing.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    return head + block + tail


def num(value: Any, digits: int = 0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}"


def med(summary: dict[str, Any], key: str, digits: int = 0, spread: bool = True) -> str:
    """'median (min–max)' of one figure's spread over runs."""
    figure = summary.get(key) or {}
    if not figure.get("runs"):
        return "–"
    text = num(figure["median"], digits)
    if spread and figure["runs"] > 1:
        text += f" ({num(figure['min'], digits)}–{num(figure['max'], digits)})"
    return text


def median_of(values: Iterable[float]) -> float:
    present = [v for v in values if v is not None and not math.isnan(v)]
    return statistics.median(present) if present else math.nan


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return [*lines, ""]


def cpu_rows(runs: Sequence[dict[str, Any]], top: int = 9) -> list[list[str]]:
    """Median share of one core per component over the runs, largest first."""
    names: dict[str, list[float]] = {}
    for run in runs:
        for name, share in (run.get("cpu_percent_of_one_core") or {}).items():
            names.setdefault(name, []).append(share)
    medians = {name: median_of(values) for name, values in names.items()}
    ordered = sorted(medians.items(), key=lambda item: -item[1])
    return [[name, f"{share:.0f} %"] for name, share in ordered[:top] if share >= 1]


def waits_text(runs: Sequence[dict[str, Any]]) -> str:
    """Database sessions by state, averaged, from the run in the middle."""
    if not runs:
        return ""
    waits = (runs[len(runs) // 2].get("database_waits") or {}).get("average_sessions") or {}
    parts = []
    for database, states in waits.items():
        inner = ", ".join(f"{state} {avg:.2f}" for state, avg in states.items())
        parts.append(f"{database}: {inner}")
    return "; ".join(parts) if parts else "no session busy in ≥ 5 % of the samples"


def failed(section: dict[str, Any] | None) -> str | None:
    if section is None:
        return "not run"
    return section.get("failed")


def verdict(met: bool | None) -> str:
    return "–" if met is None else ("**met**" if met else "**not met**")


AUDITED_PER_RELATED = 2
"""Audit entries of one stored update at one agency (bench/run.py AUDITED_PER_RELATIONSHIP)."""


def markdown(results: dict[str, Any]) -> str:
    machine = results["machine"]
    plan = results["plan"]
    out: list[str] = ["# Benchmarks", ""]
    out.append(
        f"Written by `make bench` ({'QUICK run, ' if results['quick'] else ''}"
        f"{results['generated_at']}); the figures are in "
        "[benchmarks.json](benchmarks.json). The harness is [bench/](../bench/README.md); "
        "[deploy/scripts/bench.sh](../deploy/scripts/bench.sh) starts the services."
    )
    out.append("")
    total = (results.get("setup_seconds") or 0) + (results.get("measure_seconds") or 0)
    cond = results.get("conditions", {})
    out.append(
        f"`make bench` took {total / 60:.1f} min (setup {num(results.get('setup_seconds'))} s, "
        f"measurements {num(results.get('measure_seconds'))} s, plus a few seconds to stop and "
        f"clean up). Load average before the run: {num(cond.get('load_average_before'), 2)}, "
        f"after: {num(cond.get('load_average_after'), 2)}."
    )
    out.append("")

    bulk = results.get("bulk")
    ceiling = results.get("ceiling")
    verification = results.get("verification")
    prefill = results.get("prefill")
    consent = results.get("consent")
    relationship = results.get("relationship")
    fanout = results.get("fanout")

    # -- summary against the targets ------------------------------------------------------
    out += ["## Against the targets of the design brief", ""]
    rows = []
    ceiling_rate = None
    if ceiling and not failed(ceiling):
        ceiling_rate = ceiling["summary"]["records_per_second"]["median"]
    if bulk and not failed(bulk):
        rate = bulk["summary"]["events_per_second"]["median"]
        slowest = min(
            (s for s in bulk["stages"].items() if s[0] != "identity outbox"),
            key=lambda item: item[1]["per_second_own_window"]["median"],
        )
        ratio = f"; {100 * rate / ceiling_rate:.2f} % of Kafka's ceiling" if ceiling_rate else ""
        rows.append(
            [
                "Bulk feed: 10,000 profile events/s end to end (outbox → Kafka → 3 gateways, "
                "2 related views → audit)",
                f"{num(rate)} events/s{ratio}",
                verdict(rate >= TARGETS["bulk"]),
                f"the slowest stage is the {slowest[0]} "
                f"({num(slowest[1]['per_second_own_window']['median'])}/s): one faust worker "
                "process per agency, applying batches of up to 500 records per transaction "
                "on its share of two cores",
            ]
        )
    else:
        rows.append(["Bulk feed 10,000 events/s", failed(bulk) or "–", "–", ""])
    if verification and not failed(verification):
        by_rate = verification["by_rate"]
        top = str(max(int(r) for r in by_rate))
        s = by_rate[top]["summary"]
        achieved = s["achieved_rate"]["median"]
        p99 = s["p99_ms"]["median"]
        met = achieved >= 0.95 * int(top) and p99 <= TARGETS["verify_p99_ms"]
        rows.append(
            [
                "Verification visible and audited in 3 views: p99 ≤ 100 ms at 1,000/s",
                f"offered {top}/s, identity answered {num(achieved)}/s; "
                f"p99 {num(p99)} ms for those it answered",
                verdict(met),
                "identity's share of two cores, with the whole platform and the load generator "
                "on them (see section 3 and what limits the numbers)",
            ]
        )
    else:
        rows.append(["Verification p99 ≤ 100 ms at 1,000/s", failed(verification) or "–", "–", ""])
    if prefill and not failed(prefill):
        levels = prefill["by_connections"]
        best = max(levels.values(), key=lambda v: v["summary"]["requests_per_second"]["median"])
        rps = best["summary"]["requests_per_second"]["median"]
        p99 = best["summary"]["p99_ms"]["median"]
        low = levels[min(levels, key=int)]["summary"]["p99_ms"]["median"]
        rows.append(
            [
                "Prefill ≥ 5,000 requests/s with auth, policy and audit, p99 ≤ 25 ms",
                f"{num(rps)} requests/s (p99 {num(p99, 1)} ms); "
                f"p99 {num(low, 1)} ms at {min(levels, key=int)} connections",
                verdict(rps >= TARGETS["prefill_rps"] and p99 <= TARGETS["prefill_p99_ms"]),
                "about 3 ms of CPU per request (API ~2 ms: FastAPI routing and dependencies, "
                "asyncpg; PostgreSQL ~1 ms), so two cores give some 600/s; every answer waits "
                "for the group commit of its access event",
            ]
        )
    else:
        rows.append(["Prefill ≥ 5,000/s, p99 ≤ 25 ms", failed(prefill) or "–", "–", ""])
    if consent and not failed(consent):
        worst = consent["revoke_to_purged"]["max_ms"] / 1000
        rows.append(
            [
                "Consent revocation purged from every view within 5 s",
                f"median {num(consent['revoke_to_purged']['p50_ms'])} ms, "
                f"max {num(consent['revoke_to_purged']['max_ms'])} ms "
                f"({consent['repetitions']} revocations)",
                verdict(worst <= TARGETS["purge_s"]),
                "one consent event through the relay, Kafka and the bank's worker",
            ]
        )
    else:
        rows.append(["Consent purge within 5 s", failed(consent) or "–", "–", ""])
    if relationship and not failed(relationship):
        ended = relationship["end_to_purged"]
        rows.append(
            [
                "Last relationship ended: the citizen purged from the view within 5 s",
                f"median {num(ended['p50_ms'])} ms, max {num(ended['max_ms'])} ms "
                f"({relationship['repetitions']} registrations ended)",
                verdict(ended["max_ms"] / 1000 <= TARGETS["purge_s"]),
                "one relationship event through identity's outbox, Kafka and the worker",
            ]
        )
    else:
        rows.append(
            ["Last relationship ended, purge within 5 s", failed(relationship) or "–", "–", ""]
        )
    audit = results.get("audit")
    if audit and not failed(audit):
        rate = audit["summary"]["per_second"]["median"]
        per_cpu = audit["summary"]["cpu_per_second"]["median"]
        rows.append(
            [
                "Audit append with Merkle hashing ≥ 50,000 entries/s alone",
                f"{num(rate)} entries/s into the log ({audit['batch']} per transaction); "
                f"decoding, leaf and tree cost {num(per_cpu)} entries per CPU second",
                verdict(rate >= TARGETS["audit_append"]),
                "PostgreSQL: append_log() inserts each entry into the log's six indexes and a "
                "tree node (~40 µs of the backend's CPU per entry), more than the appender's "
                "~33 µs of decoding, leaf and tree",
            ]
        )
    else:
        rows.append(["Audit append ≥ 50,000/s alone", failed(audit) or "–", "–", ""])
    rows.append(backfill_row(results.get("backfill")))
    rows.append(purge_backlog_row(results.get("purge_backlog")))
    rows.append(
        [
            "The whole sample MPP (37 agencies) on this machine",
            "not part of `make bench`",
            "–",
            "",
        ]
    )
    out += table(["Target", "Measured (median of runs)", "", "What limits it"], rows)

    # -- machine and settings ---------------------------------------------------------------
    out += ["## Machine and versions", ""]
    out += table(
        ["", ""],
        [
            ["CPU", f"{machine['cpu_model']}, {machine['cores']} cores"],
            ["RAM", f"{machine['ram_gib']} GiB"],
            ["OS", machine["os"]],
            ["Python", machine["python"]],
            ["Java", machine["java"]],
            ["Kafka", f"{machine['kafka']} (KRaft, one broker, replication factor 1)"],
            ["PostgreSQL", f"{machine['postgresql']} (synchronous_commit on, fsync on)"],
            ["Load generator", machine.get("wrk", "")],
        ],
    )
    out += ["## Settings", ""]
    out += [
        "- The services run as `make up` runs them, one process each (identity with its "
        "outbox relay; audit with its consumer; each gateway's `serve` = a faust worker and an "
        "API process), with development settings, but as a separate copy: fresh databases, a "
        f"fresh topic prefix (`{results['settings']['topic_prefix']}`, 6 partitions per topic), "
        "their own ports, and the three demo gateways under the codes "
        + ", ".join(f"`{g}`" for g in results["settings"]["gateways"])
        + " (a copy of the MPP policy that differs in these codes, as a gateway's consumer "
        "group is derived from its code and must not join a running demo's group, and in "
        "letting polres-cirebon's skck take registrations, as dinsos-cirebon's "
        "social-assistance does, to relate the bench's citizens to two agencies). "
        "Numbers do not depend on demo data; a running demo is left alone.",
        f"- API processes per gateway: {results['settings'].get('api_workers_per_gateway', 1)} "
        "(`BENCH_API_WORKERS`, uvicorn workers on the gateway's one port); identity API "
        f"processes: {results['settings'].get('identity_workers', 1)} "
        "(`BENCH_IDENTITY_WORKERS`, one active outbox relay among them).",
        f"- Each measurement is repeated {plan['runs']} times (`BENCH_RUNS`); tables give the "
        "median and, in "
        "brackets, the lowest and highest run. Between runs the bench waits until nothing "
        "moves (outboxes empty, views and audit log still for a second).",
        "- CPU shares are per cent of one core (200 % = both cores busy), from /proc, for the "
        'whole measurement; "other processes" is what the machine spent outside the '
        "platform and the bench (other work on the machine).",
        "- Database waits: non-idle sessions of the bench databases sampled from "
        "pg_stat_activity every 100 ms, as the average number of sessions in each state "
        '("idle in transaction" = a transaction waiting for its application process).',
        "",
    ]

    # -- 1. ceiling ---------------------------------------------------------------------------
    out += ["## 1. Kafka's producer benchmark (the ceiling)", ""]
    if failed(ceiling):
        out += [f"Failed: {failed(ceiling)}", ""]
    else:
        assert ceiling is not None
        size = ceiling["record_size"]
        out += [
            "`org.apache.kafka.tools.ProducerPerformance` against the same broker, into a topic "
            f"with {ceiling['partitions']} partitions, {num(plan['ceiling_records'])} records "
            f"per run of **{size['total']} bytes**: the mean size of the ProfileVerified "
            f"CloudEvents the bulk feed put on the profile topic ({num(size['records'])} sampled: "
            f"value {num(size['value_bytes'])} B + key {num(size['key_bytes'])} B + ce_* headers "
            f"{num(size['header_bytes'])} B; ProducerPerformance sends values only). Producer "
            "settings as the outbox relay's: acks=all, idempotence, linger.ms=5, "
            "batch.size=262144, no compression. Connection as the services': "
            f"{ceiling.get('security', 'none')} (TLS and SASL included in the figure).",
            "",
        ]
        s = ceiling["summary"]
        out += table(
            ["records/s", "MB/s", "p99 send latency (ms)"],
            [
                [
                    med(s, "records_per_second"),
                    med(s, "mb_per_second", 1),
                    med(s, "p99_ms"),
                ]
            ],
        )

    # -- 2. bulk -------------------------------------------------------------------------------
    out += ["## 2. Bulk profile feed", ""]
    if failed(bulk):
        out += [f"Failed: {failed(bulk)}", ""]
    else:
        assert bulk is not None
        runs = bulk["runs"]
        s = bulk["summary"]
        rate = s["events_per_second"]["median"]
        related = bulk.get("related_agencies", [])
        out += [
            f"An agency holds only the citizens it has a relationship with, so the bulk runs "
            f"refresh {num(plan['bulk_events'])} synthetic citizens registered at "
            f"{' and '.join(related)} (through their gateways, before the runs): Dukcapil's "
            "bulk endpoint (`POST /v1/feed/profiles`, 1,000 profiles per request and "
            "transaction, 2 requests in flight) changes each one's occupation → outbox → relay "
            "→ Kafka → the three gateways → the two related views → access events → audit log "
            f"({AUDITED_PER_RELATED} audit entries per profile at each related agency: the view "
            "write and its agency-topic record). bank-bjb has no relationship with them: its "
            "gateway reads every record and stores nothing. Timed from the first request until "
            "every gateway applied every record and the audit log holds every entry (database "
            "timestamps).",
            "",
        ]
        ratio = f"{100 * rate / ceiling_rate:.2f} %" if ceiling_rate else "–"
        out += table(
            ["events", "seconds", "events/s end to end", "of Kafka's ceiling"],
            [
                [
                    num(plan["bulk_events"]),
                    med(s, "seconds", 1),
                    med(s, "events_per_second"),
                    ratio,
                ]
            ],
        )
        out += [
            "Stages (rate over each stage's own first-to-last write; done = seconds after the "
            "first request):",
            "",
        ]
        stage_rows = []
        for name, stage in bulk["stages"].items():
            unit = "entries/s" if name == "audit log" else "events/s"
            stage_rows.append(
                [
                    name,
                    f"{med(stage, 'per_second_own_window')} {unit}",
                    med(stage, "done_after_s", 1),
                ]
            )
        out += table(["stage", "rate", "done after (s)"], stage_rows)
        out += [
            f"Identity commits the feed at {med(s, 'identity_commit_per_second')} profiles/s "
            "(client-side, all requests answered).",
            "",
        ]
        new = bulk.get("new_citizens")
        relating = bulk.get("relating")
        if new:
            out += [
                f"For comparison, {num(new['events'])} **new** citizens (no relationship with "
                f"any agency: every gateway reads them and stores nothing, nothing is audited) "
                f"took {num(new['seconds'], 1)} s end to end, {num(new['events_per_second'])} "
                "events/s (one run). Before relationships every gateway stored every bulk-fed "
                "citizen (bank-bjb a row without fields).",
                "",
            ]
        if relating:
            rates = ", ".join(
                f"{name} {num(rate)}/s"
                for name, rate in relating["registrations_per_second"].items()
            )
            out += [
                f"Registering the runs' {num(relating['citizens'])} citizens through the gateways "
                f"(16 requests in flight, each gateway → identity → outbox) before the runs: "
                f"{rates}.",
                "",
            ]
        out += ["CPU during the runs (median share of one core):", ""]
        out += table(["component", "CPU"], cpu_rows(runs))
        out += [f"Database sessions: {waits_text(runs)}.", ""]

    # -- 3. verification -----------------------------------------------------------------------
    out += ["## 3. Verification path at a fixed rate", ""]
    if failed(verification):
        out += [f"Failed: {failed(verification)}", ""]
    else:
        assert verification is not None
        out += [
            f"New citizens' IKD credentials (minted beforehand, EdDSA, development issuer) "
            f"sent to `POST /v1/verifications` by an open-loop Python generator (aiohttp) for "
            f"{num(plan['verify_seconds'])} s per run; at most 128 requests outstanding, a "
            "request due while 128 wait is not sent (shed). Nothing watches the platform "
            "during a run: afterwards, for every answered citizen, the bench reads the "
            "timestamps the platform wrote anyway. Latency counts from identity's commit (the "
            "outbox row's transaction time) until the citizen's row is in every bench "
            f"gateway's view ({len(results['settings']['gateways'])}) "
            "(each row's write time) and the audit log has recorded the view access events "
            "of every gateway that holds fields without a consent (recorded_at). These are "
            "transaction times, a few ms before each commit; an audit entry exists only after "
            "its view's commit, so the last column bounds the latency from above.",
            "",
        ]
        rows = []
        for rate, entry in verification["by_rate"].items():
            s = entry["summary"]
            first = entry["runs"][len(entry["runs"]) // 2]
            rows.append(
                [
                    f"{rate}/s",
                    med(s, "achieved_rate"),
                    num(median_of(r["shed"] for r in entry["runs"])),
                    num(first["request"]["p50_ms"]),
                    num(median_of(r["commit_to_response"]["p50_ms"] for r in entry["runs"])),
                    num(median_of(r["commit_to_views"]["p99_ms"] for r in entry["runs"])),
                    med(s, "p50_ms"),
                    med(s, "p95_ms"),
                    med(s, "p99_ms"),
                ]
            )
        out += table(
            [
                "offered",
                "answered/s",
                "shed",
                "request p50 (ms)",
                "commit → response p50",
                "→ all views p99",
                "→ views + audited p50",
                "p95",
                "p99 (ms)",
            ],
            rows,
        )
        top = str(max(int(r) for r in verification["by_rate"]))
        top_runs = verification["by_rate"][top]["runs"]
        out += [f"CPU at {top}/s offered (median share of one core):", ""]
        out += table(["component", "CPU"], cpu_rows(top_runs))
        out += [f"Database sessions at {top}/s: {waits_text(top_runs)}.", ""]

    # -- 4. prefill ----------------------------------------------------------------------------
    out += ["## 4. Prefill", ""]
    if failed(prefill):
        out += [f"Failed: {failed(prefill)}", ""]
    else:
        assert prefill is not None
        out += [
            f"`wrk` (one thread, keep-alive) for {plan['prefill_seconds']} s per run against "
            f"the {prefill['agency']} gateway, `POST /v1/prefill/{prefill['service']}/lookup` "
            "(the NIK in the JSON body) cycling through 5,000 citizens of the first bulk run, "
            "with the agency backend's bearer token (EdDSA JWT verified per request), the "
            "policy deciding the fields, and "
            "an access event written in the same transaction as the read. wrk, in C, needs a "
            "fraction of a core; a Python generator would take a core from the gateway on this "
            "2-core machine. After each run the bench waits until the audit log holds an entry "
            "per answered request.",
            "",
        ]
        rows = []
        for connections, entry in prefill["by_connections"].items():
            s = entry["summary"]
            rows.append(
                [
                    connections,
                    med(s, "requests_per_second"),
                    med(s, "p50_ms", 1),
                    med(s, "p95_ms", 1),
                    med(s, "p99_ms", 1),
                    num(sum(r["non_2xx_or_errors"] for r in entry["runs"])),
                    med(s, "audit_caught_up_after_run_s", 1, spread=False),
                ]
            )
        out += table(
            [
                "connections",
                "requests/s",
                "p50 (ms)",
                "p95 (ms)",
                "p99 (ms)",
                "errors",
                "audit caught up (s after)",
            ],
            rows,
        )
        last = prefill["by_connections"][max(prefill["by_connections"], key=int)]["runs"]
        out += ["CPU at the most connections (median share of one core):", ""]
        out += table(["component", "CPU"], cpu_rows(last))
        out += [f"Database sessions: {waits_text(last)}.", ""]

    # -- 5. consent ----------------------------------------------------------------------------
    out += ["## 5. Consent revocation → purge", ""]
    if failed(consent):
        out += [f"Failed: {failed(consent)}", ""]
    else:
        assert consent is not None
        out += [
            "An MPP officer grants a citizen a consent for one of bank-bjb's consent-based "
            "services (alternating), the bench waits until bank-bjb's view holds the fields, "
            "the officer revokes it, and the bench polls the view row every 2 ms from the "
            "revocation's HTTP response until none of the fields is left. polres-cirebon and "
            "dinsos-cirebon hold no consent-based field (legal obligation, public task): a "
            "revocation leaves nothing to purge there; their rows kept their data: "
            f"{'yes' if consent['other_views_kept_their_data'] else 'NO'}.",
            "",
        ]
        rows = []
        for service, figures in consent["per_service"].items():
            rows.append(
                [
                    f"bank-bjb view, {service}",
                    num(figures["count"]),
                    num(figures["p50_ms"]),
                    num(figures["p95_ms"]),
                    num(figures["max_ms"]),
                ]
            )
        whole = consent["revoke_to_purged"]
        rows.append(
            [
                "all revocations",
                num(whole["count"]),
                num(whole["p50_ms"]),
                num(whole["p95_ms"]),
                num(whole["max_ms"]),
            ]
        )
        grant = consent["grant_to_view"]
        rows.append(
            [
                "(grant → fields in the view)",
                num(grant["count"]),
                num(grant["p50_ms"]),
                num(grant["p95_ms"]),
                num(grant["max_ms"]),
            ]
        )
        out += table(["view / service", "n", "median (ms)", "p95 (ms)", "max (ms)"], rows)

    # -- 6. last relationship ---------------------------------------------------------------
    out += ["## 6. Last relationship ends → purge", ""]
    if failed(relationship):
        out += [f"Failed: {failed(relationship)}", ""]
    elif relationship is None:
        out += ["Not measured in this run.", ""]
    else:
        out += [
            "dinsos-cirebon's backend registers a citizen (through its gateway; the "
            "citizen's only relationship with dinsos), the bench waits until dinsos's view "
            "holds the fields, the backend ends the registration, and the bench polls the view "
            "row every 2 ms from the end request's HTTP response until the row is gone (as the "
            "consent purge is timed). The path: gateway → identity (the relationship ends, its "
            "record in the outbox) → relay → Kafka → dinsos's worker, which deletes the row, "
            "cancels pending webhooks and queues the agency topic's tombstone.",
            "",
        ]
        rows = []
        for label, key in (
            ("end → row purged", "end_to_purged"),
            ("(registration → fields in the view)", "register_to_view"),
        ):
            figures = relationship[key]
            rows.append(
                [
                    label,
                    num(figures["count"]),
                    num(figures["p50_ms"]),
                    num(figures["p95_ms"]),
                    num(figures["max_ms"]),
                ]
            )
        out += table(["", "n", "median (ms)", "p95 (ms)", "max (ms)"], rows)

    # -- 7. fan-out ------------------------------------------------------------------------
    out += ["## 7. Fan-out of an update to the related agencies", ""]
    if failed(fanout):
        out += [f"Failed: {failed(fanout)}", ""]
    elif fanout is None:
        out += ["Not measured in this run.", ""]
    else:
        out += [
            "A citizen related to N of the bench's agencies (registered at polres-cirebon, "
            "then dinsos-cirebon; a consent at bank-bjb as the third) gets an address change "
            "from Dukcapil's update feed (`POST /v1/feed/updates`); the bench polls every "
            "related view (2 ms, one connection each) from the update's HTTP response until "
            "each holds the new street. One record on the profile topic reaches every gateway; "
            "each related one stores it, audits it and publishes it on its agency topic, in "
            "parallel worker processes.",
            "",
        ]
        rows = []
        for size, entry in fanout["per_size"].items():
            whole = entry["update_to_all_views"]
            slowest = max(entry["per_view"].items(), key=lambda item: item[1]["p50_ms"])
            rows.append(
                [
                    size,
                    ", ".join(entry["agencies"]),
                    num(whole["count"]),
                    num(whole["p50_ms"]),
                    num(whole["p95_ms"]),
                    num(whole["max_ms"]),
                    f"{slowest[0]} ({num(slowest[1]['p50_ms'])} ms)",
                ]
            )
        out += table(
            [
                "N",
                "related agencies",
                "n",
                "all N views: median (ms)",
                "p95 (ms)",
                "max (ms)",
                "slowest view (median)",
            ],
            rows,
        )

    out += backfill_section(results.get("backfill"))
    out += purge_backlog_section(results.get("purge_backlog"))
    out += scaling_report.section(results.get("scaling"))

    audit = results.get("audit")
    out += ["## Audit append alone", ""]
    if failed(audit):
        out += [f"Failed: {failed(audit)}", ""]
    else:
        assert audit is not None
        out += [
            f"{num(plan['audit_entries'])} synthetic access events per run, as the gateways "
            "put them on the access topic, decoded and appended by `AuditLog.record` into the "
            f"bench's audit database in transactions of {audit['batch']}, one after the other "
            "(as the audit consumer does, without Kafka), in the bench process "
            "([bench/audit_append.py](../bench/audit_append.py)). The CPU figure is the "
            "per-entry Python work alone (decode, leaf, hash, tree), per CPU second of that "
            "process, which other work on the machine disturbs least.",
            "",
        ]
        rows = []
        for run in audit["runs"]:
            rows.append(
                [
                    num(run["entries"]),
                    num(run["seconds"], 2),
                    num(run["per_second"]),
                    f"{run['appender_cpu_percent']:.0f} %",
                    num(run["cpu"]["decode_per_cpu_second"]),
                    num(run["cpu"]["leaf_and_tree_per_cpu_second"]),
                    num(run["cpu"]["microseconds_per_entry"], 1),
                ]
            )
        out += table(
            [
                "entries",
                "seconds",
                "entries/s",
                "appender CPU",
                "decode per CPU s",
                "leaf + tree per CPU s",
                "µs CPU per entry",
            ],
            rows,
        )

    out += profile.report_section(results.get("profiles"))
    out += limits(results)
    return "\n".join(out).rstrip() + "\n"


def limits(results: dict[str, Any]) -> list[str]:
    """The analysis: what limits each figure, with the run's own evidence."""
    out = ["## What limits the numbers", ""]
    busy = []
    other = []
    for name in ("bulk", "verification", "prefill"):
        section = results.get(name)
        if not section or failed(section):
            continue
        runs: list[dict[str, Any]] = []
        if name == "bulk":
            runs = section["runs"]
        elif name == "verification":
            runs = [r for e in section["by_rate"].values() for r in e["runs"]]
        else:
            runs = [r for e in section["by_connections"].values() for r in e["runs"]]
        for run in runs:
            shares = run.get("cpu_percent_of_one_core") or {}
            if "machine busy (all)" in shares:
                busy.append(shares["machine busy (all)"])
                other.append(shares.get("other processes", 0.0))
    if busy:
        out += [
            f"- **The CPU.** During the measurements the machine was {median_of(busy):.0f} % "
            f"busy (median; 200 % = both cores), of which {median_of(other):.0f} % went to "
            "processes outside the platform and the bench. Kafka, PostgreSQL, identity, audit, "
            "three gateway workers, three gateway APIs and the load generator share two "
            "cores; every service is one single-threaded Python process, so none can use more "
            "than one core and each gets roughly an equal share when all are busy.",
        ]
    bulk = results.get("bulk")
    if bulk and not failed(bulk):
        gateway_cpu = [
            share
            for run in bulk["runs"]
            for name, share in (run.get("cpu_percent_of_one_core") or {}).items()
            if name.endswith(" worker")
        ]
        out += [
            "- **Bulk feed: the gateway workers.** Identity commits 1,000 profiles per "
            "transaction and the relay publishes them in batches, so both finish within "
            "seconds, and Kafka's ceiling is far above. Each gateway worker takes up to 500 "
            "records (or 50 ms) from its topic and applies them in one transaction (citizens "
            "locked in key order, idempotency rows at once, one write per citizen); what "
            "remains is per-record Python work in one process per agency (faust's record "
            "handling, CloudEvent decoding and pydantic validation, the policy projection) on "
            f"a CPU share of a median {median_of(gateway_cpu):.0f} % of a core each, while "
            "three workers, PostgreSQL, Kafka and audit share two cores. The audit consumer "
            "keeps up (it appends in batches). What would lift it further: more worker "
            "processes per agency (six partitions allow six), cheaper decoding, more cores.",
        ]
    verification = results.get("verification")
    if verification and not failed(verification):
        by_rate = verification["by_rate"]
        best = max(median_of(r["achieved_rate"] for r in e["runs"]) for e in by_rate.values())
        identity_cpu = [
            (run.get("cpu_percent_of_one_core") or {}).get("identity", math.nan)
            for e in by_rate.values()
            for run in e["runs"]
        ]
        out += [
            f"- **Verification: identity's throughput.** Identity answered at most "
            f"{best:.0f} verifications/s in this run (the best median over the offered "
            f"rates); beyond that, requests queue in its single process and the generator "
            f"sheds them. Each verification checks an EdDSA signature and validates the "
            f"profile before its transaction; concurrent verifications then share one "
            f"transaction (group commit, set-based statements), and the in-process relay is "
            f"woken after the commit. Identity used a median {median_of(identity_cpu):.0f} % "
            "of a core: its share of a machine that the load generator, three workers, audit, "
            "Kafka and PostgreSQL keep busy (the bench reads the latencies after each run "
            "instead of polling four databases during it). "
            "Commit-to-visible latency at low rates is the relay's wake-up, Kafka, three "
            "workers and the access relay + audit consumer hop; under overload it grows with "
            "the workers' backlog. 1,000/s would need several identity processes and more "
            "cores than two.",
        ]
    prefill = results.get("prefill")
    if prefill and not failed(prefill):
        runs = [r for e in prefill["by_connections"].values() for r in e["runs"]]
        api_cpu = [
            share
            for run in runs
            for name, share in (run.get("cpu_percent_of_one_core") or {}).items()
            if name.endswith(" api") and "polres" in name
        ]
        levels = prefill["by_connections"]
        few, many = min(levels, key=int), max(levels, key=int)
        rps_few = levels[few]["summary"]["requests_per_second"]["median"]
        rps_many = levels[many]["summary"]["requests_per_second"]["median"]
        compare = (
            f"{many} connections gave {rps_many:.0f} requests/s against {rps_few:.0f} with "
            f"{few}, so more connections mostly add queueing (latency) once that process is "
            "busy; "
            if few != many
            else ""
        )
        out += [
            "- **Prefill: one API process per gateway.** Each request checks the bearer "
            "token (its EdDSA signature once per token, then from a cache until it expires), "
            "reads the view and the consents outside a transaction, and is answered once its "
            "access event is committed (concurrent requests share one commit), in one "
            "Python process (uvicorn, one worker). The polres API used a "
            f"median {median_of(api_cpu):.0f} % of a core; {compare}about 2 ms of the API's "
            "CPU and 1 ms of PostgreSQL's per request is what two cores can spend on it. "
            "Several API workers per gateway (section 10) use what one leaves idle; 5,000/s "
            "would need more cores or a cheaper request path than FastAPI's; the access "
            "event per request stays, by design (no answer without an audit record).",
        ]
    consent = results.get("consent")
    if consent and not failed(consent):
        out += [
            "- **Consent purge** is one small event along the same path (identity's outbox, "
            "relay, Kafka, the bank's worker) on an otherwise idle platform, far within the "
            "5 s target; section 9 measures it while a bulk backlog occupies the same "
            "worker process.",
        ]
    purge = results.get("purge_backlog")
    if purge and not failed(purge):
        backlog = purge["summary"]["backlog_at_end"]["median"]
        took = purge["summary"]["median_s"]["median"]
        out += [
            f"- **Purge under a backlog** is no faster path: the end's record sits behind the "
            f"feed's records on its partition, so with the worker {backlog:.0f} records behind "
            f"it took {took:.1f} s (median), about the time that worker needs for that backlog. "
            "A purge stays within 5 s only while a worker's backlog is below about 5 s of its "
            "rate; more worker processes per agency shorten it.",
        ]
    backfill = results.get("backfill")
    if backfill and not failed(backfill):
        s = backfill["summary"]
        out += [
            f"- **Backfill** runs at the worker's rate for stored records "
            f"({s['citizens_per_second']['median']:.0f} citizens/s here), after "
            f"{s['first_write_after_start_s']['median']:.0f} s of start-up (the interpreter's "
            "imports and joining the consumer group) on a machine shared with the platform.",
        ]
    relationship = results.get("relationship")
    if relationship and not failed(relationship):
        out += [
            "- **The end of the last relationship** takes the consent purge's path plus one hop: "
            "the gateway's request to identity, whose transaction ends the relationship and "
            "queues the citizen's record; the worker deletes the row when it applies it. A "
            "relationship that runs out by time is purged by the worker's retention sweep "
            "instead (every IKD_GATEWAY_RETENTION_CHECK_SECONDS, 60 s by default).",
        ]
    out += scaling_report.limits(results.get("scaling"))
    if results.get("quick"):
        out += ["- This was a QUICK run (BENCH_QUICK=1): one short run each, for the harness."]
    out.append("")
    return out


def backfill_row(backfill: dict[str, Any] | None) -> list[str]:
    target = "Backfill of a newly onboarded agency ≥ 10,000 citizens/s into its view"
    if not backfill or failed(backfill):
        return [target, failed(backfill) or "–", "–", ""]
    s = backfill["summary"]
    rate = s["citizens_per_second"]["median"]
    return [
        target,
        f"{num(rate)} citizens/s ({num(backfill['citizens'])} registered at "
        f"{backfill['agency']} while its gateway was down); all held "
        f"{num(s['seen_complete_after_start_s']['median'], 1)} s after its start",
        verdict(rate >= TARGETS["backfill"]),
        "the agency's one worker process: per record decoding, validation, the policy "
        "projection, a view write, an access event and an agency-topic record, on its share "
        "of two cores",
    ]


def purge_backlog_row(purge: dict[str, Any] | None) -> list[str]:
    target = "Purge ≤ 5 s under a bulk backlog"
    if not purge or failed(purge):
        return [target, failed(purge) or "–", "–", ""]
    s = purge["summary"]
    worst = max(run["max_s"] for run in purge["runs"])
    consents = [run["consent_max_s"] for run in purge["runs"] if run.get("consent_max_s")]
    revoked = (
        f"; a consent revoked at the same time: bank-bjb's view purged after "
        f"{num(median_of(consents), 2)} s (median), worst {num(max(consents), 2)} s"
        if consents
        else ""
    )
    return [
        target,
        f"relationship ended: median {num(s['median_s']['median'], 2)} s, worst "
        f"{num(worst, 2)} s (at {purge['agency']}, its worker "
        f"{num(s['backlog_at_end']['median'])} feed records behind){revoked}",
        verdict(max([worst, *consents]) <= TARGETS["purge_s"]),
        "the end's record waits behind the backlog on its partition of the profile topic: "
        "it costs about the backlog's share of that partition at the worker's rate; a "
        "revocation travels on the consent topic, beside the backlog",
    ]


def backfill_section(backfill: dict[str, Any] | None) -> list[str]:
    out = ["## 8. Backfill of a newly onboarded agency", ""]
    if backfill is None:
        return [*out, "Not measured in this run.", ""]
    if failed(backfill):
        return [*out, f"Failed: {failed(backfill)}", ""]
    out += [
        f"{backfill['agency']}'s gateway (API and worker) is stopped; "
        f"{num(backfill['citizens'])} citizens already known to identity are registered for "
        f"its `{backfill['service']}` service at identity with the gateway's own client (16 in "
        "flight), one record each on the profile topic, so its consumer group is behind by "
        "them, as an agency onboarded with its registrations (or back from downtime) is. "
        "Then the gateway starts with its own command line and environment; the bench polls "
        "one `count(*)` on its view every 100 ms until it holds them all, and reads the rows' "
        "`updated_at` (the start of each batch transaction of the worker) afterwards. "
        "citizens/s = N over first write → the poll that saw all N (errs low by up to one "
        "poll); over the writes' own window it is the second column; from the process start "
        "it includes interpreter start-up and joining the consumer group.",
        "",
    ]
    s = backfill["summary"]
    out += table(
        [
            "citizens",
            "citizens/s",
            "over the writes' window",
            "from the process start",
            "first write after start (s)",
            "all held after start (s)",
            "registering (s)",
        ],
        [
            [
                num(backfill["citizens"]),
                med(s, "citizens_per_second"),
                med(s, "citizens_per_second_write_window"),
                med(s, "citizens_per_second_from_start"),
                med(s, "first_write_after_start_s", 1),
                med(s, "seen_complete_after_start_s", 1),
                med(s, "registering_seconds", 1),
            ]
        ],
    )
    return out


def purge_backlog_section(purge: dict[str, Any] | None) -> list[str]:
    out = ["## 9. Purge under a bulk backlog", ""]
    if purge is None:
        return [*out, "Not measured in this run.", ""]
    if failed(purge):
        return [*out, f"Failed: {failed(purge)}", ""]
    runs = purge["runs"]
    out += [
        f"Citizens registered at {purge['agency']} (their only relationship there) are held "
        f"in its view. Per run, Dukcapil's bulk feed sends {num(runs[0]['feed_events'])} new "
        "citizens through identity's bulk endpoint; as soon as identity has committed them "
        f"all, {purge['agency']}'s backend ends {purge['ended_per_run']} of those registrations "
        "and the MPP officer revokes one citizen's consent to bank-bjb, all at once, and the "
        f"bench polls each citizen's view row every {num(purge['poll_ms'])} ms (one connection "
        "each) until it is gone (dinsos) or holds none of the consented fields (bank-bjb). "
        "Timed from identity's transaction of the end or revocation (its outbox row's "
        "`created_at`, a little before "
        "the commit, so the figure errs high) to the first poll that sees the purge. "
        "Backlog = the feed's records the worker had not applied when the end was committed "
        "(from `processed_events.processed_at`).",
        "",
    ]
    rows = []
    for number, run in enumerate(runs, 1):
        rows.append(
            [
                str(number),
                num(run["backlog_at_end"]),
                num(run["feed_seconds"], 1),
                str(run["ended"]),
                num(run["latencies"]["p50_ms"]),
                num(run["latencies"]["max_ms"]),
                num((run.get("consent_max_s") or math.nan) * 1000),
            ]
        )
    out += table(
        [
            "run",
            "backlog (records)",
            "feed took (s)",
            "ended",
            "end → purged: median (ms)",
            "max (ms)",
            "consent revoked → purged (ms)",
        ],
        rows,
    )
    s = purge["summary"]
    out += [
        f"Median over runs: {num(s['median_s']['median'] * 1000)} ms "
        f"(worst run's max {num(max(r['max_s'] for r in runs) * 1000)} ms); target ≤ 5 s.",
        "",
    ]
    return out


def main() -> None:
    """Rewrite the generated part of a BENCHMARKS.md from a benchmarks.json."""
    import argparse
    import json
    from pathlib import Path

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--json", type=Path, default=Path("docs/benchmarks.json"))
    parser.add_argument("--out", type=Path, default=Path("docs/BENCHMARKS.md"))
    args = parser.parse_args()
    existing = args.out.read_text() if args.out.exists() else None
    args.out.write_text(splice(existing, markdown(json.loads(args.json.read_text()))))


if __name__ == "__main__":
    main()
