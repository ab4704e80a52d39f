"""identity's registration API, called as the gateway's own OAuth client (httpx).

The gateway holds a client of its own at identity (`gateway-<agency>`, scope identity:register,
the agency in its token): a backend's token never leaves the gateway. The access token is
fetched with the client-credentials grant and reused until shortly before it expires.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt

from ikd_gateway.domain import errors
from ikd_shared.auth import Scope
from ikd_shared.events.profile_v1 import Relationship
from ikd_shared.supervise import backoff

TOKEN_MARGIN_SECONDS = 30.0
"""A token this close to its expiry is renewed first (clock skew, time in flight)."""
KEEPALIVE_EXPIRY_SECONDS = 2.0
"""An idle connection is not reused after this; below identity's keep-alive timeout (uvicorn's
5 s), else a request sent on a connection identity is just closing fails with a ReadError."""

# Only failures where the request never reached identity are retried: a registration sent
# twice could register twice.
NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
PASSED_ON = {403, 404, 409}
"""identity's refusals the backend is told as they are (its codes: service_not_registrable,
service_not_of_agency, citizen_not_found, ...); any other answer is the gateway's failure."""


class IdentityClient:
    """POST /v1/registrations and /v1/registrations/{id}/end at identity."""

    def __init__(
        self,
        base_url: str,
        client_id: str,
        client_secret: str,
        *,
        timeout: float = 10.0,
        attempts: int = 3,
        keepalive_expiry: float = KEEPALIVE_EXPIRY_SECONDS,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=timeout,
            limits=httpx.Limits(
                max_connections=100, max_keepalive_connections=20, keepalive_expiry=keepalive_expiry
            ),
            transport=transport,
        )
        self._client_id = client_id
        self._client_secret = client_secret
        self._attempts = attempts
        self._clock = clock
        self._token: tuple[str, float] | None = None
        self._lock = asyncio.Lock()
        self.tokens_fetched = 0

    async def close(self) -> None:
        await self._http.aclose()

    async def register(self, *, nik: str, service: str, legal_reference: str) -> Relationship:
        response = await self._call(
            "/v1/registrations",
            {"nik": nik, "service": service, "legal_reference": legal_reference},
        )
        if response.status_code != 201:
            raise _refusal(response)
        return _relationship(response)

    async def end(self, relationship_id: uuid.UUID) -> Relationship | None:
        response = await self._call(f"/v1/registrations/{relationship_id}/end", {})
        if response.status_code != 200:
            raise _refusal(response)
        try:
            return _relationship(response)
        except errors.IdentityFailed:
            return None  # ended; identity said no more than that

    async def _call(self, path: str, body: dict[str, Any]) -> httpx.Response:
        token = await self._access_token(renew=False)
        response = await self._send(lambda: self._post_json(path, body, token))
        if response.status_code == 401:  # expired early, or identity's key rotated
            token = await self._access_token(renew=True)
            response = await self._send(lambda: self._post_json(path, body, token))
        return response

    def _post_json(self, path: str, body: dict[str, Any], token: str) -> Awaitable[httpx.Response]:
        return self._http.post(path, json=body, headers={"Authorization": f"Bearer {token}"})

    async def _access_token(self, *, renew: bool) -> str:
        async with self._lock:
            if not renew and self._token is not None and self._token[1] > self._clock():
                return self._token[0]
            response = await self._send(
                lambda: self._http.post(
                    "/oauth/token",
                    data={
                        "grant_type": "client_credentials",
                        "client_id": self._client_id,
                        "client_secret": self._client_secret,
                        "scope": Scope.REGISTER.value,
                    },
                )
            )
            if response.status_code != 200:
                raise errors.IdentityFailed(
                    f"identity refused the gateway's client {self._client_id} "
                    f"({response.status_code}); registrations cannot be made"
                )
            try:
                answer = response.json()
                token, lifetime = str(answer["access_token"]), float(answer["expires_in"])
            except (ValueError, KeyError, TypeError):
                raise errors.IdentityFailed("identity's token answer is malformed") from None
            self._token = (token, self._clock() + max(0.0, lifetime - TOKEN_MARGIN_SECONDS))
            self.tokens_fetched += 1
            return token

    async def _send(self, request: Callable[[], Awaitable[httpx.Response]]) -> httpx.Response:
        retrying = AsyncRetrying(
            retry=retry_if_exception_type(NOT_SENT),
            stop=stop_after_attempt(self._attempts),
            wait=backoff(0.2, 2.0),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    return await request()
        except httpx.HTTPError as error:
            raise errors.IdentityUnavailable(
                f"identity cannot be reached: {type(error).__name__}"
            ) from None
        raise AssertionError("unreachable: tenacity re-raises the last failure")


def _relationship(response: httpx.Response) -> Relationship:
    try:
        return Relationship.model_validate(response.json()["relationship"])
    except (ValueError, KeyError, TypeError):
        raise errors.IdentityFailed("identity's answer holds no relationship") from None


def _refusal(response: httpx.Response) -> errors.GatewayError:
    try:
        problem = response.json()
        code, detail = str(problem["code"]), str(problem.get("detail") or problem["code"])
    except (ValueError, KeyError, TypeError):
        code, detail = "", ""
    if response.status_code in PASSED_ON and code:
        return errors.GatewayError(detail, code=code, status_code=response.status_code)
    return errors.IdentityFailed(f"identity answered {response.status_code} {code}".rstrip())
