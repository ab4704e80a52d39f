"""Authenticate before auditing, on the real database and broker, through to the audit log:
requests without a valid token leave nothing, and a client denied too often is throttled by
every API replica, its throttled requests audited once."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from prometheus_client import REGISTRY

from ikd_audit.bootstrap import AuditRuntime
from ikd_audit.bootstrap import bootstrap as audit_bootstrap
from ikd_audit.cli import MIGRATIONS as AUDIT_MIGRATIONS
from ikd_audit.domain.search import SearchFilter
from ikd_audit.entrypoints.consumer import AccessConsumer
from ikd_dev.issuer import generate_issuer_key
from ikd_gateway.bootstrap import Gateway
from ikd_gateway.entrypoints.api import create_app
from ikd_shared.transparency import Entry
from tests.support.audit import Keys, audit_env, make_settings
from tests.support.gateway import running_gateway
from tests.support.gateway_factories import Tokens, profile
from tests.support.kafka import kafka_connection
from tests.support.polling import eventually

AGENCY = "polres-cirebon"
SERVICE = "skck"
REASONS = ("missing", "malformed", "unknown_key", "expired", "invalid")
LIMIT = 5


@contextlib.asynccontextmanager
async def audit_log(
    database_factory: Any, kafka_bootstrap: str, prefix: str
) -> AsyncIterator[AuditRuntime]:
    """The audit service's log, fed by its consumer from this test's access topic."""
    database = await database_factory("audit", Path(AUDIT_MIGRATIONS))
    keys = Keys(
        tree_head=Ed25519PrivateKey.generate(),
        tokens=Tokens().issuer,
        dukcapil=generate_issuer_key("EdDSA"),
    )
    settings = make_settings(audit_env(keys, database.app_dsn, prefix))
    async with audit_bootstrap(settings) as runtime:
        consumer = AccessConsumer(
            runtime.log, kafka_connection(kafka_bootstrap), topic_prefix=prefix, group_id=prefix
        )
        task = asyncio.create_task(consumer.run())
        try:
            yield runtime
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


@contextlib.asynccontextmanager
async def api(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(gateway.settings, runtime=gateway))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as client:
        yield client


async def entries(runtime: AuditRuntime, count: int) -> list[Entry]:
    """The log's entries once it holds `count` (oldest first)."""

    async def grown() -> bool:
        return (await runtime.log.tree_state())[0] >= count

    await eventually(grown, timeout=30)
    page = await runtime.log.search(SearchFilter(), None, 100)
    return list(reversed(page.entries))


async def publish_all(gateway: Gateway) -> int:
    published = 0
    while sent := await gateway.relay.publish_batch():
        published += sent
    return published


def unauthenticated() -> dict[str, float]:
    return {
        reason: REGISTRY.get_sample_value(
            "ikd_http_unauthenticated_requests_total", {"reason": reason}
        )
        or 0.0
        for reason in REASONS
    }


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


async def test_requests_without_a_valid_token_get_401_and_leave_nothing(
    gateway_db: Any,
    db: asyncpg.Connection,
    database_factory: Any,
    kafka_bootstrap: str,
    topic_prefix: str,
    tokens: Tokens,
    tmp_path: Path,
) -> None:
    citizen = profile(5)
    foreign = Tokens()  # same key id, another key: a forged signature
    headers = [
        {},
        {"authorization": "Basic dXNlcjpwYXNz"},
        bearer("not-a-jwt"),
        bearer(tokens.for_agency(AGENCY, now=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))),
        bearer(foreign.for_agency(AGENCY)),
        bearer(tokens.for_agency(AGENCY, audience="ikd-audit")),
    ]
    expected = {"missing": 0, "malformed": 0, "unknown_key": 0, "expired": 0, "invalid": 0}
    for i in range(25):
        expected[["missing", "missing", "malformed", "expired", "invalid", "invalid"][i % 6]] += 1
    before = unauthenticated()
    async with (
        audit_log(database_factory, kafka_bootstrap, topic_prefix) as audit,
        running_gateway(AGENCY, gateway_db, topic_prefix, tokens, tmp_path) as gateway,
        api(gateway) as client,
    ):
        for i in range(25):
            if i % 2:
                response = await client.post(
                    f"/v1/prefill/{SERVICE}/lookup",
                    json={"nik": citizen.nik},
                    headers=headers[i % 6],
                )
            else:
                response = await client.get(
                    f"/v1/prefill/{SERVICE}", params={"pseudonym": "0" * 64}, headers=headers[i % 6]
                )
            assert response.status_code == 401, response.text
            assert response.headers["www-authenticate"] == "Bearer"
        assert await db.fetchval("SELECT count(*) FROM access_outbox") == 0
        assert await db.fetchval("SELECT count(*) FROM client_denials") == 0
        counted = {r: v - before[r] for r, v in unauthenticated().items()}
        assert counted == expected

        # One authenticated denial behind them: the only thing that reaches the audit log.
        marker = await client.get(
            f"/v1/prefill/{SERVICE}",
            params={"pseudonym": "0" * 64},
            headers=bearer(tokens.for_agency(AGENCY)),
        )
        assert (marker.status_code, marker.json()["code"]) == (404, "citizen_not_found")
        assert await publish_all(gateway) == 1
        [entry] = await entries(audit, 1)
        assert (entry.agency, entry.outcome, entry.reason) == (
            AGENCY,
            "denied",
            "citizen_not_found",
        )


async def test_a_client_denied_too_often_gets_429_from_every_replica_audited_once(
    gateway_db: Any,
    db: asyncpg.Connection,
    database_factory: Any,
    kafka_bootstrap: str,
    topic_prefix: str,
    tokens: Tokens,
    tmp_path: Path,
) -> None:
    citizen = profile(6)
    good = bearer(tokens.for_agency(AGENCY))
    same_client_no_scope = bearer(tokens.for_agency(AGENCY, {"gateway:webhooks"}))
    other_client = bearer(
        tokens.issuer.issue("backend-2", {"gateway:prefill"}, ["ikd-gateway"], agency=AGENCY)
    )
    # Two API replicas on one database; each reads the shared counter on every request.
    configure = {"denial_limit": LIMIT, "denial_block_seconds": 120, "denial_recheck_seconds": 0}
    async with (
        audit_log(database_factory, kafka_bootstrap, topic_prefix) as audit,
        running_gateway(
            AGENCY, gateway_db, topic_prefix, tokens, tmp_path, configure=configure
        ) as one,
        running_gateway(
            AGENCY, gateway_db, topic_prefix, tokens, tmp_path, configure=configure
        ) as two,
        api(one) as a,
        api(two) as b,
    ):
        denied = [
            await a.get(f"/v1/prefill/{SERVICE}", params={"pseudonym": "0" * 64}, headers=good),
            await b.post(f"/v1/prefill/{SERVICE}/lookup", json={"nik": "12345"}, headers=good),
            await a.get(f"/v1/prefill/{SERVICE}", params={"nik": citizen.nik}, headers=good),
            await b.post(
                "/v1/prefill/no-such-service/lookup", json={"nik": citizen.nik}, headers=good
            ),
            await a.post(
                f"/v1/prefill/{SERVICE}/lookup",
                json={"nik": citizen.nik},
                headers=same_client_no_scope,
            ),
        ]
        assert [(r.status_code, r.json()["code"]) for r in denied] == [
            (404, "citizen_not_found"),
            (400, "invalid_nik_length"),
            (400, "nik_not_allowed_in_url"),
            (403, "service_not_allowed"),
            (403, "insufficient_scope"),
        ]
        for i in range(10):
            client = (b, a)[i % 2]
            response = await client.post(
                f"/v1/prefill/{SERVICE}/lookup", json={"nik": citizen.nik}, headers=good
            )
            assert (response.status_code, response.json()["code"]) == (429, "too_many_denials")
            assert 0 < int(response.headers["retry-after"]) <= 120
            assert response.json()["retry_after"] == int(response.headers["retry-after"])
        # Authentication still comes first; another client of the agency is not throttled.
        assert (
            await a.get(f"/v1/prefill/{SERVICE}", params={"pseudonym": "0" * 64})
        ).status_code == 401
        other = await b.get(
            f"/v1/prefill/{SERVICE}", params={"pseudonym": "0" * 64}, headers=other_client
        )
        assert (other.status_code, other.json()["code"]) == (404, "citizen_not_found")

        row = await db.fetchrow(
            "SELECT blocked_until, block_audited FROM client_denials WHERE client_id = $1",
            f"client-{AGENCY}",
        )
        assert row["block_audited"] is True
        assert row["blocked_until"] > dt.datetime.now(dt.UTC)
        assert await publish_all(one) + await publish_all(two) == LIMIT + 2
        logged = await entries(audit, LIMIT + 2)
        # (in the order of the topic's partitions, not of the requests)
        assert sorted(str(e.reason) for e in logged) == sorted(
            [
                "citizen_not_found",
                "invalid_nik_length",
                "nik_not_allowed_in_url",
                "service_not_allowed",
                "insufficient_scope",
                "too_many_denials",
                "citizen_not_found",
            ]
        )
        assert {e.outcome for e in logged} == {"denied"}
        assert all(citizen.nik not in str(e.document()) for e in logged)
