"""Auditor API (/v1, bearer token with scope audit:read) and the citizen trail.

A NIK never travels in a URL (proxies and access logs keep URLs): a search by NIK is
`POST /v1/entries/search` with the NIK in the body; the GET routes filter by pseudonym.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from ikd_audit.bootstrap import AuditRuntime
from ikd_audit.domain.errors import BadFilter, Forbidden, Unauthenticated
from ikd_audit.domain.model import LookupAction
from ikd_audit.domain.search import SearchFilter, build_filter, check_limit
from ikd_audit.entrypoints.lookups import looked_up
from ikd_audit.service_layer.services import MAX_SIZE
from ikd_shared import codec
from ikd_shared.auth import Principal, Scope
from ikd_shared.bearer import Bearer
from ikd_shared.transparency import Entry


def get_runtime(request: Request) -> AuditRuntime:
    found: AuditRuntime = request.app.state.runtime
    return found


RuntimeDep = Annotated[AuditRuntime, Depends(get_runtime)]


bearer = Bearer(
    lambda request: get_runtime(request).tokens,
    unauthenticated=Unauthenticated,
    forbidden=Forbidden,
)
AuditorDep = Annotated[Principal, Depends(bearer.require(Scope.AUDIT_READ))]


def search_filter(
    request: Request,
    runtime: RuntimeDep,
    pseudonym: Annotated[str | None, Query(max_length=80)] = None,
    agency: Annotated[str | None, Query(max_length=64)] = None,
    service: Annotated[str | None, Query(max_length=64)] = None,
    channel: Annotated[str | None, Query(max_length=32)] = None,
    outcome: Annotated[str | None, Query(max_length=32)] = None,
    since: Annotated[str | None, Query(alias="from", max_length=64)] = None,
    until: Annotated[str | None, Query(alias="to", max_length=64)] = None,
) -> SearchFilter:
    if "nik" in request.query_params:
        # Refused rather than ignored: ignoring it would answer an unfiltered search.
        raise BadFilter(
            "a NIK never goes in a URL: POST it to /v1/entries/search",
            code="nik_not_allowed_in_url",
        )
    return build_filter(
        pseudonym_key=runtime.settings.pseudonym_key.get_secret_value().encode(),
        pseudonym=pseudonym,
        agency=agency,
        service=service,
        channel=channel,
        outcome=outcome,
        since=since,
        until=until,
    )


FilterDep = Annotated[SearchFilter, Depends(search_filter)]

CSV_COLUMNS = [
    "position",
    "access_id",
    "occurred_at",
    "recorded_at",
    "agency",
    "service",
    "pseudonym",
    "fields",
    "purpose",
    "legal_basis",
    "channel",
    "outcome",
    "reason",
]


def csv_row(entry: Entry) -> list[Any]:
    doc = entry.document()
    doc["fields"] = " ".join(entry.fields)
    return [doc[c] if doc[c] is not None else "" for c in CSV_COLUMNS]


async def csv_stream(runtime: AuditRuntime, search: SearchFilter) -> AsyncIterator[str]:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(CSV_COLUMNS)
    async for entry, _ in runtime.log.stream(search):
        writer.writerow(csv_row(entry))
        if buffer.tell() > 64 * 1024:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue()


class SearchRequest(BaseModel):
    """The filters of `GET /v1/entries`, and the NIK, which no URL may carry."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    nik: str | None = Field(
        default=None, max_length=32, description="the citizen's NIK; searched as its pseudonym"
    )
    pseudonym: str | None = Field(default=None, max_length=80)
    agency: str | None = Field(default=None, max_length=64)
    service: str | None = Field(default=None, max_length=64)
    channel: str | None = Field(default=None, max_length=32)
    outcome: str | None = Field(default=None, max_length=32)
    since: str | None = Field(default=None, alias="from", max_length=64)
    until: str | None = Field(default=None, alias="to", max_length=64)
    limit: int | None = None
    cursor: str | None = Field(default=None, max_length=1024)


class TrailRequest(BaseModel):
    credential: str = Field(
        min_length=1,
        max_length=16 * 1024,
        description="a freshly issued IKD credential for the trail purpose (compact JWS)",
    )


router = APIRouter(prefix="/v1")


@router.get("/entries", tags=["auditor"])
async def list_entries(
    runtime: RuntimeDep,
    auditor: AuditorDep,
    search: FilterDep,
    limit: Annotated[int | None, Query()] = None,
    cursor: Annotated[str | None, Query(max_length=1024)] = None,
) -> dict[str, Any]:
    """Search the log, newest first; pass `next_cursor` back as `cursor` for the next page."""
    size = check_limit(
        limit, default=runtime.settings.page_size_default, cap=runtime.settings.page_size_max
    )
    page = await runtime.log.search(search, cursor, size)
    await looked_up(runtime, auditor.client_id, LookupAction.SEARCH, search.pseudonym)
    return {"items": [e.document() for e in page.entries], "next_cursor": page.next_cursor}


@router.post("/entries/search", tags=["auditor"])
async def search_entries(
    runtime: RuntimeDep, auditor: AuditorDep, body: SearchRequest
) -> dict[str, Any]:
    """Search the log like `GET /v1/entries`, by NIK too (the NIK in the body, never in a
    URL); pass `next_cursor` back as `cursor` with the same filters for the next page."""
    search = build_filter(
        pseudonym_key=runtime.settings.pseudonym_key.get_secret_value().encode(),
        nik=body.nik,
        pseudonym=body.pseudonym,
        agency=body.agency,
        service=body.service,
        channel=body.channel,
        outcome=body.outcome,
        since=body.since,
        until=body.until,
    )
    size = check_limit(
        body.limit, default=runtime.settings.page_size_default, cap=runtime.settings.page_size_max
    )
    page = await runtime.log.search(search, body.cursor, size)
    await looked_up(runtime, auditor.client_id, LookupAction.SEARCH, search.pseudonym)
    return {
        "pseudonym": search.pseudonym,
        "items": [e.document() for e in page.entries],
        "next_cursor": page.next_cursor,
    }


@router.get("/entries/{position}", tags=["auditor"])
async def get_entry(
    runtime: RuntimeDep, auditor: AuditorDep, position: Annotated[int, Path(ge=0, le=MAX_SIZE - 1)]
) -> dict[str, Any]:
    """One entry with its inclusion proof against the latest signed tree head."""
    proof = await runtime.log.inclusion_proof(position)
    await looked_up(runtime, auditor.client_id, LookupAction.ENTRY, proof["entry"]["pseudonym"])
    return proof


@router.get("/export.csv", tags=["auditor"], response_class=StreamingResponse)
async def export_csv(
    runtime: RuntimeDep, auditor: AuditorDep, search: FilterDep
) -> StreamingResponse:
    await looked_up(runtime, auditor.client_id, LookupAction.EXPORT, search.pseudonym)
    return StreamingResponse(
        csv_stream(runtime, search),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="ikd-audit-entries.csv"'},
    )


@router.get("/stats/agencies", tags=["auditor"])
async def agency_stats(
    runtime: RuntimeDep, auditor: AuditorDep, search: FilterDep
) -> dict[str, Any]:
    """Accesses and denials per agency (the same filters as search)."""
    counts = await runtime.log.agency_counts(search)
    await looked_up(runtime, auditor.client_id, LookupAction.SEARCH, search.pseudonym)
    return {
        "agencies": [
            {"agency": c.agency, "accesses": c.accesses, "denials": c.denials} for c in counts
        ]
    }


@router.get("/log/tree-head", tags=["log"])
async def latest_tree_head(runtime: RuntimeDep, _: AuditorDep) -> dict[str, Any]:
    return (await runtime.log.latest_tree_head()).document()


@router.get("/log/public-key", tags=["log"], response_class=PlainTextResponse)
async def public_key(runtime: RuntimeDep, _: AuditorDep) -> PlainTextResponse:
    return PlainTextResponse(runtime.log.public_key_pem, media_type="application/x-pem-file")


@router.get("/log/inclusion-proof", tags=["log"])
async def inclusion_proof(
    runtime: RuntimeDep,
    auditor: AuditorDep,
    position: Annotated[int, Query(ge=0, le=MAX_SIZE - 1)],
    tree_size: Annotated[int | None, Query(ge=1, le=MAX_SIZE)] = None,
) -> dict[str, Any]:
    proof = await runtime.log.inclusion_proof(position, tree_size)
    await looked_up(runtime, auditor.client_id, LookupAction.ENTRY, proof["entry"]["pseudonym"])
    return proof


@router.get("/log/consistency-proof", tags=["log"])
async def consistency_proof(
    runtime: RuntimeDep,
    _: AuditorDep,
    first: Annotated[int, Query(ge=1, le=MAX_SIZE)],
    second: Annotated[int, Query(ge=1, le=MAX_SIZE)],
) -> dict[str, Any]:
    return await runtime.log.consistency_proof(first, second)


@router.get("/log/export", tags=["log"], response_class=StreamingResponse)
async def export_log(runtime: RuntimeDep, _: AuditorDep) -> StreamingResponse:
    """The whole log as JSON lines, for `ikd-audit verify --log`."""

    async def lines() -> AsyncIterator[bytes]:
        async for record in runtime.log.export():
            yield codec.dumps(record) + b"\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")


@router.post("/citizen/trail", tags=["citizen"])
async def citizen_trail(runtime: RuntimeDep, body: TrailRequest) -> dict[str, Any]:
    """Every access to the citizen's data, each with an inclusion proof (UU PDP right of access).

    The citizen authenticates with a freshly issued IKD credential for the trail purpose (its
    own audience: credentials for a counter or a consent are refused); each works once.
    """
    return await runtime.log.citizen_trail(body.credential)
