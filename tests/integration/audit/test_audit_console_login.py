"""Console sign-in through the app: failures throttle the failing (id, address) and address in
the database for every replica, never the auditor elsewhere; no hint whether an id exists."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import httpx

from ikd_audit.bootstrap import AuditRuntime, bootstrap
from ikd_audit.config import AuditSettings
from ikd_audit.entrypoints.app import create_app
from ikd_audit.entrypoints.console import hash_secret
from tests.support.audit import Keys, audit_env, make_settings

SECRET = "right-secret-123456"


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


async def sign_in(http: httpx.AsyncClient, client_id: str, secret: str) -> httpx.Response:
    form = await http.get("/console/login")
    match = re.search(r'name="csrf" value="([^"]+)"', form.text)
    assert match is not None
    return await http.post(
        "/console/login",
        data={"client_id": client_id, "secret": secret, "csrf": match.group(1)},
    )


def client_at(settings: AuditSettings, runtime: AuditRuntime, address: str) -> httpx.AsyncClient:
    """A browser at `address` (the direct peer of the console)."""
    app = create_app(settings)
    app.state.runtime = runtime
    app.state.consumer = None
    transport = httpx.ASGITransport(app=app, client=(address, 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1")


async def test_failures_throttle_the_failing_address_never_the_auditor(
    settings: AuditSettings, runtime: AuditRuntime
) -> None:
    clock = Clock()
    runtime.login_throttle.clock = clock
    await runtime.auditors.save("auditor-7", hash_secret(SECRET))
    max_failures = runtime.settings.login_max_failures
    async with client_at(settings, runtime, "203.0.113.9") as attacker:
        for _ in range(max_failures):
            assert (await sign_in(attacker, "auditor-7", "wrong-secret-xx")).status_code == 401
        throttled = await sign_in(attacker, "auditor-7", SECRET)
        assert throttled.status_code == 429
        assert "Too many failed sign-in attempts" in throttled.text
        cost = runtime.settings.login_failure_window_seconds / max_failures
        assert int(throttled.headers["retry-after"]) == cost

        # an unknown id is answered the same way: a refusal tells nothing about existence
        for _ in range(max_failures):
            assert (
                await sign_in(attacker, "no-such-auditor", "wrong-secret-xx")
            ).status_code == 401
        unknown = await sign_in(attacker, "no-such-auditor", SECRET)
        assert unknown.status_code == 429
        assert unknown.text == throttled.text

    # meanwhile the auditor, from her own address, signs in with the right secret
    async with client_at(settings, runtime, "198.51.100.7") as auditor:
        signed_in = await sign_in(auditor, "auditor-7", SECRET)
        assert signed_in.status_code == 303
        assert signed_in.headers["location"] == "/console/search"

    # and so can the failing address once its budget has trickled back
    clock.now += dt.timedelta(seconds=cost)
    async with client_at(settings, runtime, "203.0.113.9") as again:
        assert (await sign_in(again, "auditor-7", SECRET)).status_code == 303


async def test_a_second_replica_sees_the_failures_of_the_first(
    settings: AuditSettings, runtime: AuditRuntime
) -> None:
    await runtime.auditors.save("auditor-9", hash_secret(SECRET))
    async with bootstrap(settings) as other:
        async with client_at(settings, runtime, "203.0.113.9") as first:
            for _ in range(settings.login_max_failures):
                assert (await sign_in(first, "auditor-9", "wrong-secret-xx")).status_code == 401
        async with client_at(settings, other, "203.0.113.9") as second:
            assert (await sign_in(second, "auditor-9", SECRET)).status_code == 429


async def test_a_trusted_proxy_names_the_client_address(
    keys: Keys, audit_db: Any, runtime: AuditRuntime
) -> None:
    proxied = make_settings(
        {
            **audit_env(keys, audit_db.app_dsn, "unused."),
            "IKD_AUDIT_TRUSTED_PROXIES": "10.0.0.1,10.0.0.2",
        }
    )
    await runtime.auditors.save("auditor-5", hash_secret(SECRET))

    async def through(peer: str, forwarded_for: str, secret: str) -> int:
        async with client_at(proxied, runtime, peer) as http:
            http.headers["X-Forwarded-For"] = forwarded_for
            return (await sign_in(http, "auditor-5", secret)).status_code

    # two trusted hops: the right-most address that is not a proxy is the client
    for _ in range(proxied.login_max_failures):
        assert await through("10.0.0.1", "198.51.100.1, 203.0.113.9, 10.0.0.2", "wrong-xxxx") == 401
    assert await through("10.0.0.2", "203.0.113.9", SECRET) == 429
    assert await through("10.0.0.2", "198.51.100.7", SECRET) == 303
    # an untrusted peer's header is ignored: its own address is what counts
    for n in range(proxied.login_max_failures):
        assert await through("192.0.2.99", f"198.51.100.{n + 10}", "wrong-xxxx") == 401
    assert await through("192.0.2.99", "198.51.100.50", SECRET) == 429


async def test_console_success_resets_the_failure_count(
    client: httpx.AsyncClient, runtime: AuditRuntime
) -> None:
    await runtime.auditors.save("auditor-8", hash_secret(SECRET))
    max_failures = runtime.settings.login_max_failures
    for _ in range(max_failures - 1):
        assert (await sign_in(client, "auditor-8", "wrong-secret-xx")).status_code == 401
    assert (await sign_in(client, "auditor-8", SECRET)).status_code == 303
    client.cookies.clear()
    for _ in range(max_failures - 1):
        assert (await sign_in(client, "auditor-8", "wrong-secret-xx")).status_code == 401
    assert (await sign_in(client, "auditor-8", SECRET)).status_code == 303
