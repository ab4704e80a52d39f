"""Access patterns: buckets, opening hours, the anomaly detectors, charts and signed reports."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ikd_audit.domain import report as reports
from ikd_audit.domain.errors import BadFilter
from ikd_audit.domain.model import NewEntry
from ikd_audit.domain.patterns import (
    ANOMALY_CHANNEL,
    AgencyWindow,
    AnomalyKind,
    OpeningHours,
    Thresholds,
    bucket_start,
    buckets_between,
    count_report,
    count_windows,
    detect,
    parse_bucket,
)
from ikd_audit.domain.search import SearchFilter
from ikd_audit.entrypoints import charts
from ikd_audit.service_layer.checkpoints import DEFAULT_ORIGIN, CheckpointSigner
from ikd_audit.service_layer.patterns import AccessPatterns, EntryPatternQueries
from ikd_audit.service_layer.services import AuditLog
from ikd_shared import checkpoint, merkle, transparency
from ikd_shared.transparency import Entry
from tests.support.audit_fakes import FakeDatabase

# Monday 30 November 2026, 10:00 in Jakarta (UTC+7)
MONDAY_10_WIB = dt.datetime(2026, 11, 30, 3, 0, tzinfo=dt.UTC)
WINDOW = dt.timedelta(minutes=15)
HOURS = OpeningHours.parse("mon-fri 08:00-16:00; sat 08:00-12:00")
T = Thresholds(window=WINDOW, baseline_windows=8)


def entry(
    at: dt.datetime,
    *,
    agency: str = "bank-bjb",
    channel: str = "prefill",
    outcome: str = "served",
    reason: str | None = None,
    position: int = 0,
    service: str | None = "kredit-usaha",
) -> Entry:
    return Entry(
        position=position,
        access_id=uuid.uuid4(),
        occurred_at=at,
        recorded_at=at,
        agency=agency,
        service=service,
        pseudonym="a" * 64,
        fields=("full_name",),
        purpose="credit",
        legal_basis="consent",
        channel=channel,
        outcome=outcome,
        reason=reason,
    )


# --- buckets and opening hours ---------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [("15m", 900), ("1h", 3600), ("7d", 7 * 86400)])
def test_bucket_widths_parse(text: str, seconds: int) -> None:
    assert parse_bucket(text) == dt.timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["0m", "1w", "h", "32d", "1.5h", "-1h"])
def test_bad_bucket_widths_are_refused(text: str) -> None:
    with pytest.raises(BadFilter):
        parse_bucket(text)


def test_buckets_are_aligned_to_utc_and_bounded_in_number() -> None:
    at = dt.datetime(2026, 11, 30, 3, 7, 59, tzinfo=dt.UTC)
    assert bucket_start(at, WINDOW) == dt.datetime(2026, 11, 30, 3, 0, tzinfo=dt.UTC)
    assert len(buckets_between(at, at + dt.timedelta(hours=1), WINDOW)) == 5
    with pytest.raises(BadFilter, match="at most"):
        buckets_between(at, at + dt.timedelta(days=30), dt.timedelta(minutes=1))


@pytest.mark.parametrize(
    ("utc", "is_open"),
    [
        (dt.datetime(2026, 11, 30, 1, 0, tzinfo=dt.UTC), True),  # Mon 08:00 WIB: opens
        (dt.datetime(2026, 11, 30, 0, 59, tzinfo=dt.UTC), False),  # Mon 07:59 WIB
        (dt.datetime(2026, 11, 30, 8, 59, tzinfo=dt.UTC), True),  # Mon 15:59 WIB
        (dt.datetime(2026, 11, 30, 9, 0, tzinfo=dt.UTC), False),  # Mon 16:00 WIB: closed
        (dt.datetime(2026, 12, 5, 4, 0, tzinfo=dt.UTC), True),  # Sat 11:00 WIB
        (dt.datetime(2026, 12, 5, 5, 0, tzinfo=dt.UTC), False),  # Sat 12:00 WIB
        (dt.datetime(2026, 12, 6, 3, 0, tzinfo=dt.UTC), False),  # Sunday
        (dt.datetime(2026, 11, 29, 20, 0, tzinfo=dt.UTC), False),  # Mon 03:00 WIB
    ],
)
def test_opening_hours_are_local_to_jakarta(utc: dt.datetime, is_open: bool) -> None:
    assert HOURS.is_open(utc) is is_open


def test_opening_hours_ranges_wrap_and_bad_specs_are_refused() -> None:
    weekend = OpeningHours.parse("sat-sun 09:00-10:00")
    assert weekend.days[5] == weekend.days[6] == (540, 600)
    assert weekend.days[0] is None
    assert OpeningHours.parse("fri-mon 07:00-08:00").days[1] is None
    assert OpeningHours.parse("fri-mon 07:00-08:00").days[0] == (420, 480)
    for bad in ("mon 16:00-08:00", "funday 08:00-10:00", "mon-fri", "mon 8:00-10:00"):
        with pytest.raises(ValueError, match="opening hours"):
            OpeningHours.parse(bad)


# --- detectors -------------------------------------------------------------------------------


def baseline(agency: str, start: dt.datetime, **counts: int) -> list[AgencyWindow]:
    """The same counts in each of the T.baseline_windows windows before `start`."""
    return [
        AgencyWindow(agency, start - WINDOW * i, **counts) for i in range(1, T.baseline_windows + 1)
    ]


def kinds(alerts: list[object]) -> list[str]:
    return sorted(str(a.kind) for a in alerts)  # type: ignore[attr-defined]


def test_lookups_far_above_the_usual_rate_alert_and_a_busy_but_usual_agency_does_not() -> None:
    now = MONDAY_10_WIB
    windows = [
        *baseline("bank-bjb", now, lookups=2),
        AgencyWindow("bank-bjb", now, lookups=40),
        *baseline("polres-cirebon", now, lookups=20),
        AgencyWindow("polres-cirebon", now, lookups=60),  # 3x its usual 20
    ]
    alerts = detect(windows, [now], T)
    assert [(a.kind, a.agency, a.observed, a.limit) for a in alerts] == [
        (AnomalyKind.LOOKUP_RATE, "bank-bjb", 40, 30)
    ]
    assert alerts[0].usual == 2.0
    busier = detect([*windows[:-1], AgencyWindow("polres-cirebon", now, lookups=101)], [now], T)
    assert ("polres-cirebon", 101, 101) in [(a.agency, a.observed, a.limit) for a in busier]


def test_the_floor_keeps_a_quiet_agency_from_alerting_on_a_few_lookups() -> None:
    alerts = detect([AgencyWindow("bank-bjb", MONDAY_10_WIB, lookups=29)], [MONDAY_10_WIB], T)
    assert alerts == []


def test_denials_far_above_the_usual_rate_alert() -> None:
    now = MONDAY_10_WIB
    usual = detect(
        [*baseline("bank-bjb", now, denials=3), AgencyWindow("bank-bjb", now, denials=15)], [now], T
    )
    assert usual == []
    far = detect(
        [*baseline("bank-bjb", now, denials=1), AgencyWindow("bank-bjb", now, denials=12)], [now], T
    )
    assert kinds(far) == ["denial_rate"]


def test_a_burst_of_lookups_without_a_relationship_alerts_at_the_threshold() -> None:
    now = MONDAY_10_WIB
    assert detect([AgencyWindow("bank-bjb", now, not_found=9)], [now], T) == []
    alerts = detect([AgencyWindow("bank-bjb", now, not_found=10)], [now], T)
    assert kinds(alerts) == ["not_found_burst"]


def test_accesses_outside_opening_hours_alert() -> None:
    now = MONDAY_10_WIB
    assert kinds(detect([AgencyWindow("bank-bjb", now, off_hours=1)], [now], T)) == ["off_hours"]
    strict = dataclasses.replace(T, off_hours_min=5)
    assert detect([AgencyWindow("bank-bjb", now, off_hours=4)], [now], strict) == []


def test_only_the_evaluated_windows_raise_alerts() -> None:
    old = MONDAY_10_WIB - WINDOW * 3
    assert detect([AgencyWindow("bank-bjb", old, not_found=50)], [MONDAY_10_WIB], T) == []


def test_an_alert_is_a_log_entry_with_an_id_derived_from_what_it_is_about() -> None:
    (alert,) = detect([AgencyWindow("bank-bjb", MONDAY_10_WIB, not_found=12)], [MONDAY_10_WIB], T)
    (again,) = detect([AgencyWindow("bank-bjb", MONDAY_10_WIB, not_found=14)], [MONDAY_10_WIB], T)
    assert alert.alert_id == again.alert_id
    new = alert.entry()
    assert (new.channel, new.outcome, new.purpose, new.agency) == (
        ANOMALY_CHANNEL,
        "alert",
        "not_found_burst",
        "bank-bjb",
    )
    assert new.pseudonym is None
    assert new.fields == ()
    assert new.reason == "12 in 15m, limit 10"


def test_counting_windows_in_python() -> None:
    closed = dt.datetime(2026, 11, 30, 13, 0, tzinfo=dt.UTC)  # 20:00 WIB
    entries = [
        entry(MONDAY_10_WIB),
        entry(MONDAY_10_WIB, outcome="denied", reason="citizen_not_found"),
        entry(MONDAY_10_WIB, channel="webhook"),
        entry(closed, channel="registration"),
        entry(closed, channel="webhook"),  # the platform's push: not staff work
        entry(closed, agency="auditor:x", channel="auditor"),
        entry(closed, channel=ANOMALY_CHANNEL, outcome="alert"),
    ]
    windows = count_windows(
        entries,
        start=MONDAY_10_WIB,
        end=closed + WINDOW,
        width=WINDOW,
        hours=HOURS,
    )
    assert windows == [
        AgencyWindow("bank-bjb", MONDAY_10_WIB, lookups=2, denials=1, not_found=1),
        AgencyWindow("bank-bjb", closed, off_hours=1),
    ]


# --- the detector on the log -----------------------------------------------------------------


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def patterns_on(
    db: FakeDatabase, clock: Clock
) -> tuple[AccessPatterns, AuditLog, Ed25519PrivateKey]:
    key = Ed25519PrivateKey.generate()
    log = AuditLog(
        db,
        CheckpointSigner(db, key, DEFAULT_ORIGIN, clock),
        pseudonym_key=b"p" * 32,
        cursor_key=b"c" * 32,
        clock=clock,
    )
    patterns = AccessPatterns(EntryPatternQueries(db), log, thresholds=T, hours=HOURS, clock=clock)
    return patterns, log, key


def new_entry(at: dt.datetime, **changes: object) -> NewEntry:
    values = dataclasses.asdict(entry(at))
    values.pop("position")
    values.pop("recorded_at")
    values.update(changes)
    return NewEntry(**values)  # type: ignore[arg-type]


async def test_a_burst_raises_one_alert_entry_that_verifies_in_the_log() -> None:
    clock = Clock(MONDAY_10_WIB + dt.timedelta(minutes=5))
    db = FakeDatabase(now=clock.now)
    patterns, log, key = patterns_on(db, clock)
    await log.append([new_entry(MONDAY_10_WIB - dt.timedelta(hours=1))])
    assert await patterns.detect() == []
    burst = [
        new_entry(
            MONDAY_10_WIB + dt.timedelta(seconds=i), outcome="denied", reason="citizen_not_found"
        )
        for i in range(12)
    ]
    await log.append(burst)
    raised = await patterns.detect()
    # twelve denials of unknown citizens: a burst, and far above the usual (none) denials
    assert sorted((a.kind, a.agency, a.observed) for a in raised) == [
        (AnomalyKind.DENIAL_RATE, "bank-bjb", 12),
        (AnomalyKind.NOT_FOUND_BURST, "bank-bjb", 12),
    ]
    assert await patterns.detect() == []  # seen again: nothing new is appended
    clock.now += WINDOW  # the burst's window is now the previous one: judged, not re-raised
    assert await patterns.detect() == []
    page = await patterns.recent_alerts()
    assert sorted(e.access_id for e in page.entries) == sorted(a.alert_id for a in raised)
    assert sorted(e.position for e in page.entries) == [13, 14]
    stored = page.entries[0]
    assert stored.channel == ANOMALY_CHANNEL
    assert stored.pseudonym is None
    proof = await log.inclusion_proof(stored.position)
    transparency.verify_inclusion_bundle(proof, key.public_key())
    forged = dict(proof, entry={**proof["entry"], "agency": "polres-cirebon"})
    with pytest.raises(merkle.ProofError):
        transparency.verify_inclusion_bundle(forged, key.public_key())


async def test_the_chart_counts_accesses_but_not_alerts() -> None:
    clock = Clock(MONDAY_10_WIB + dt.timedelta(hours=2))
    db = FakeDatabase(now=clock.now)
    patterns, log, _ = patterns_on(db, clock)
    await log.append(
        [
            new_entry(MONDAY_10_WIB),
            new_entry(MONDAY_10_WIB + dt.timedelta(minutes=70), outcome="denied"),
            new_entry(MONDAY_10_WIB, agency="polres-cirebon", service="skck"),
            new_entry(MONDAY_10_WIB, channel=ANOMALY_CHANNEL, outcome="alert"),
        ]
    )
    chart = await patterns.chart(
        SearchFilter(),
        start=MONDAY_10_WIB,
        end=MONDAY_10_WIB + dt.timedelta(hours=2),
        width=dt.timedelta(hours=1),
        group_by="agency",
    )
    assert [(s.key, s.accesses, s.denials) for s in chart.series] == [
        ("bank-bjb", [1, 1], [0, 1]),
        ("polres-cirebon", [1, 0], [0, 0]),
    ]
    by_service = await patterns.chart(
        SearchFilter(agency="polres-cirebon"),
        start=MONDAY_10_WIB,
        end=MONDAY_10_WIB + dt.timedelta(hours=2),
        width=dt.timedelta(hours=1),
        group_by="service",
    )
    assert [(s.key, s.total) for s in by_service.series] == [("skck", 1)]
    svg = charts.svg(chart, "accesses", chart_id="c", title="<t>", alerts=[MONDAY_10_WIB])
    assert svg.count('class="series"') == 2
    assert 'data-key="bank-bjb"' in svg
    assert 'data-total="3"' in svg
    assert svg.count('class="alert-marker"') == 1
    assert "<t>" not in svg
    assert "&lt;t&gt;" in svg


def test_a_chart_keeps_the_eight_busiest_and_sums_the_rest() -> None:
    from ikd_audit.domain.patterns import BucketCount, chart

    counts = [BucketCount(MONDAY_10_WIB, f"agency-{i:02d}", i + 1, 0) for i in range(12)]
    drawn = charts.lines(
        chart(
            counts, start=MONDAY_10_WIB, end=MONDAY_10_WIB + WINDOW, width=WINDOW, group_by="agency"
        ),
        "accesses",
    )
    assert [line.label for line in drawn][:2] == ["agency-11", "agency-10"]
    assert drawn[-1].label == "other"
    assert drawn[-1].values == [1 + 2 + 3 + 4]
    assert len(drawn) == 9


# --- signed reports --------------------------------------------------------------------------


def signed_report(
    log_key: Ed25519PrivateKey, report_key: Ed25519PrivateKey
) -> tuple[reports.AgencyReport, str, str]:
    entries = [
        entry(MONDAY_10_WIB, position=0),
        entry(MONDAY_10_WIB, position=1, outcome="denied"),
        entry(MONDAY_10_WIB, position=2),
        entry(MONDAY_10_WIB, position=3, agency="polres-cirebon"),
        entry(MONDAY_10_WIB, position=4),  # after the checkpoint: not counted
        entry(MONDAY_10_WIB - dt.timedelta(days=40), position=0),  # before the period
    ]
    root = bytes(range(32))
    rows = count_report(
        entries,
        agency="bank-bjb",
        start=MONDAY_10_WIB - dt.timedelta(days=1),
        end=MONDAY_10_WIB + dt.timedelta(days=1),
        tree_size=4,
    )
    report = reports.AgencyReport(
        DEFAULT_ORIGIN,
        "bank-bjb",
        MONDAY_10_WIB - dt.timedelta(days=1),
        MONDAY_10_WIB + dt.timedelta(days=1),
        4,
        root,
        tuple(rows),
    )
    note = reports.sign(report, checkpoint.Signer("ikd-audit-report", report_key))
    tree = checkpoint.Checkpoint(DEFAULT_ORIGIN, 4, root).text()
    return report, note, checkpoint.Signer(DEFAULT_ORIGIN, log_key).sign(tree)


def test_a_report_counts_by_service_channel_basis_and_outcome_and_verifies() -> None:
    log_key, report_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    report, note, tree = signed_report(log_key, report_key)
    assert report.total == 3
    assert [(r.outcome, r.count) for r in report.rows] == [("denied", 1), ("served", 2)]
    checked = reports.verify(
        note,
        tree,
        report_key=checkpoint.Signer("ikd-audit-report", report_key).verifier,
        log_key=checkpoint.Signer(DEFAULT_ORIGIN, log_key).verifier,
    )
    assert checked.report == report
    assert reports.AgencyReport.parse(report.text()) == report


def test_an_altered_or_misanchored_report_does_not_verify() -> None:
    log_key, report_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    report, note, tree = signed_report(log_key, report_key)
    keys = {
        "report_key": checkpoint.Signer("ikd-audit-report", report_key).verifier,
        "log_key": checkpoint.Signer(DEFAULT_ORIGIN, log_key).verifier,
    }
    with pytest.raises(reports.ReportError, match="does not verify"):
        reports.verify(note.replace("count 2 ", "count 1 "), tree, **keys)
    other = checkpoint.Signer(DEFAULT_ORIGIN, log_key).sign(
        checkpoint.Checkpoint(DEFAULT_ORIGIN, 5, bytes(32)).text()
    )
    with pytest.raises(reports.ReportError, match="tree 4"):
        reports.verify(note, other, **keys)
    with pytest.raises(reports.ReportError):
        reports.verify(note, tree, report_key=keys["log_key"], log_key=keys["log_key"])
    stranger = reports.sign(report, checkpoint.Signer("ikd-audit-report", log_key))
    with pytest.raises(reports.ReportError):
        reports.verify(stranger, tree, **keys)
