"""Who accesses what over time: the statistics API (scope audit:read) and the console's
patterns page (charts drawn on the server, the latest anomaly alerts)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from ikd_audit.bootstrap import AuditRuntime
from ikd_audit.domain.errors import AuditError, BadFilter
from ikd_audit.domain.model import LookupAction
from ikd_audit.domain.patterns import GROUPS, Chart, bucket_start, parse_bucket
from ikd_audit.domain.search import SearchFilter, check_limit
from ikd_audit.entrypoints import charts
from ikd_audit.entrypoints.api import AuditorDep, FilterDep, RuntimeDep
from ikd_audit.entrypoints.console import current_auditor, filter_from, render, to_login
from ikd_audit.entrypoints.lookups import looked_up
from ikd_shared.transparency import Entry, format_time

DEFAULT_PERIOD = dt.timedelta(days=7)
DEFAULT_BUCKET = "1h"

router = APIRouter(prefix="/v1")
console_router = APIRouter(prefix="/console", include_in_schema=False)


def _group(value: str) -> str:
    if value not in GROUPS:
        raise BadFilter(f"group_by must be one of {list(GROUPS)}", code="invalid_group_by")
    return value


async def _chart(runtime: AuditRuntime, search: SearchFilter, bucket: str, group_by: str) -> Chart:
    width = parse_bucket(bucket)
    end = search.until or runtime.log.clock()
    try:
        start = search.since or end - DEFAULT_PERIOD
        bucket_start(end, width) + width  # the last bucket's end must be a time too
    except OverflowError:
        raise BadFilter("the period lies outside the calendar", code="invalid_time") from None
    return await runtime.patterns.chart(
        search, start=start, end=end, width=width, group_by=_group(group_by)
    )


def chart_document(chart: Chart) -> dict[str, Any]:
    return {
        "from": format_time(chart.start),
        "to": format_time(chart.end),
        "bucket_seconds": int(chart.width.total_seconds()),
        "group_by": chart.group_by,
        "buckets": [format_time(b) for b in chart.buckets],
        "series": [
            {"key": s.key, "accesses": s.accesses, "denials": s.denials, "total": s.total}
            for s in chart.series
        ],
    }


@router.get("/stats/accesses", tags=["auditor"])
async def access_stats(
    runtime: RuntimeDep,
    auditor: AuditorDep,
    search: FilterDep,
    bucket: Annotated[str, Query(max_length=8, description="15m, 1h, 1d, ...")] = DEFAULT_BUCKET,
    group_by: Annotated[
        str, Query(max_length=16, description="agency, service, channel, legal_basis, outcome")
    ] = "agency",
) -> dict[str, Any]:
    """Accesses and denials per bucket of time and per group (the same filters as search;
    anomaly alerts are not counted). `from` defaults to a week before `to`, `to` to now;
    the buckets are aligned to UTC."""
    chart = await _chart(runtime, search, bucket, group_by)
    await looked_up(runtime, auditor.client_id, LookupAction.SEARCH, search.pseudonym)
    return chart_document(chart)


@router.get("/anomalies", tags=["auditor"])
async def anomalies(
    runtime: RuntimeDep, _: AuditorDep, limit: Annotated[int | None, Query()] = None
) -> dict[str, Any]:
    """The latest access-pattern alerts, newest first: log entries of channel `anomaly`
    (`purpose` is the kind of alert, `reason` its numbers); each has an inclusion proof at
    `GET /v1/entries/{position}`."""
    size = check_limit(
        limit, default=runtime.settings.page_size_default, cap=runtime.settings.page_size_max
    )
    page = await runtime.patterns.recent_alerts(size)
    return {"items": [e.document() for e in page.entries]}


def _alert_buckets(alerts: list[Entry], chart: Chart) -> list[dt.datetime]:
    return [bucket_start(a.occurred_at, chart.width) for a in alerts]


@console_router.get("/patterns", response_class=HTMLResponse)
async def patterns_page(request: Request, runtime: RuntimeDep) -> Response:
    auditor = current_auditor(request)
    if auditor is None:
        return to_login()
    q = request.query_params
    params = {
        "from": q.get("from") or "",
        "to": q.get("to") or "",
        "agency": q.get("agency") or "",
        "service": q.get("service") or "",
        "bucket": q.get("bucket") or DEFAULT_BUCKET,
        "group_by": q.get("group_by") or "agency",
    }
    page: dict[str, Any] = {"params": params, "groups": GROUPS, "error": None, "chart": None}
    alerts = (await runtime.patterns.recent_alerts(50)).entries
    page["alerts"] = alerts
    try:
        search = filter_from(
            runtime,
            {
                "pseudonym": None,
                "agency": params["agency"],
                "service": params["service"],
                "channel": None,
                "outcome": None,
                "from": params["from"],
                "to": params["to"],
            },
        )
        chart = await _chart(runtime, search, params["bucket"], params["group_by"])
    except AuditError as error:
        page["error"] = f"{error.detail} ({error.code})"
        return render(request, "patterns.html", error.status_code, **page)
    marks = _alert_buckets([a for a in alerts if search.agency in (None, a.agency)], chart)
    page.update(
        chart=chart,
        accesses_svg=charts.svg(
            chart, "accesses", chart_id="chart-accesses", title="Accesses", alerts=marks
        ),
        denials_svg=charts.svg(
            chart, "denials", chart_id="chart-denials", title="Denials", alerts=marks
        ),
        accesses_lines=charts.lines(chart, "accesses"),
        denials_lines=charts.lines(chart, "denials"),
    )
    return render(request, "patterns.html", **page)
