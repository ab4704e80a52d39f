"""The auditor console: server-rendered pages behind a signed, HttpOnly session cookie.

An auditor signs in with a client id and secret (`ikd-audit auditors add`); secrets are stored
as argon2 hashes and checked in constant time, unknown ids included. Failures are throttled per
(id, client address) and per address, in the database for every replica (ikd_shared.throttle):
someone failing with an auditor's id slows only their own address, never the auditor. Behind a
reverse proxy the client address comes from X-Forwarded-For when the proxy is trusted
(IKD_AUDIT_TRUSTED_PROXIES).
"""

from __future__ import annotations

import asyncio
import json
import math
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlencode

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from fastapi.templating import Jinja2Templates

from ikd_audit.bootstrap import AuditRuntime
from ikd_audit.domain.errors import AuditError
from ikd_audit.domain.model import LookupAction
from ikd_audit.domain.search import CHANNELS, OUTCOMES, SearchFilter, build_filter, check_limit
from ikd_audit.entrypoints.api import RuntimeDep, csv_stream
from ikd_audit.entrypoints.lookups import looked_up
from ikd_shared import merkle, transparency
from ikd_shared.throttle import Throttled

HERE = Path(__file__).resolve().parent.parent
templates = Jinja2Templates(directory=HERE / "templates")
hasher = PasswordHasher()
_DUMMY_HASH = hasher.hash(secrets.token_urlsafe(16))

router = APIRouter(prefix="/console", include_in_schema=False)

FILTER_NAMES = ("nik", "pseudonym", "agency", "service", "channel", "outcome", "from", "to")
# What a URL may carry: everything but the NIK, which only the posted form takes.
URL_FILTERS = FILTER_NAMES[1:]
NIK_IN_URL = "Search by NIK with the form: a NIK is never put in a URL (nik_not_allowed_in_url)"


def hash_secret(secret: str) -> str:
    return hasher.hash(secret)


def check_secret(stored: str | None, secret: str) -> bool:
    try:
        return hasher.verify(stored or _DUMMY_HASH, secret) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = secrets.token_urlsafe(24)
        request.session["csrf"] = token
    return token


def current_auditor(request: Request) -> str | None:
    value = request.session.get("auditor")
    return value if isinstance(value, str) else None


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    context.update(auditor=current_auditor(request), csrf=csrf_token(request))
    return templates.TemplateResponse(request, name, context, status_code=status_code)


def to_login() -> RedirectResponse:
    return RedirectResponse("/console/login", status_code=303)


def _zoned(value: str | None) -> str | None:
    # <input type=datetime-local> has no zone; the console labels its times as UTC.
    if value and len(value) <= 19 and "+" not in value and not value.endswith("Z"):
        return value + "Z"
    return value


def csrf_ok(request: Request, csrf: str) -> bool:
    expected = request.session.get("csrf")
    return isinstance(expected, str) and secrets.compare_digest(csrf, expected)


def filter_from(runtime: AuditRuntime, values: Mapping[str, str | None]) -> SearchFilter:
    """The search filter from console form or query values (FILTER_NAMES); AuditError if bad."""
    return build_filter(
        pseudonym_key=runtime.settings.pseudonym_key.get_secret_value().encode(),
        nik=values.get("nik"),
        pseudonym=values["pseudonym"],
        agency=values["agency"],
        service=values["service"],
        channel=values["channel"],
        outcome=values["outcome"],
        since=_zoned(values["from"]),
        until=_zoned(values["to"]),
    )


def search_page(
    request: Request, params: Mapping[str, str | None], status_code: int = 200, **context: Any
) -> HTMLResponse:
    """search.html: no results unless `context` gives them."""
    page: dict[str, Any] = {
        "params": {k: v or "" for k, v in params.items()},
        "channels": CHANNELS,
        "outcomes": OUTCOMES,
        "entries": [],
        "next_url": None,
        "counts": [],
        "query": "",
        "error": None,
        "searched": True,
    }
    page.update(context)
    return render(request, "search.html", status_code, **page)


@router.get("/login", response_class=HTMLResponse)
async def login_form(request: Request) -> HTMLResponse:
    return render(request, "login.html")


@router.post("/login", response_class=HTMLResponse)
async def login(
    request: Request,
    runtime: RuntimeDep,
    client_id: Annotated[str, Form(max_length=64)],
    secret: Annotated[str, Form(max_length=256)],
    csrf: Annotated[str, Form(max_length=64)] = "",
) -> Response:
    if not csrf_ok(request, csrf):
        return render(request, "login.html", 400, error="The form expired; please try again.")
    address = request.client.host if request.client else "unknown"
    try:
        attempt = await runtime.login_throttle.begin(client_id, address)
    except Throttled as locked:
        minutes = math.ceil(locked.retry_after_seconds / 60)
        response = render(
            request,
            "login.html",
            429,
            error="Too many failed sign-in attempts. "
            f"Please try again in {minutes} minute{'s' if minutes != 1 else ''}.",
        )
        response.headers["Retry-After"] = str(locked.retry_after_seconds)
        return response
    stored = await runtime.auditors.secret_hash(client_id)
    if not await asyncio.to_thread(check_secret, stored, secret):
        return render(request, "login.html", 401, error="Unknown client id or wrong secret.")
    await runtime.login_throttle.succeeded(attempt)
    request.session.clear()
    request.session["auditor"] = client_id
    return RedirectResponse("/console/search", status_code=303)


@router.post("/logout")
async def logout(request: Request, csrf: Annotated[str, Form(max_length=64)] = "") -> Response:
    if csrf_ok(request, csrf):
        request.session.clear()
    return to_login()


@router.get("", include_in_schema=False)
@router.get("/", include_in_schema=False)
async def home(request: Request) -> Response:
    return RedirectResponse("/console/search", status_code=303)


@router.get("/search", response_class=HTMLResponse)
async def search(request: Request, runtime: RuntimeDep) -> Response:
    auditor = current_auditor(request)
    if auditor is None:
        return to_login()
    params = {name: request.query_params.get(name) for name in URL_FILTERS}
    if "nik" in request.query_params:
        return search_page(request, params, 400, error=NIK_IN_URL)
    searched = any(params.values()) or "go" in request.query_params
    try:
        search_filter = filter_from(runtime, params)
        limit = check_limit(
            None, default=runtime.settings.page_size_default, cap=runtime.settings.page_size_max
        )
        page = await runtime.log.search(search_filter, request.query_params.get("cursor"), limit)
        counts = await runtime.log.agency_counts(search_filter)
        await looked_up(runtime, auditor, LookupAction.SEARCH, search_filter.pseudonym)
    except AuditError as error:
        return search_page(
            request,
            params,
            error.status_code,
            query=request.url.query,
            searched=searched,
            error=f"{error.detail} ({error.code})",
        )
    kept = [(k, v) for k, v in request.query_params.multi_items() if k != "cursor"]
    next_url = None
    if page.next_cursor:
        next_url = f"/console/search?{urlencode([*kept, ('cursor', page.next_cursor)])}"
    return search_page(
        request,
        params,
        entries=page.entries,
        counts=counts,
        query=urlencode(kept),
        next_url=next_url,
        searched=searched,
    )


@router.post("/search", response_class=HTMLResponse)
async def search_by_form(
    request: Request, runtime: RuntimeDep, csrf: Annotated[str, Form(max_length=64)] = ""
) -> Response:
    """The form posts (a NIK must not sit in a URL); answer with a redirect to the results."""
    if current_auditor(request) is None or not csrf_ok(request, csrf):
        return to_login()
    form = await request.form()
    values = {name: str(form.get(name) or "") for name in FILTER_NAMES}
    try:
        search_filter = filter_from(runtime, values)
    except AuditError as error:
        values["nik"] = ""
        return search_page(
            request, values, error.status_code, error=f"{error.detail} ({error.code})"
        )
    values.pop("nik")
    values["pseudonym"] = search_filter.pseudonym or ""
    query = urlencode([(k, v) for k, v in values.items() if v] + [("go", "1")])
    return RedirectResponse(f"/console/search?{query}", status_code=303)


@router.get("/export.csv")
async def export(request: Request, runtime: RuntimeDep) -> Response:
    auditor = current_auditor(request)
    if auditor is None:
        return to_login()
    if "nik" in request.query_params:
        return Response(NIK_IN_URL, status_code=400)
    try:
        search_filter = filter_from(
            runtime, {name: request.query_params.get(name) for name in URL_FILTERS}
        )
    except AuditError as error:
        return Response(f"{error.detail} ({error.code})", status_code=error.status_code)
    await looked_up(runtime, auditor, LookupAction.EXPORT, search_filter.pseudonym)
    return StreamingResponse(
        csv_stream(runtime, search_filter),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="ikd-audit-entries.csv"'},
    )


@router.get("/entries/{position}", response_class=HTMLResponse)
async def entry(request: Request, runtime: RuntimeDep, position: int) -> Response:
    auditor = current_auditor(request)
    if auditor is None:
        return to_login()
    try:
        proof = await runtime.log.inclusion_proof(position)
    except AuditError as error:
        return render(request, "error.html", error.status_code, error=error.detail)
    await looked_up(runtime, auditor, LookupAction.ENTRY, proof["entry"]["pseudonym"])
    try:
        server_verdict = transparency.verify_inclusion_bundle(proof, runtime.log.public_key)
        server_ok = True
    except (merkle.ProofError, ValueError) as error:
        server_verdict, server_ok = f"FAILED: {error}", False
    return render(
        request,
        "entry.html",
        entry=proof["entry"],
        proof=proof,
        proof_json=json.dumps(proof),
        server_ok=server_ok,
        server_verdict=server_verdict,
        witnessed=await runtime.log.witnessed(
            transparency.TreeHead.from_document(proof["tree_head"])
        ),
    )


@router.get("/integrity", response_class=HTMLResponse)
async def integrity(request: Request, runtime: RuntimeDep) -> Response:
    if current_auditor(request) is None:
        return to_login()
    status = await runtime.log.integrity()
    return render(
        request,
        "integrity.html",
        status=status,
        key_id=runtime.log.key_id,
        public_key=runtime.log.public_key_pem,
        witnessed=await runtime.log.witnessed(status.latest) if status.latest else {},
    )
