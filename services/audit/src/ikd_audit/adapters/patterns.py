"""Access-pattern queries: counts per bucket, per agency window and per report, in SQL.

Read-only: each query runs in its own read-only transaction on a pooled connection, beside the
appends (it takes no lock, so it never holds the log up). `domain.patterns` counts the same in
Python; the integration tests hold the two to agreeing.
"""
# ruff: noqa: S608  -- SQL is built from constant column names and $n placeholders only

from __future__ import annotations

import datetime as dt
from typing import Any

import asyncpg

from ikd_audit.adapters.repository import _where
from ikd_audit.domain.model import AUDITOR_CHANNEL
from ikd_audit.domain.patterns import (
    ANOMALY_CHANNEL,
    GROUPS,
    LOOKUP_CHANNELS,
    NOT_FOUND,
    STAFF_CHANNELS,
    AgencyWindow,
    BucketCount,
    OpeningHours,
    ReportRow,
)
from ikd_audit.domain.search import SearchFilter

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


class PgPatternQueries:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    async def _fetch(self, sql: str, *params: Any) -> list[asyncpg.Record]:
        async with self.pool.acquire() as conn, conn.transaction(readonly=True):
            rows: list[asyncpg.Record] = await conn.fetch(sql, *params)
            return rows

    async def bucket_counts(
        self,
        search: SearchFilter,
        *,
        start: dt.datetime,
        end: dt.datetime,
        width: dt.timedelta,
        group_by: str,
    ) -> list[BucketCount]:
        if group_by not in GROUPS:
            raise ValueError(f"cannot group by {group_by!r}")
        params: list[Any] = [width, EPOCH, start, end, ANOMALY_CHANNEL]
        where = _where(search, params)
        rows = await self._fetch(
            f"SELECT date_bin($1::interval, occurred_at, $2::timestamptz) AS bucket, "
            f"{group_by} AS key, count(*) AS accesses, "
            "count(*) FILTER (WHERE outcome = 'denied') AS denials FROM log_entry "
            f"WHERE occurred_at >= $3 AND occurred_at < $4 AND channel <> $5 AND {where} "
            "GROUP BY 1, 2 ORDER BY 1, 2",
            *params,
        )
        return [BucketCount(r["bucket"], r["key"], r["accesses"], r["denials"]) for r in rows]

    async def agency_windows(
        self,
        *,
        start: dt.datetime,
        end: dt.datetime,
        width: dt.timedelta,
        hours: OpeningHours,
    ) -> list[AgencyWindow]:
        opens, closes = hours.bounds()
        rows = await self._fetch(
            "SELECT agency, date_bin($1::interval, occurred_at, $2::timestamptz) AS start, "
            "count(*) FILTER (WHERE channel = ANY($5::text[])) AS lookups, "
            "count(*) FILTER (WHERE outcome = 'denied') AS denials, "
            "count(*) FILTER (WHERE outcome = 'denied' AND reason = $6) AS not_found, "
            "count(*) FILTER (WHERE channel = ANY($7::text[]) AND NOT ("
            "  l.minute >= ($9::int[])[l.dow] AND l.minute < ($10::int[])[l.dow])) AS off_hours "
            "FROM log_entry CROSS JOIN LATERAL ("
            "  SELECT extract(isodow FROM occurred_at AT TIME ZONE $8)::int AS dow, "
            "  (extract(hour FROM occurred_at AT TIME ZONE $8) * 60 "
            "   + extract(minute FROM occurred_at AT TIME ZONE $8))::int AS minute) AS l "
            "WHERE occurred_at >= $3 AND occurred_at < $4 AND channel <> ALL($11::text[]) "
            "GROUP BY 1, 2 ORDER BY 1, 2",
            width,
            EPOCH,
            start,
            end,
            list(LOOKUP_CHANNELS),
            NOT_FOUND,
            list(STAFF_CHANNELS),
            hours.zone,
            opens,
            closes,
            [ANOMALY_CHANNEL, AUDITOR_CHANNEL],
        )
        return [
            AgencyWindow(
                r["agency"], r["start"], r["lookups"], r["denials"], r["not_found"], r["off_hours"]
            )
            for r in rows
        ]

    async def report_rows(
        self, agency: str, *, start: dt.datetime, end: dt.datetime, tree_size: int
    ) -> list[ReportRow]:
        rows = await self._fetch(
            "SELECT service, channel, legal_basis, outcome, count(*) AS n FROM log_entry "
            "WHERE agency = $1 AND position < $2 AND occurred_at >= $3 AND occurred_at < $4 "
            "GROUP BY 1, 2, 3, 4",
            agency,
            tree_size,
            start,
            end,
        )
        return [
            ReportRow(r["service"], r["channel"], r["legal_basis"], r["outcome"], r["n"])
            for r in rows
        ]

    async def agencies(self, *, start: dt.datetime, end: dt.datetime) -> list[str]:
        rows = await self._fetch(
            "SELECT DISTINCT agency FROM log_entry WHERE occurred_at >= $1 AND occurred_at < $2 "
            "AND channel <> ALL($3::text[]) ORDER BY 1",
            start,
            end,
            [ANOMALY_CHANNEL, AUDITOR_CHANNEL],
        )
        return [r["agency"] for r in rows]
