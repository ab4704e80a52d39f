"""identity's token keys fetched from its JWKS URL, cached, refreshed, and kept through outages.

A gateway or the audit service verifies access tokens against identity's published keys
(`/.well-known/jwks.json`). Identity publishes a new key before it signs with it and keeps the
old one until the tokens it signed have expired, so a verifier that refreshes now and then
never sees a token it cannot check. Between refreshes a token with an unknown `kid` triggers
one fetch, at most once per `min_interval` however many such tokens arrive: an attacker making
up kids cannot make the gateways hammer identity, they only get 401. A failed fetch keeps the
keys already held (identity restarting does not stop the other services authenticating), and
so does an answer that is not a usable JWKS (a broken identity cannot lock every client out).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import Counter, Gauge

from ikd_shared.auth import TokenKeys, TokenVerifier
from ikd_shared.settings import TokenKeySettings

log = logging.getLogger(__name__)

REFRESHES = Counter(
    "ikd_token_jwks_refreshes_total",
    "Fetches of identity's token JWKS, by result (changed, unchanged, failed)",
    ["result"],
)
LAST_SUCCESS = Gauge(
    "ikd_token_jwks_last_success_timestamp_seconds",
    "When identity's token JWKS was last fetched successfully (Unix time)",
)
DEFAULT_REFRESH_SECONDS = 300.0
DEFAULT_MIN_INTERVAL_SECONDS = 10.0


class JwksUnavailable(Exception):
    """The JWKS could not be fetched or was not a usable JWKS."""


class RemoteJwks(TokenKeys):
    """TokenKeys that come from a JWKS URL; `start` fetches them, `run` keeps them fresh."""

    def __init__(
        self,
        url: str,
        *,
        ca_file: Path | None = None,
        timeout: float = 5.0,
        refresh_seconds: float = DEFAULT_REFRESH_SECONDS,
        min_interval: float = DEFAULT_MIN_INTERVAL_SECONDS,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__({"keys": []})
        self.url = url
        self.refresh_seconds = refresh_seconds
        self.min_interval = min_interval
        verify: ssl.SSLContext | bool = (
            ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
        )
        self._http = httpx.AsyncClient(
            timeout=timeout, verify=verify, transport=transport, follow_redirects=False
        )
        self._clock = clock
        self._lock = asyncio.Lock()
        self._last_attempt: float | None = None
        self._done = 0  # fetches finished, failed or not
        self.fetches = 0
        self.loaded = False
        """Whether any fetch succeeded yet (until then every token is refused)."""

    async def fetch(self) -> bool:
        """Fetch now; True if the key set changed. JwksUnavailable keeps the keys held."""
        async with self._lock:
            return await self._fetch()

    async def refresh(self) -> bool:
        """For a token with an unknown kid: fetch unless one was tried within `min_interval`.

        Concurrent callers share one fetch: whoever waited for the lock finds it just done.
        True if the caller should look up its kid again.
        """
        seen = self._done
        async with self._lock:
            if self._done != seen:
                return self.loaded  # fetched while this caller waited: worth another look
            last = self._last_attempt
            if last is not None and self._clock() - last < self.min_interval:
                return False
            try:
                return await self._fetch()
            except JwksUnavailable as error:
                log.warning("token JWKS refresh failed, keeping the keys held: %s", error)
                return False

    async def _fetch(self) -> bool:
        self._last_attempt = self._clock()
        self.fetches += 1
        try:
            response = await self._http.get(self.url, headers={"accept": "application/json"})
            response.raise_for_status()
            document: Any = response.json()
            if not isinstance(document, dict) or not document.get("keys"):
                raise ValueError("not a JWKS with keys")
            changed = self.replace(document)
        except (httpx.HTTPError, ValueError) as error:
            REFRESHES.labels("failed").inc()
            raise JwksUnavailable(f"{self.url}: {error}") from None
        finally:
            self._done += 1
        self.loaded = True
        REFRESHES.labels("changed" if changed else "unchanged").inc()
        LAST_SUCCESS.set_to_current_time()
        if changed:
            log.info("token JWKS now holds kids %s", sorted(self.kids))
        return changed

    async def run(self) -> None:
        """Refresh every `refresh_seconds`; until a fetch succeeded, every `min_interval`."""
        while True:
            wait = self.refresh_seconds if self.loaded else self.min_interval
            await asyncio.sleep(wait)
            try:
                await self.fetch()
            except JwksUnavailable as error:
                log.warning("token JWKS refresh failed, keeping the keys held: %s", error)

    async def close(self) -> None:
        await self._http.aclose()


@contextlib.asynccontextmanager
async def remote_jwks(keys: RemoteJwks) -> AsyncIterator[RemoteJwks]:
    """Fetch once (a failure is logged: the service starts and retries), refresh in the
    background, close on exit."""
    try:
        await keys.fetch()
    except JwksUnavailable as error:
        log.warning("token JWKS not fetched yet, tokens are refused until it is: %s", error)
    task = asyncio.create_task(keys.run(), name="token-jwks-refresh")
    try:
        yield keys
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await keys.close()


def token_keys(settings: TokenKeySettings, static: dict[str, Any] | None) -> TokenKeys:
    """The keys the settings name: the JWKS URL's, or the static JWKS."""
    if settings.token_jwks_url is None:
        return TokenKeys(static or {"keys": []})
    return RemoteJwks(
        str(settings.token_jwks_url),
        ca_file=settings.token_jwks_ca_file,
        refresh_seconds=settings.token_jwks_refresh_seconds,
        min_interval=settings.token_jwks_min_interval_seconds,
    )


async def keys_loaded(verifier: TokenVerifier) -> None:
    """A readiness check: fails while a verifier on a JWKS URL holds no keys yet (identity not
    reached since start), when every token would be refused; static keys always pass."""
    keys = verifier.keys
    if isinstance(keys, RemoteJwks) and not keys.loaded:
        raise RuntimeError(f"no token keys fetched yet from {keys.url}")


@contextlib.asynccontextmanager
async def keep_fresh(verifier: TokenVerifier) -> AsyncIterator[None]:
    """While the block runs, a verifier on a JWKS URL holds its keys fresh (`remote_jwks`);
    static keys need nothing."""
    if isinstance(verifier.keys, RemoteJwks):
        async with remote_jwks(verifier.keys):
            yield
    else:
        yield
