"""Bearer-token authentication for the HTTP APIs: one FastAPI dependency factory.

An API builds one `Bearer` and declares each route's caller as
`Annotated[Principal, Depends(bearer.require(Scope.X))]`. A refusal is the service's own
error (401 with `WWW-Authenticate: Bearer`, or 403), answered by its problem+json handler.

A request without a valid token is only counted (`ikd_http_unauthenticated_requests_total`):
nobody is known to have asked, so there is nothing to audit, and writing a record for every
anonymous request would let anyone fill an append-only log. The hooks of `require` see
authenticated callers only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, Protocol, TypeVar

from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import Counter

from ikd_shared.auth import AuthError, Principal, Scope
from ikd_shared.errors import ApiError

E = TypeVar("E", bound=ApiError)

UNAUTHENTICATED = Counter(
    "ikd_http_unauthenticated_requests_total",
    "Requests refused 401 for a missing or invalid bearer token (never audited)",
    ["reason"],
)
# The metric's reasons, a fixed set: nothing taken from the token itself becomes a label.
_REASONS = {
    "malformed_token": "malformed",
    "unknown_key": "unknown_key",
    "token_expired": "expired",
    "invalid_token": "invalid",
}
MISSING = "missing"


def unauthenticated_reason(code: str | None) -> str:
    """The metric's reason for an AuthError code (None: no token at all)."""
    return MISSING if code is None else _REASONS.get(code, "invalid")


class Verifier(Protocol):
    """TokenVerifier, or anything that answers like it (CachedTokenVerifier)."""

    def verify(self, token: str) -> Principal: ...

    async def refresh_keys(self) -> bool:
        """Look for new token keys (identity rotated); True if there are some."""
        ...


class Bearer(Generic[E]):
    """The callers of one API: who may call it, and the errors that refuse the others.

    `verifier` finds the API's verifier per request (it may only exist once the app started).
    `unauthenticated` (401) and `forbidden` (403, a missing scope) are the service's error
    types; `missing_code` is the code of a request without a bearer token. `admit` is the API's
    own check of a verified caller (a gateway serves one agency): an error refuses it.
    """

    def __init__(
        self,
        verifier: Callable[[Request], Verifier],
        *,
        unauthenticated: type[E],
        forbidden: type[E],
        missing_code: str = "missing_token",
        admit: Callable[[Request, Principal], E | None] | None = None,
        description: str = "an access token from the identity service",
    ) -> None:
        self._verifier = verifier
        self._unauthenticated = unauthenticated
        self._forbidden = forbidden
        self._missing_code = missing_code
        self._admit = admit
        # Parses the header and documents the scheme in OpenAPI; refusing is ours to do.
        self._scheme = HTTPBearer(auto_error=False, description=description)

    def require(
        self,
        scope: Scope,
        *,
        guard: Callable[[Request, Principal], Awaitable[None]] | None = None,
        on_refused: Callable[[Request, Principal, E], Awaitable[None]] | None = None,
    ) -> Callable[..., Coroutine[Any, Any, Principal]]:
        """A dependency that yields the caller holding `scope`, or raises the refusal.

        Both hooks see authenticated callers only. `guard` runs before the caller is
        authorised and refuses by raising (a gateway throttles a client it keeps denying);
        `on_refused` runs before an authorisation refusal is raised (a gateway audits it).
        """

        # A default, not an annotation: FastAPI resolves string annotations in module globals.
        async def caller(
            request: Request,
            # Security, not Depends: the OpenAPI document names the scope the route requires.
            credentials: HTTPAuthorizationCredentials | None = Security(  # noqa: B008
                self._scheme, scopes=[scope.value]
            ),
        ) -> Principal:
            principal = await self.authenticate_refreshing(request, credentials)
            if guard is not None:
                await guard(request, principal)
            refusal = self.authorize(request, principal, scope)
            if refusal is None:
                return principal
            if on_refused is not None:
                await on_refused(request, principal, refusal)
            raise refusal

        return caller

    async def authenticate_refreshing(
        self, request: Request, credentials: HTTPAuthorizationCredentials | None
    ) -> Principal:
        """`authenticate`, but a token of a key not seen yet first makes the verifier look for
        new keys (rate-limited there) and is tried once more if it found some."""
        if credentials is not None:
            verifier = self._verifier(request)
            try:
                return verifier.verify(credentials.credentials)
            except AuthError as error:
                if error.code != "unknown_key" or not await verifier.refresh_keys():
                    UNAUTHENTICATED.labels(unauthenticated_reason(error.code)).inc()
                    raise self._unauthenticated(str(error), code=error.code) from None
        return self.authenticate(request, credentials)

    def authenticate(
        self, request: Request, credentials: HTTPAuthorizationCredentials | None
    ) -> Principal:
        """The token's caller, or the 401 error raised (and counted, and nothing more)."""
        if credentials is None:
            UNAUTHENTICATED.labels(MISSING).inc()
            raise self._unauthenticated("a bearer token is required", code=self._missing_code)
        try:
            return self._verifier(request).verify(credentials.credentials)
        except AuthError as error:
            UNAUTHENTICATED.labels(unauthenticated_reason(error.code)).inc()
            raise self._unauthenticated(str(error), code=error.code) from None

    def authorize(self, request: Request, principal: Principal, scope: Scope) -> E | None:
        """The error that refuses an authenticated caller, or None."""
        if self._admit is not None and (refusal := self._admit(request, principal)) is not None:
            return refusal
        if not principal.has(scope):
            return self._forbidden(f"the token lacks the scope {scope.value}")
        return None
