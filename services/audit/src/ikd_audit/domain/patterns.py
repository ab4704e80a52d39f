"""Access patterns for auditors: counts over time, opening hours, and the anomaly detectors.

Pure: the adapters count in SQL, `count_entries` counts the same in Python (the unit tests and
the offline report check use it), and `detect` decides from counts alone which alerts to raise.
An alert is appended to the log itself (channel `anomaly`), so it is as tamper-evident as the
accesses it points at, and its id is derived from what it is about: raising it again (another
run, another replica) appends nothing.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from zoneinfo import ZoneInfo

from ikd_audit.domain.errors import BadFilter
from ikd_audit.domain.model import AUDITOR_CHANNEL, NewEntry
from ikd_shared.transparency import Entry

ANOMALY_CHANNEL = "anomaly"  # an alert raised by the detectors, not an access
ALERT_OUTCOME = "alert"
LOOKUP_CHANNELS = ("prefill",)  # an agency asking for a citizen's data
# Channels an agency's staff or backend drives (the others are the platform's pushes, which
# follow a citizen's verification at reception whenever the relay delivers it).
STAFF_CHANNELS = ("prefill", "registration")
NOT_FOUND = "citizen_not_found"  # a look-up of someone the agency has no relationship with
GROUPS = ("agency", "service", "channel", "legal_basis", "outcome")
MAX_BUCKETS = 2000
_ALERT_IDS = uuid.UUID("8f0b7c52-33a4-4c1e-9d0e-6a1d5e2f4b17")

_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HOURS = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")
_BUCKET = re.compile(r"^(\d{1,4})([mhd])$")
_UNITS = {"m": 60, "h": 3600, "d": 86400}


def parse_bucket(value: str) -> dt.timedelta:
    """`15m`, `1h`, `1d`: a bucket width of at least a minute and at most 31 days."""
    match = _BUCKET.fullmatch(value.strip())
    if not match or int(match[1]) == 0:
        raise BadFilter("bucket is a number and m, h or d (15m, 1h, 1d)", code="invalid_bucket")
    width = dt.timedelta(seconds=int(match[1]) * _UNITS[match[2]])
    if width > dt.timedelta(days=31):
        raise BadFilter("a bucket is at most 31 days", code="invalid_bucket")
    return width


def bucket_start(at: dt.datetime, width: dt.timedelta) -> dt.datetime:
    """The start of the bucket holding `at`; buckets are aligned to the Unix epoch (UTC)."""
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
    return epoch + width * ((at - epoch) // width)


def buckets_between(start: dt.datetime, end: dt.datetime, width: dt.timedelta) -> list[dt.datetime]:
    """Bucket starts covering [start, end); BadFilter if there would be too many to chart."""
    first = bucket_start(start, width)
    count = -(-(end - first) // width)
    if count > MAX_BUCKETS:
        raise BadFilter(
            f"at most {MAX_BUCKETS} buckets: choose a wider bucket or a shorter period",
            code="too_many_buckets",
        )
    return [first + width * i for i in range(max(count, 0))]


@dataclass(frozen=True, slots=True)
class OpeningHours:
    """When the MPP's counters are open, per weekday in local time (closed days: None)."""

    days: tuple[tuple[int, int] | None, ...]  # Monday first: (open, close) minutes of the day
    zone: str = "Asia/Jakarta"

    @classmethod
    def parse(cls, spec: str, zone: str = "Asia/Jakarta") -> OpeningHours:
        """`mon-fri 08:00-16:00; sat 08:00-12:00`; a day not named is closed."""
        days: list[tuple[int, int] | None] = [None] * 7
        for part in filter(None, (p.strip() for p in spec.split(";"))):
            try:
                names, hours = part.split()
            except ValueError:
                raise ValueError(f"opening hours: {part!r} is not 'DAYS HH:MM-HH:MM'") from None
            match = _HOURS.fullmatch(hours)
            if not match:
                raise ValueError(f"opening hours: {hours!r} is not HH:MM-HH:MM")
            opens = int(match[1]) * 60 + int(match[2])
            closes = int(match[3]) * 60 + int(match[4])
            if not 0 <= opens < closes <= 24 * 60:
                raise ValueError(f"opening hours: {hours!r} must open before it closes")
            first, _, last = names.lower().partition("-")
            if first not in _DAYS or (last and last not in _DAYS):
                raise ValueError(f"opening hours: {names!r} is not a day or mon-fri style range")
            start, end = _DAYS.index(first), _DAYS.index(last or first)
            for day in (
                range(start, end + 1) if start <= end else (*range(start, 7), *range(end + 1))
            ):
                days[day] = (opens, closes)
        ZoneInfo(zone)  # raises on an unknown zone
        return cls(tuple(days), zone)

    def is_open(self, at: dt.datetime) -> bool:
        local = at.astimezone(ZoneInfo(self.zone))
        hours = self.days[local.weekday()]
        minute = local.hour * 60 + local.minute
        return hours is not None and hours[0] <= minute < hours[1]

    def bounds(self) -> tuple[list[int], list[int]]:
        """Per ISO weekday (1 = Monday, index 0 here), opening and closing minute; a closed
        day opens and closes at 0. The SQL adapter counts with these."""
        opens = [h[0] if h else 0 for h in self.days]
        closes = [h[1] if h else 0 for h in self.days]
        return opens, closes


@dataclass(frozen=True, slots=True)
class Series:
    """One line of a chart: accesses and denials per bucket for one group key."""

    key: str | None
    accesses: list[int]
    denials: list[int]

    @property
    def total(self) -> int:
        return sum(self.accesses)


@dataclass(frozen=True, slots=True)
class Chart:
    start: dt.datetime
    end: dt.datetime
    width: dt.timedelta
    group_by: str
    buckets: list[dt.datetime]
    series: list[Series]


@dataclass(frozen=True, slots=True)
class BucketCount:
    """Accesses and denials of one group key in one bucket (what the SQL GROUP BY returns)."""

    bucket: dt.datetime
    key: str | None
    accesses: int
    denials: int


def chart(
    counts: Iterable[BucketCount],
    *,
    start: dt.datetime,
    end: dt.datetime,
    width: dt.timedelta,
    group_by: str,
) -> Chart:
    """Dense series (zero where nothing happened), the busiest key first."""
    buckets = buckets_between(start, end, width)
    index = {b: i for i, b in enumerate(buckets)}
    accesses: dict[str | None, list[int]] = defaultdict(lambda: [0] * len(buckets))
    denials: dict[str | None, list[int]] = defaultdict(lambda: [0] * len(buckets))
    for count in counts:
        i = index.get(count.bucket)
        if i is None:
            continue
        accesses[count.key][i] += count.accesses
        denials[count.key][i] += count.denials
    series = [Series(key, accesses[key], denials[key]) for key in accesses]
    series.sort(key=lambda s: (-s.total, s.key or ""))
    return Chart(start, end, width, group_by, buckets, series)


def is_access(entry: Entry) -> bool:
    return entry.channel != ANOMALY_CHANNEL


def count_buckets(
    entries: Iterable[Entry],
    *,
    start: dt.datetime,
    end: dt.datetime,
    width: dt.timedelta,
    group_by: str,
) -> list[BucketCount]:
    """What `PatternQueries.bucket_counts` answers, counted in Python."""
    found: dict[tuple[dt.datetime, str | None], list[int]] = defaultdict(lambda: [0, 0])
    for entry in entries:
        if not is_access(entry) or not start <= entry.occurred_at < end:
            continue
        cell = found[(bucket_start(entry.occurred_at, width), getattr(entry, group_by))]
        cell[0] += 1
        cell[1] += entry.outcome == "denied"
    return [BucketCount(b, k, a, d) for (b, k), (a, d) in sorted(found.items(), key=_order)]


def _order(item: tuple[tuple[dt.datetime, str | None], list[int]]) -> tuple[dt.datetime, str]:
    return item[0][0], item[0][1] or ""


# --- per-agency reports --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReportRow:
    service: str | None
    channel: str
    legal_basis: str | None
    outcome: str
    count: int


def count_report(
    entries: Iterable[Entry],
    *,
    agency: str,
    start: dt.datetime,
    end: dt.datetime,
    tree_size: int,
) -> list[ReportRow]:
    """An agency's entries below `tree_size` that occurred in [start, end), by service,
    channel, legal basis and outcome: what `PatternQueries.report_rows` answers."""
    found: dict[tuple[str | None, str, str | None, str], int] = defaultdict(int)
    for e in entries:
        if e.agency == agency and e.position < tree_size and start <= e.occurred_at < end:
            found[(e.service, e.channel, e.legal_basis, e.outcome)] += 1
    return sorted_rows(ReportRow(*key, count) for key, count in found.items())


def sorted_rows(rows: Iterable[ReportRow]) -> list[ReportRow]:
    return sorted(rows, key=lambda r: (r.service or "", r.channel, r.legal_basis or "", r.outcome))


# --- anomaly detection -----------------------------------------------------------------------


class AnomalyKind(StrEnum):
    LOOKUP_RATE = "lookup_rate"  # an agency's look-ups far above its usual rate
    DENIAL_RATE = "denial_rate"  # an agency's denials far above its usual rate
    OFF_HOURS = "off_hours"  # look-ups or registrations while the MPP is closed
    NOT_FOUND_BURST = "not_found_burst"  # look-ups of citizens it has no relationship with


@dataclass(frozen=True, slots=True)
class AgencyWindow:
    """One agency's activity in one detection window."""

    agency: str
    start: dt.datetime
    lookups: int = 0
    denials: int = 0
    not_found: int = 0
    off_hours: int = 0


@dataclass(frozen=True, slots=True)
class Thresholds:
    """When the detectors raise an alert (docs/auditor-guide.md explains each)."""

    window: dt.timedelta = dt.timedelta(minutes=15)
    baseline_windows: int = 7 * 24 * 4  # the usual rate: the mean over the previous week
    rate_factor: float = 5.0
    min_lookups: int = 30
    min_denials: int = 10
    not_found_burst: int = 10
    off_hours_min: int = 1

    def rate_limit(self, usual: float, floor: int) -> int:
        """Alert at this count or more: `rate_factor` times the usual rate, never below the
        floor (a quiet agency's first few look-ups are no pattern)."""
        return max(floor, int(self.rate_factor * usual) + 1)


@dataclass(frozen=True, slots=True)
class Alert:
    kind: AnomalyKind
    agency: str
    start: dt.datetime
    end: dt.datetime
    observed: int
    limit: int
    usual: float | None = None

    @property
    def alert_id(self) -> uuid.UUID:
        """Derived from kind, agency and window: one alert per window, however often seen."""
        return uuid.uuid5(_ALERT_IDS, f"{self.kind}|{self.agency}|{self.start.isoformat()}")

    @property
    def reason(self) -> str:
        minutes = int((self.end - self.start).total_seconds() // 60)
        usual = f" usual {self.usual:.1f}" if self.usual is not None else ""
        return f"{self.observed} in {minutes}m, limit {self.limit}{usual}"[:64]

    def entry(self) -> NewEntry:
        """The alert as a log entry: agency, kind as purpose, the numbers as reason."""
        return NewEntry(
            access_id=self.alert_id,
            occurred_at=self.start,
            agency=self.agency,
            service=None,
            pseudonym=None,
            fields=(),
            purpose=self.kind.value,
            legal_basis=None,
            channel=ANOMALY_CHANNEL,
            outcome=ALERT_OUTCOME,
            reason=self.reason,
        )


@dataclass
class _History:
    lookups: dict[dt.datetime, int] = field(default_factory=dict)
    denials: dict[dt.datetime, int] = field(default_factory=dict)


def detect(
    windows: Iterable[AgencyWindow], evaluate: Sequence[dt.datetime], thresholds: Thresholds
) -> list[Alert]:
    """Alerts for the windows starting at `evaluate`, judged against the earlier windows.

    `windows` holds every agency's windows in the baseline period before the evaluated ones
    and the evaluated ones themselves; a window absent from it had no activity.
    """
    t = thresholds
    history: dict[str, _History] = defaultdict(_History)
    current: dict[tuple[str, dt.datetime], AgencyWindow] = {}
    wanted = set(evaluate)
    for w in windows:
        history[w.agency].lookups[w.start] = w.lookups
        history[w.agency].denials[w.start] = w.denials
        if w.start in wanted:
            current[(w.agency, w.start)] = w
    alerts: list[Alert] = []
    for (agency, start), w in sorted(current.items()):
        end = start + t.window
        past = [start - t.window * i for i in range(1, t.baseline_windows + 1)]
        for kind, observed, counts, floor in (
            (AnomalyKind.LOOKUP_RATE, w.lookups, history[agency].lookups, t.min_lookups),
            (AnomalyKind.DENIAL_RATE, w.denials, history[agency].denials, t.min_denials),
        ):
            usual = sum(counts.get(b, 0) for b in past) / t.baseline_windows
            limit = t.rate_limit(usual, floor)
            if observed >= limit:
                alerts.append(Alert(kind, agency, start, end, observed, limit, usual))
        if w.not_found >= t.not_found_burst:
            alerts.append(
                Alert(
                    AnomalyKind.NOT_FOUND_BURST, agency, start, end, w.not_found, t.not_found_burst
                )
            )
        if w.off_hours >= t.off_hours_min:
            alerts.append(
                Alert(AnomalyKind.OFF_HOURS, agency, start, end, w.off_hours, t.off_hours_min)
            )
    return alerts


def count_windows(
    entries: Iterable[Entry],
    *,
    start: dt.datetime,
    end: dt.datetime,
    width: dt.timedelta,
    hours: OpeningHours,
) -> list[AgencyWindow]:
    """What `PatternQueries.agency_windows` answers, counted in Python."""
    found: dict[tuple[str, dt.datetime], list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for e in entries:
        if not is_access(e) or e.channel == AUDITOR_CHANNEL or not start <= e.occurred_at < end:
            continue
        cell = found[(e.agency, bucket_start(e.occurred_at, width))]
        cell[0] += e.channel in LOOKUP_CHANNELS
        cell[1] += e.outcome == "denied"
        cell[2] += e.outcome == "denied" and e.reason == NOT_FOUND
        cell[3] += e.channel in STAFF_CHANNELS and not hours.is_open(e.occurred_at)
    return [AgencyWindow(a, s, *counts) for (a, s), counts in sorted(found.items())]
