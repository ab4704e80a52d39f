"""Relationships for the bench's citizens, and what they cost when they end or fan out.

An agency now holds a citizen only while a relationship names one of its services, so the
bench relates its citizens to agencies the way an agency can without the citizen at a counter:
its backend registers them through its gateway (POST /v1/registrations, the gateway asks
identity with its own client). The bench's copy of the policy lets polres-cirebon's `skck` and
dinsos-cirebon's `social-assistance` take registrations; bank-bjb's services rest on consent,
which the citizen gives at an officer's desk with a fresh credential (bench/consent.py).

Two measurements:
- `last_relationship_ends`: a citizen registered at dinsos-cirebon only; once the view holds
  the fields the backend ends the registration, and the bench polls the view row every few
  milliseconds until it is gone (counted from the end request's response, as the consent purge
  is counted from the revocation's);
- `fanout`: a citizen related to N of the bench's agencies (registrations at polres-cirebon and
  dinsos-cirebon, a consent at bank-bjb); Dukcapil's update feed changes their address and the
  bench times, from the update's response, until every related view holds the new street.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from collections.abc import Sequence
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization

from bench.common import CLIENTS, LIMITS, Context, Gateway, connect
from bench.stats import latency_summary
from bench.verify import ISSUER, KID
from ikd_dev.issuer import mint_credential
from ikd_shared.credentials import Purpose
from ikd_shared.events.profile_v1 import CitizenProfile

POLL = 0.002
REGISTRABLE = {"polres-cirebon": "skck", "dinsos-cirebon": "social-assistance"}
"""The service of each bench agency that takes registrations in the bench's policy."""
CONSENTED = ("bank-bjb", "bjb-savings-account", "account-opening")
CONSENTED_FIELDS = ["full_name", "date_of_birth", "address.street", "address.village"]
IN_FLIGHT = 16


def backend(gateway: Gateway) -> str:
    return f"backend-{gateway.code}"


async def register(
    ctx: Context, gateway: Gateway, niks: Sequence[str], *, in_flight: int = IN_FLIGHT
) -> list[str]:
    """Register each citizen for the gateway's registrable service; the relationship ids."""
    token = await ctx.token(backend(gateway), fresh=True)
    service = REGISTRABLE[gateway.name]
    ids: list[str] = [""] * len(niks)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(len(niks)):
        queue.put_nowait(index)
    async with httpx.AsyncClient(
        base_url=gateway.url,
        timeout=60,
        limits=LIMITS,
        headers={"Authorization": f"Bearer {token}"},
    ) as http:

        async def worker() -> None:
            while not queue.empty():
                index = queue.get_nowait()
                response = await http.post(
                    "/v1/registrations",
                    json={
                        "nik": niks[index],
                        "service": service,
                        "legal_reference": "benchmark registration",
                    },
                )
                if response.status_code != 201:
                    raise RuntimeError(
                        f"registration at {gateway.name}: {response.status_code} {response.text}"
                    )
                ids[index] = response.json()["relationship"]["relationship_id"]

        await asyncio.gather(*(worker() for _ in range(in_flight)))
    return ids


async def relate(ctx: Context, niks: Sequence[str]) -> dict[str, Any]:
    """Register the citizens at every bench agency that takes registrations; wait until their
    views hold them all."""
    took = {}
    for name in REGISTRABLE:
        gateway = ctx.gateway(name)
        started = time.time()
        await register(ctx, gateway, niks)
        took[name] = time.time() - started
    pseudonyms = [ctx.pseudonym(nik) for nik in niks]
    for name in REGISTRABLE:
        connection = await connect(ctx.gateway(name).dsn)
        try:
            deadline = time.time() + max(120.0, len(niks) / 20)
            while True:
                held = await connection.fetchval(
                    "SELECT count(*) FROM citizen_view WHERE pseudonym = ANY($1::text[])"
                    " AND verified_at IS NOT NULL",  # a version floor holds no one
                    pseudonyms,
                )
                if held == len(pseudonyms):
                    break
                if time.time() > deadline:
                    raise TimeoutError(f"{name} holds {held} of {len(pseudonyms)} registered")
                await asyncio.sleep(0.5)
        finally:
            await connection.close()
    return {
        "citizens": len(niks),
        "registrations_per_second": {
            name: len(niks) / seconds for name, seconds in took.items() if seconds
        },
    }


async def _row(connection: Any, pseudonym: str) -> dict[str, Any] | None:
    raw = await connection.fetchval(  # a version floor (no verification, not erased) is no row
        "SELECT data FROM citizen_view"
        " WHERE pseudonym = $1 AND (verified_at IS NOT NULL OR erased)",
        pseudonym,
    )
    if raw is None:
        return None
    return dict(json.loads(raw) if isinstance(raw, str) else raw)


async def _poll(connection: Any, pseudonym: str, done: Any, within: float, what: str) -> float:
    """Wall time of the first poll at which `done(row)` holds."""
    deadline = time.time() + within
    while time.time() < deadline:
        issued = time.time()
        if done(await _row(connection, pseudonym)):
            return issued
        await asyncio.sleep(POLL)
    raise TimeoutError(f"{what} of {pseudonym[:12]} not seen within {within} s")


async def last_relationship_ends(ctx: Context, niks: Sequence[str]) -> dict[str, Any]:
    """Register each citizen at dinsos-cirebon (their only relationship there), wait until the
    view holds them, end the registration, time until the row is purged."""
    dinsos = ctx.gateway("dinsos-cirebon")
    token = await ctx.token(backend(dinsos), fresh=True)
    view = await connect(dinsos.dsn)
    register_to_view: list[float] = []
    end_to_purged: list[float] = []
    try:
        async with httpx.AsyncClient(
            base_url=dinsos.url, timeout=30, headers={"Authorization": f"Bearer {token}"}
        ) as http:
            for nik in niks:
                pseudonym = ctx.pseudonym(nik)
                response = await http.post(
                    "/v1/registrations",
                    json={
                        "nik": nik,
                        "service": REGISTRABLE[dinsos.name],
                        "legal_reference": "benchmark registration",
                    },
                )
                response.raise_for_status()
                registered = time.time()
                relationship = response.json()["relationship"]["relationship_id"]
                seen = await _poll(view, pseudonym, bool, 30, "registration")
                register_to_view.append(seen - registered)
                response = await http.post(f"/v1/registrations/{relationship}/end")
                response.raise_for_status()
                ended = time.time()
                gone = await _poll(view, pseudonym, lambda row: row is None, 30, "purge")
                end_to_purged.append(gone - ended)
    finally:
        await view.close()
    return {
        "repetitions": len(niks),
        "view": dinsos.name,
        "end_to_purged": latency_summary(end_to_purged),
        "register_to_view": latency_summary(register_to_view),
    }


async def _consent(ctx: Context, http: httpx.AsyncClient, profile: CitizenProfile) -> None:
    """The citizen consents to bank-bjb at the officer's desk with a fresh credential."""
    key: Any = serialization.load_pem_private_key(ctx.issuer_key.read_bytes(), password=None)
    agency, service, purpose = CONSENTED
    response = await http.post(
        f"{ctx.identity_url}/v1/consents",
        json={
            "credential": mint_credential(
                key, kid=KID, issuer=ISSUER, purpose=Purpose.CONSENT, profile=profile
            ),
            "agency": ctx.gateway(agency).code,
            "service": service,
            "fields": CONSENTED_FIELDS,
            "purpose_code": purpose,
            "purpose_text": "benchmark: an update's fan-out",
            "expires_at": (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat(),
        },
    )
    response.raise_for_status()


async def fanout(
    ctx: Context, citizens: Sequence[CitizenProfile], *, sizes: Sequence[int]
) -> dict[str, Any]:
    """Per N in `sizes`: an address update of a citizen related to N agencies, from the feed's
    response until every related view holds it. `citizens` needs len(sizes) * k profiles."""
    order = [*REGISTRABLE, CONSENTED[0]]
    per_size = len(citizens) // len(sizes)
    officer = await ctx.token(CLIENTS["officer"], fresh=True)
    feed = await ctx.token(CLIENTS["feed"], fresh=True)
    views = {name: await connect(ctx.gateway(name).dsn) for name in order}
    result: dict[str, Any] = {"per_size": {}, "repetitions": per_size}
    try:
        async with httpx.AsyncClient(timeout=30) as http:
            for position, size in enumerate(sizes):
                related = order[:size]
                batch = citizens[position * per_size : (position + 1) * per_size]
                for name in related:
                    if name in REGISTRABLE:
                        await register(ctx, ctx.gateway(name), [p.nik for p in batch], in_flight=4)
                    else:
                        officer_http = httpx.AsyncClient(
                            timeout=30, headers={"Authorization": f"Bearer {officer}"}
                        )
                        async with officer_http:
                            for profile in batch:
                                await _consent(ctx, officer_http, profile)
                all_views: list[float] = []
                per_view: dict[str, list[float]] = {name: [] for name in related}
                for number, profile in enumerate(batch):
                    pseudonym = ctx.pseudonym(profile.nik)
                    for name in related:  # held before the update
                        await _poll(views[name], pseudonym, bool, 60, f"{name} relationship")
                    street = f"Jl. Fan-out {size}-{number}"
                    response = await http.post(
                        f"{ctx.identity_url}/v1/feed/updates",
                        headers={"Authorization": f"Bearer {feed}"},
                        json={
                            "kind": "profile_update",
                            "nik": profile.nik,
                            "changes": {"address": {"street": street}},
                        },
                    )
                    response.raise_for_status()
                    updated = time.time()

                    def holds(row: dict[str, Any] | None, street: str = street) -> bool:
                        return row is not None and row.get("address.street") == street

                    # Every related view polled at once, each on its own connection.
                    seen = await asyncio.gather(
                        *(
                            _poll(views[name], pseudonym, holds, 30, f"{name} update")
                            for name in related
                        )
                    )
                    for name, at in zip(related, seen, strict=True):
                        per_view[name].append(at - updated)
                    all_views.append(max(seen) - updated)
                result["per_size"][str(size)] = {
                    "agencies": related,
                    "update_to_all_views": latency_summary(all_views),
                    "per_view": {name: latency_summary(v) for name, v in per_view.items()},
                }
    finally:
        for connection in views.values():
            await connection.close()
    return result
