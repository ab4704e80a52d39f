"""Use cases over access patterns: charts, anomaly detection, per-agency signed reports.

Alerts are appended through `AuditLog.append`, the one append path (log lock, gapless
positions, deduplication by id); nothing here writes otherwise.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Protocol

from ikd_audit.domain.model import AUDITOR_CHANNEL
from ikd_audit.domain.patterns import (
    ANOMALY_CHANNEL,
    AgencyWindow,
    Alert,
    BucketCount,
    Chart,
    OpeningHours,
    ReportRow,
    Thresholds,
    bucket_start,
    chart,
    count_buckets,
    count_report,
    count_windows,
    detect,
)
from ikd_audit.domain.report import AgencyReport, sign
from ikd_audit.domain.search import SearchFilter
from ikd_audit.service_layer.services import AuditLog, Page
from ikd_audit.service_layer.unit_of_work import UnitOfWorkFactory
from ikd_shared import checkpoint
from ikd_shared.transparency import Entry


class PatternQueries(Protocol):
    """Read-only counts over the log (adapters/patterns.py; `EntryPatternQueries` in memory)."""

    async def bucket_counts(
        self,
        search: SearchFilter,
        *,
        start: dt.datetime,
        end: dt.datetime,
        width: dt.timedelta,
        group_by: str,
    ) -> list[BucketCount]:
        """Accesses (alerts excluded) matching `search` in [start, end), per bucket and key."""
        ...

    async def agency_windows(
        self, *, start: dt.datetime, end: dt.datetime, width: dt.timedelta, hours: OpeningHours
    ) -> list[AgencyWindow]:
        """Each agency's activity per window (auditors' look-ups and alerts excluded)."""
        ...

    async def report_rows(
        self, agency: str, *, start: dt.datetime, end: dt.datetime, tree_size: int
    ) -> list[ReportRow]: ...

    async def agencies(self, *, start: dt.datetime, end: dt.datetime) -> list[str]:
        """Agencies with entries in [start, end) (auditors excluded)."""
        ...


class EntryPatternQueries:
    """The same counts from the entries themselves (unit tests with an in-memory log)."""

    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self.uow = uow

    async def _entries(self, search: SearchFilter | None = None) -> AsyncIterator[Entry]:
        async with self.uow(snapshot=True) as uow:
            async for entry, _ in uow.log.stream(search):
                yield entry

    async def bucket_counts(
        self,
        search: SearchFilter,
        *,
        start: dt.datetime,
        end: dt.datetime,
        width: dt.timedelta,
        group_by: str,
    ) -> list[BucketCount]:
        entries = [e async for e in self._entries(search)]
        return count_buckets(entries, start=start, end=end, width=width, group_by=group_by)

    async def agency_windows(
        self, *, start: dt.datetime, end: dt.datetime, width: dt.timedelta, hours: OpeningHours
    ) -> list[AgencyWindow]:
        entries = [e async for e in self._entries()]
        return count_windows(entries, start=start, end=end, width=width, hours=hours)

    async def report_rows(
        self, agency: str, *, start: dt.datetime, end: dt.datetime, tree_size: int
    ) -> list[ReportRow]:
        entries = [e async for e in self._entries()]
        return count_report(entries, agency=agency, start=start, end=end, tree_size=tree_size)

    async def agencies(self, *, start: dt.datetime, end: dt.datetime) -> list[str]:
        found = {
            e.agency
            async for e in self._entries()
            if start <= e.occurred_at < end and e.channel not in (ANOMALY_CHANNEL, AUDITOR_CHANNEL)
        }
        return sorted(found)


@dataclass(frozen=True, slots=True)
class SignedReport:
    report: AgencyReport
    note: str  # the report, signed by the report key
    checkpoint: str  # the checkpoint it counts from, signed by the log, with cosignatures

    def document(self) -> dict[str, str]:
        """The file `ikd-audit report verify` reads."""
        return {
            "type": "ikd-audit-agency-report",
            "report": self.note,
            "checkpoint": self.checkpoint,
        }


class AccessPatterns:
    def __init__(
        self,
        queries: PatternQueries,
        log: AuditLog,
        *,
        thresholds: Thresholds,
        hours: OpeningHours,
        clock: Callable[[], dt.datetime],
    ) -> None:
        self.queries = queries
        self.log = log
        self.thresholds = thresholds
        self.hours = hours
        self.clock = clock
        # Completed windows do not change, so after the first run only recent ones are read.
        self._history: dict[dt.datetime, list[AgencyWindow]] = {}

    async def chart(
        self,
        search: SearchFilter,
        *,
        start: dt.datetime,
        end: dt.datetime,
        width: dt.timedelta,
        group_by: str,
    ) -> Chart:
        counts = await self.queries.bucket_counts(
            dataclasses.replace(search, since=None, until=None),
            start=start,
            end=end,
            width=width,
            group_by=group_by,
        )
        return chart(counts, start=start, end=end, width=width, group_by=group_by)

    async def recent_alerts(self, limit: int = 50) -> Page:
        return await self.log.search(SearchFilter(channel=ANOMALY_CHANNEL), None, limit)

    async def detect(self) -> list[Alert]:
        """Judge the current and the previous window; append their alerts not yet in the log.
        Returns the alerts this call appended."""
        t = self.thresholds
        now = self.clock()
        current = bucket_start(now, t.window)
        evaluate = [current - t.window, current]
        baseline_start = evaluate[0] - t.window * t.baseline_windows
        kept = {s: w for s, w in self._history.items() if s >= baseline_start}
        missing = [
            baseline_start + t.window * i
            for i in range(t.baseline_windows)
            if baseline_start + t.window * i not in kept
        ]
        read_from = min(missing, default=evaluate[0])
        windows = await self.queries.agency_windows(
            start=read_from, end=current + t.window, width=t.window, hours=self.hours
        )
        fresh: dict[dt.datetime, list[AgencyWindow]] = {}
        for w in windows:
            fresh.setdefault(w.start, []).append(w)
        for start in (*missing, *evaluate):
            kept[start] = fresh.get(start, [])
        # Only windows wholly before the evaluated ones are final.
        self._history = {s: w for s, w in kept.items() if s < evaluate[0]}
        alerts = detect([w for ws in kept.values() for w in ws], evaluate, t)
        if not alerts:
            return []
        async with self.log.uow(snapshot=True) as uow:
            known = await uow.log.known_access_ids([a.alert_id for a in alerts])
        new = [a for a in alerts if a.alert_id not in known]
        if new:
            await self.log.append([a.entry() for a in new])
        return new

    async def report(
        self, agency: str, *, start: dt.datetime, end: dt.datetime, signer: checkpoint.Signer
    ) -> SignedReport:
        """The agency's counts in [start, end) from a fresh checkpoint of the log, signed."""
        head = await self.log.sign_tree_head()
        witnessed = await self.log.witnessed(head)
        rows = await self.queries.report_rows(
            agency, start=start, end=end, tree_size=head.tree_size
        )
        report = AgencyReport(
            origin=self.log.origin,
            agency=agency,
            start=start,
            end=end,
            tree_size=head.tree_size,
            root_hash=head.root_hash,
            rows=tuple(rows),
        )
        return SignedReport(report, sign(report, signer), witnessed["checkpoint"])

    async def agencies(self, *, start: dt.datetime, end: dt.datetime) -> list[str]:
        return await self.queries.agencies(start=start, end=end)
