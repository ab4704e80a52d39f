"""Console sign-in through the app: lockout after failures, no hint whether an id exists."""

from __future__ import annotations

import datetime as dt
import re

import httpx

from ikd_audit.bootstrap import AuditRuntime
from ikd_audit.entrypoints.console import hash_secret

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


async def test_console_locks_an_id_after_failures_until_the_lockout_passes(
    client: httpx.AsyncClient, runtime: AuditRuntime
) -> None:
    clock = Clock()
    runtime.login_throttle.clock = clock
    await runtime.auditors.save("auditor-7", hash_secret(SECRET))
    max_failures = runtime.settings.login_max_failures
    for _ in range(max_failures):
        assert (await sign_in(client, "auditor-7", "wrong-secret-xx")).status_code == 401
    locked = await sign_in(client, "auditor-7", SECRET)
    assert locked.status_code == 429
    assert "Too many failed sign-in attempts" in locked.text
    assert int(locked.headers["retry-after"]) == runtime.settings.login_lockout_seconds

    # an unknown id is answered the same way: a lockout tells nothing about existence
    for _ in range(max_failures):
        assert (await sign_in(client, "no-such-auditor", "wrong-secret-xx")).status_code == 401
    unknown = await sign_in(client, "no-such-auditor", SECRET)
    assert unknown.status_code == 429
    assert unknown.text == locked.text

    clock.now += dt.timedelta(seconds=runtime.settings.login_lockout_seconds + 1)
    signed_in = await sign_in(client, "auditor-7", SECRET)
    assert signed_in.status_code == 303
    assert signed_in.headers["location"] == "/console/search"


async def test_console_success_resets_the_failure_count(
    client: httpx.AsyncClient, runtime: AuditRuntime
) -> None:
    runtime.login_throttle.clock = Clock()
    await runtime.auditors.save("auditor-8", hash_secret(SECRET))
    max_failures = runtime.settings.login_max_failures
    for _ in range(max_failures - 1):
        assert (await sign_in(client, "auditor-8", "wrong-secret-xx")).status_code == 401
    assert (await sign_in(client, "auditor-8", SECRET)).status_code == 303
    client.cookies.clear()
    for _ in range(max_failures - 1):
        assert (await sign_in(client, "auditor-8", "wrong-secret-xx")).status_code == 401
    assert (await sign_in(client, "auditor-8", SECRET)).status_code == 303
