"""Access patterns on the real log: SQL counts agree with the domain's, a synthetic burst raises
alert entries that verify in the log, and a signed agency report verifies offline."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from typer.testing import CliRunner

from ikd_audit.bootstrap import AuditRuntime, SignerRuntime, bootstrap
from ikd_audit.cli import app as cli
from ikd_audit.config import AuditSettings
from ikd_audit.domain import report as reports
from ikd_audit.domain.patterns import (
    ANOMALY_CHANNEL,
    AnomalyKind,
    count_buckets,
    count_report,
    count_windows,
)
from ikd_audit.domain.search import SearchFilter
from ikd_audit.entrypoints.app import create_app
from ikd_shared import checkpoint, codec, transparency
from ikd_shared.events.access_v1 import AccessRecorded, Channel, Outcome
from tests.support.audit import Keys, access, audit_env

# Monday 30 November 2026, 10:05 in Jakarta (UTC+7): the MPP is open
NOW = dt.datetime(2026, 11, 30, 3, 5, tzinfo=dt.UTC)
WINDOW = dt.timedelta(minutes=15)


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture
async def at_ten(
    settings: AuditSettings, signer: SignerRuntime
) -> AsyncIterator[tuple[AuditRuntime, Clock]]:
    clock = Clock(NOW)
    async with bootstrap(settings, clock=clock) as runtime:
        yield runtime, clock


@pytest.fixture
async def client_at_ten(
    settings: AuditSettings, at_ten: tuple[AuditRuntime, Clock]
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(settings)
    app.state.runtime = at_ten[0]
    app.state.consumer = None
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1") as http:
        yield http


def event(
    when: dt.datetime,
    *,
    agency: str = "bank-bjb",
    channel: Channel = Channel.PREFILL,
    outcome: Outcome = Outcome.SERVED,
    reason: str | None = None,
    citizen: Any = None,
) -> AccessRecorded:
    made = access(citizen, agency=agency, channel=channel, outcome=outcome, when=when)
    return made.model_copy(update={"reason": reason or made.reason})


def varied(citizens: Any) -> list[AccessRecorded]:
    """Accesses across agencies, channels, outcomes, opening hours and days."""
    found = []
    for i in range(60):
        when = NOW - dt.timedelta(hours=5 * i, minutes=7 * i)
        found.append(
            event(
                when,
                agency=("bank-bjb", "polres-cirebon", "dinsos-cirebon")[i % 3],
                channel=(Channel.PREFILL, Channel.REGISTRATION, Channel.WEBHOOK)[i % 4 % 3],
                outcome=Outcome.DENIED if i % 5 == 0 else Outcome.SERVED,
                reason="citizen_not_found" if i % 10 == 0 else None,
                citizen=citizens[i % 3],
            )
        )
    return found


async def test_the_sql_counts_are_the_domains_counts(
    at_ten: tuple[AuditRuntime, Clock], citizens: Any
) -> None:
    runtime, _ = at_ten
    await runtime.log.record(varied(citizens))
    entries = [e async for e, _ in runtime.log.stream()]
    start, end = NOW - dt.timedelta(days=14), NOW + WINDOW
    queries = runtime.patterns.queries
    hours = runtime.patterns.hours
    sql = await queries.agency_windows(start=start, end=end, width=WINDOW, hours=hours)
    assert sql == count_windows(entries, start=start, end=end, width=WINDOW, hours=hours)
    assert sum(w.off_hours for w in sql) > 0, "the set should hold accesses while closed"
    for group in ("agency", "service", "channel", "legal_basis", "outcome"):
        width = dt.timedelta(hours=6)
        got = await queries.bucket_counts(
            SearchFilter(), start=start, end=end, width=width, group_by=group
        )
        assert got == count_buckets(entries, start=start, end=end, width=width, group_by=group)
    rows = await queries.report_rows("bank-bjb", start=start, end=end, tree_size=40)
    expected = count_report(entries, agency="bank-bjb", start=start, end=end, tree_size=40)
    assert sorted(rows, key=repr) == sorted(expected, key=repr)


async def test_a_synthetic_burst_raises_alert_entries_that_verify_in_the_log(
    at_ten: tuple[AuditRuntime, Clock],
    client_at_ten: httpx.AsyncClient,
    keys: Keys,
    citizens: Any,
) -> None:
    runtime, clock = at_ten
    usual = [event(NOW - dt.timedelta(days=1, minutes=m), citizen=citizens[0]) for m in range(5)]
    await runtime.log.record(usual)
    assert await runtime.patterns.detect() == []
    burst = [
        event(NOW - dt.timedelta(seconds=s), citizen=citizens[s % 3]) for s in range(1, 36)
    ] + [
        event(
            NOW - dt.timedelta(seconds=s),
            outcome=Outcome.DENIED,
            reason="citizen_not_found",
        )
        for s in range(1, 13)
    ]
    await runtime.log.record(burst)
    raised = await runtime.patterns.detect()
    assert sorted(a.kind for a in raised) == sorted(
        [AnomalyKind.DENIAL_RATE, AnomalyKind.LOOKUP_RATE, AnomalyKind.NOT_FOUND_BURST]
    )
    assert {a.agency for a in raised} == {"bank-bjb"}
    lookups = next(a for a in raised if a.kind is AnomalyKind.LOOKUP_RATE)
    assert lookups.observed == 47
    clock.now += dt.timedelta(minutes=3)
    assert await runtime.patterns.detect() == [], "an alert is raised once per window"

    auth = {"Authorization": f"Bearer {keys.token({'audit:read'})}"}
    listed = (await client_at_ten.get("/v1/anomalies", headers=auth)).json()["items"]
    assert sorted(i["purpose"] for i in listed) == sorted(a.kind.value for a in raised)
    assert {i["channel"] for i in listed} == {ANOMALY_CHANNEL}
    for item in listed:
        proof = (await client_at_ten.get(f"/v1/entries/{item['position']}", headers=auth)).json()
        transparency.verify_inclusion_bundle(proof, runtime.log.public_key)
        assert proof["entry"]["reason"].startswith(
            str(next(a.observed for a in raised if a.kind.value == item["purpose"]))
        )
    await runtime.log.sign_tree_head()
    export = [r async for r in runtime.log.export()]
    assert transparency.verify_log(export, runtime.log.public_key).ok

    stats = await client_at_ten.get(
        "/v1/stats/accesses",
        params={"from": "2026-11-29T00:00:00Z", "to": "2026-11-30T06:00:00Z", "bucket": "1h"},
        headers=auth,
    )
    assert stats.status_code == 200, stats.text
    body = stats.json()
    assert body["bucket_seconds"] == 3600
    assert len(body["buckets"]) == 30
    (bank,) = body["series"]  # alerts are not accesses
    assert bank["key"] == "bank-bjb"
    assert bank["total"] == 5 + 47
    assert bank["accesses"][body["buckets"].index("2026-11-30T03:00:00.000000Z")] == 47
    assert sum(bank["denials"]) == 12
    bad = await client_at_ten.get(
        "/v1/stats/accesses", params={"group_by": "nik", "bucket": "1h"}, headers=auth
    )
    assert (bad.status_code, bad.json()["code"]) == (400, "invalid_group_by")
    assert (await client_at_ten.get("/v1/stats/accesses")).status_code == 401


async def test_a_signed_agency_report_verifies_offline_and_a_recount_catches_a_false_one(
    runtime: AuditRuntime,
    audit_db: Any,
    tmp_path: Path,
    keys: Keys,
    citizens: Any,
) -> None:
    await runtime.log.record(
        [event(NOW - dt.timedelta(hours=h), citizen=citizens[0]) for h in range(1, 4)]
        + [event(NOW - dt.timedelta(hours=2), agency="polres-cirebon")]
    )
    await runtime.log.sign_tree_head()
    with (tmp_path / "log.jsonl").open("wb") as out:
        async for record in runtime.log.export():
            out.write(codec.dumps(record) + b"\n")

    report_key = Ed25519PrivateKey.generate()
    key_file = tmp_path / "report.pem"
    key_file.write_bytes(
        report_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("IKD_AUDIT_")}
    env.update(audit_env(keys, audit_db.app_dsn, "unused."))
    runner = CliRunner()
    # The CLI runs its own event loop: in a thread, while the signer goes on in this one.
    with mock.patch.dict(os.environ, env, clear=True):
        made = await asyncio.to_thread(
            runner.invoke,
            cli,
            [
                "report",
                "make",
                "--from",
                "2026-11-29T00:00:00Z",
                "--to",
                "2026-12-01T00:00:00Z",
                "--out",
                str(tmp_path / "reports"),
                "--key-file",
                str(key_file),
            ],
        )
        assert made.exit_code == 0, made.output
        vkey = runner.invoke(cli, ["report", "vkey", "--key-file", str(key_file)]).output.strip()
    written = sorted(p.name for p in (tmp_path / "reports").iterdir())
    assert written == ["bank-bjb.report.json", "polres-cirebon.report.json"]
    report = tmp_path / "reports" / "bank-bjb.report.json"
    args = ["report", "verify", str(report), "--report-vkey", vkey, "--log-vkey", keys.log_vkey()]
    checked = runner.invoke(cli, [*args, "--log", str(tmp_path / "log.jsonl")])
    assert checked.exit_code == 0, checked.output
    assert "report of bank-bjb, 3 entries" in checked.output
    assert "recounted" in checked.output

    document = codec.loads(report.read_bytes())
    honest = reports.AgencyReport.parse(document["report"].split("\n\n")[0])
    rows = tuple(dataclasses.replace(r, count=r.count - 1) for r in honest.rows)
    false = dataclasses.replace(honest, rows=rows)  # fewer accesses, yet signed by the key
    signed = reports.sign(false, checkpoint.Signer("ikd-audit-report", report_key))
    (tmp_path / "false.json").write_bytes(codec.dumps(dict(document, report=signed)))
    false_args = [*args[:2], str(tmp_path / "false.json"), *args[3:]]
    assert runner.invoke(cli, false_args).exit_code == 0, "signature and checkpoint hold"
    refused = runner.invoke(cli, [*false_args, "--log", str(tmp_path / "log.jsonl")])
    assert refused.exit_code == 1
    assert "other counts" in refused.output
    other_key = runner.invoke(cli, [*args[:4], keys.log_vkey(), *args[5:]])
    assert other_key.exit_code == 1, "the log's key is not the report key"
