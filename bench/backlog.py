"""Purge after a relationship ends, or a consent is revoked, while a bulk feed is consumed.

Beforehand, a few citizens are registered at dinsos-cirebon (their only relationship there)
and held in its view, and a few others consent to bank-bjb (bench/consent.py's fields), held
in bank-bjb's view. Per run, Dukcapil's bulk feed sends N new citizens through identity
(bench/bulk.py's requests); as soon as identity has committed them all, and the workers are
behind by most of them, dinsos's backend ends some registrations and the MPP officer revokes
one consent, all at once. Each citizen's view row is polled every 20 ms on a connection of its
own until it is gone (dinsos) or holds none of the consented fields (bank-bjb). The latency
counts from identity's transaction of the end or revocation (its outbox row's `created_at`:
the transaction's start, a little before its commit, so the figure errs high) to the first
poll that sees the purge. The backlog at that moment is N minus the feed's records dinsos's
worker had applied by then (`processed_events.processed_at`).
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

from bench import bulk
from bench.common import CLIENTS, LIMITS, Context, connect, count
from bench.consent import FIELDS, PURPOSES
from bench.relate import backend, register
from bench.stats import latency_summary
from bench.verify import ISSUER, KID
from ikd_dev.issuer import mint_credential
from ikd_shared.credentials import Purpose
from ikd_shared.events.profile_v1 import CitizenProfile

POLL = 0.02
AGENCY = "dinsos-cirebon"
BANK = "bank-bjb"
SERVICE = "bjb-savings-account"


def _credential(ctx: Context, profile: CitizenProfile) -> str:
    """What the citizen's IKD app presents at the desk: fresh, for the consent purpose."""
    key: Any = serialization.load_pem_private_key(ctx.issuer_key.read_bytes(), password=None)
    return mint_credential(key, kid=KID, issuer=ISSUER, purpose=Purpose.CONSENT, profile=profile)


async def prepare_consents(ctx: Context, profiles: Sequence[CitizenProfile]) -> list[str]:
    """Each citizen consents to bank-bjb; wait until its view holds the fields; consent ids."""
    bank = ctx.gateway(BANK)
    token = await ctx.token(CLIENTS["officer"], fresh=True)
    ids = []
    async with httpx.AsyncClient(
        timeout=30, limits=LIMITS, headers={"Authorization": f"Bearer {token}"}
    ) as http:
        for profile in profiles:
            response = await http.post(
                f"{ctx.identity_url}/v1/consents",
                json={
                    "credential": _credential(ctx, profile),
                    "agency": bank.code,
                    "service": SERVICE,
                    "fields": FIELDS,
                    "purpose_code": PURPOSES[SERVICE],
                    "purpose_text": "benchmark: revocation under a backlog",
                    "expires_at": (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat(),
                },
            )
            response.raise_for_status()
            ids.append(str(response.json()["consent"]["consent_id"]))
    for profile in profiles:
        await _purged(bank.dsn, ctx.pseudonym(profile.nik), within=120, held=True)
    return ids


async def prepare(ctx: Context, niks: Sequence[str]) -> list[str]:
    """Register the citizens at dinsos; wait until its view holds them; the relationship ids."""
    gateway = ctx.gateway(AGENCY)
    ids = await register(ctx, gateway, niks, in_flight=4)
    pseudonyms = [ctx.pseudonym(nik) for nik in niks]
    deadline = time.time() + 120
    while await count(
        gateway.dsn,
        "SELECT count(*) FROM citizen_view WHERE pseudonym = ANY($1::text[])"
        " AND (verified_at IS NOT NULL OR erased)",  # a version floor holds no one
        pseudonyms,
    ) < len(niks):
        if time.time() > deadline:
            raise TimeoutError(f"{AGENCY} does not hold the citizens registered for the purge")
        await asyncio.sleep(0.5)
    return ids


async def _purged(
    dsn: str, pseudonym: str, within: float, *, held: bool = False, row: bool = False
) -> float:
    """Wall time of the first poll that finds a row without any consented field (`row`: no
    row of the citizen at all; `held`: a row with all of them)."""
    connection = await connect(dsn)
    try:
        deadline = time.time() + within
        while time.time() < deadline:
            issued = time.time()
            raw = await connection.fetchval(
                # the version floor an ended relationship leaves (no data) is no row
                "SELECT data FROM citizen_view"
                " WHERE pseudonym = $1 AND (verified_at IS NOT NULL OR erased)",
                pseudonym,
            )
            data = {} if raw is None else dict(json.loads(raw) if isinstance(raw, str) else raw)
            if row:
                done = raw is None
            elif held:
                done = all(name in data for name in FIELDS)
            else:
                done = not any(name in data for name in FIELDS)
            if done:
                return issued
            await asyncio.sleep(POLL)
    finally:
        await connection.close()
    what = "consented fields" if held else "purge"
    raise TimeoutError(f"{what} of {pseudonym[:12]} not seen within {within:.0f} s")


async def run_once(
    ctx: Context,
    *,
    run: int,
    n: int,
    first: int,
    ended: Sequence[tuple[str, str]],  # (nik, relationship id) of citizens held by dinsos
    revoked: Sequence[tuple[CitizenProfile, str]],  # (citizen, consent id) held by bank-bjb
) -> dict[str, Any]:
    gateway = ctx.gateway(AGENCY)
    payloads = bulk.bodies(run, n, first)
    base = await count(ctx.identity_dsn, "SELECT coalesce(max(position), 0) FROM outbox")
    t0 = time.time()
    fed = await bulk._feed(ctx, payloads)  # returns once identity committed every profile
    token = await ctx.token(backend(gateway), fresh=True)
    officer = await ctx.token(CLIENTS["officer"], fresh=True)
    bank = ctx.gateway(BANK)
    within = max(120.0, n / 20)
    async with httpx.AsyncClient(timeout=30, limits=LIMITS) as http:

        async def end(nik: str, relationship: str) -> float:
            # first poll only after the end is committed: the row is there until then
            response = await http.post(
                f"{gateway.url}/v1/registrations/{relationship}/end",
                headers={"Authorization": f"Bearer {token}"},
            )
            response.raise_for_status()
            return await _purged(gateway.dsn, ctx.pseudonym(nik), within, row=True)

        async def revoke(profile: CitizenProfile, consent: str) -> float:
            response = await http.post(
                f"{ctx.identity_url}/v1/consents/{consent}/revoke",
                headers={"Authorization": f"Bearer {officer}"},
                json={"credential": _credential(ctx, profile)},
            )
            response.raise_for_status()
            return await _purged(bank.dsn, ctx.pseudonym(profile.nik), within)

        gone = await asyncio.gather(
            *(end(nik, rid) for nik, rid in ended), *(revoke(p, cid) for p, cid in revoked)
        )
    pseudonyms = [ctx.pseudonym(nik) for nik, _ in ended]
    consented = [ctx.pseudonym(p.nik) for p, _ in revoked]
    identity = await connect(ctx.identity_dsn)
    try:
        rows = await identity.fetch(
            """SELECT key, max(created_at) AS at FROM outbox
               WHERE position > $1 AND key = ANY($2::text[]) GROUP BY key""",
            base,
            pseudonyms + consented,
        )
    finally:
        await identity.close()
    committed = {row["key"]: row["at"].timestamp() for row in rows}
    missing = [p[:12] for p in pseudonyms + consented if p not in committed]
    if missing:
        raise RuntimeError(f"no outbox row of the end for {', '.join(missing)}")
    latencies = [at - committed[p] for p, at in zip(pseudonyms, gone, strict=False)]
    revocations = [
        at - committed[p] for p, at in zip(consented, gone[len(pseudonyms) :], strict=True)
    ]
    view = await connect(gateway.dsn)
    try:
        backlog = []
        for pseudonym in pseudonyms:
            applied = await view.fetchval(
                """SELECT count(*) FROM processed_events
                   WHERE processed_at >= to_timestamp($1) AND processed_at <= to_timestamp($2)""",
                t0 - 1,
                committed[pseudonym],
            )
            backlog.append(n - int(applied))
    finally:
        await view.close()
    summary = latency_summary(latencies)
    return {
        "feed_events": n,
        "feed_seconds": fed - t0,
        "ended": len(ended),
        "backlog_at_end": min(backlog),
        "backlog_at_end_max": max(backlog),
        "median_s": summary["p50_ms"] / 1000,
        "max_s": summary["max_ms"] / 1000,
        "latencies": summary,
        "revoked": len(revoked),
        "consent_max_s": max(revocations) if revocations else None,
        "consent_latencies": latency_summary(revocations) if revocations else None,
    }
