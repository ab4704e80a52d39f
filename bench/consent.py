"""Consent revocation to purge, per view.

For each repetition a citizen of the first bulk run gets a consent for one of bank-bjb's
consent-based services (alternating between them), given at an MPP officer's desk with the
citizen's credential for the consent purpose; once bank-bjb's view holds the consented fields,
the citizen revokes the consent there (a fresh credential) and the bench polls bank-bjb's
view row every few milliseconds until none of those fields is left. The time counts from the
revocation's HTTP response (its commit) to the first poll that sees the row purged.
The other two gateways hold no consent-based fields (their services rest on legal obligation
and public task), so a revocation leaves nothing to purge there; the bench checks their rows
keep their data.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from typing import Any

import httpx
from cryptography.hazmat.primitives import serialization

from bench.common import CLIENTS, Context, connect
from bench.stats import latency_summary
from bench.verify import ISSUER, KID
from ikd_dev.issuer import mint_credential
from ikd_shared.credentials import Purpose
from ikd_shared.events.profile_v1 import CitizenProfile

POLL = 0.002
PURPOSES = {
    "bjb-savings-account": "account-opening",
    "bjb-kur-loan": "micro-loan-assessment",
}
FIELDS = ["full_name", "date_of_birth", "address.street", "address.village", "occupation"]


async def _view_data(connection: Any, pseudonym: str) -> dict[str, Any]:
    raw = await connection.fetchval("SELECT data FROM citizen_view WHERE pseudonym = $1", pseudonym)
    if raw is None:
        return {}
    return dict(json.loads(raw) if isinstance(raw, str) else raw)


async def _wait(connection: Any, pseudonym: str, want_fields: bool, within: float) -> float:
    """Wall time when the row first had (or no longer had) the consented fields."""
    deadline = time.time() + within
    while time.time() < deadline:
        issued = time.time()
        data = await _view_data(connection, pseudonym)
        if want_fields == all(name in data for name in FIELDS) and (
            want_fields or not any(name in data for name in FIELDS)
        ):
            return issued
        await asyncio.sleep(POLL)
    raise TimeoutError(f"consent: view of {pseudonym[:12]} did not change within {within} s")


async def run(ctx: Context, *, citizens: list[CitizenProfile], repetitions: int) -> dict[str, Any]:
    bank = ctx.gateway("bank-bjb")
    key: Any = serialization.load_pem_private_key(ctx.issuer_key.read_bytes(), password=None)

    def credential(profile: CitizenProfile) -> str:
        """What the citizen's IKD app presents at the desk: fresh, for the consent purpose."""
        return mint_credential(
            key, kid=KID, issuer=ISSUER, purpose=Purpose.CONSENT, profile=profile
        )

    others = [g for g in ctx.gateways if g.code != bank.code]
    token = await ctx.token(CLIENTS["officer"], fresh=True)
    view = await connect(bank.dsn)
    other_views = {g.code: await connect(g.dsn) for g in others}
    per_service: dict[str, list[float]] = {s: [] for s in PURPOSES}
    grant_to_view: list[float] = []
    others_kept = True
    try:
        async with httpx.AsyncClient(
            timeout=30, headers={"Authorization": f"Bearer {token}"}
        ) as http:
            for i in range(repetitions):
                profile = citizens[i]
                pseudonym = ctx.pseudonym(profile.nik)
                service = list(PURPOSES)[i % len(PURPOSES)]
                response = await http.post(
                    f"{ctx.identity_url}/v1/consents",
                    json={
                        "credential": credential(profile),
                        "agency": bank.code,
                        "service": service,
                        "fields": FIELDS,
                        "purpose_code": PURPOSES[service],
                        "purpose_text": "benchmark: consent then revocation",
                        "expires_at": (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).isoformat(),
                    },
                )
                response.raise_for_status()
                granted = time.time()
                consent_id = response.json()["consent"]["consent_id"]
                grant_to_view.append(await _wait(view, pseudonym, True, 30) - granted)
                response = await http.post(
                    f"{ctx.identity_url}/v1/consents/{consent_id}/revoke",
                    json={"credential": credential(profile)},
                )
                response.raise_for_status()
                revoked = time.time()
                per_service[service].append(await _wait(view, pseudonym, False, 30) - revoked)
                for connection in other_views.values():
                    if not await _view_data(connection, pseudonym):
                        others_kept = False
    finally:
        await view.close()
        for connection in other_views.values():
            await connection.close()
    everything = [s for values in per_service.values() for s in values]
    return {
        "repetitions": repetitions,
        "view": bank.name,
        "revoke_to_purged": latency_summary(everything),
        "per_service": {s: latency_summary(v) for s, v in per_service.items()},
        "grant_to_view": latency_summary(grant_to_view),
        "other_views_kept_their_data": others_kept,
    }
