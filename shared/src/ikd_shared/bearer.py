"""Bearer-token authentication for the HTTP APIs: one FastAPI dependency factory.

An API builds one `Bearer` and declares each route's caller as
`Annotated[Principal, Depends(bearer.require(Scope.X))]`. A refusal is the service's own
error (401 with `WWW-Authenticate: Bearer`, or 403), answered by its problem+json handler.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, Protocol, TypeVar

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ikd_shared.auth import AuthError, Principal, Scope
from ikd_shared.errors import ApiError

E = TypeVar("E", bound=ApiError)


class Verifier(Protocol):
    """TokenVerifier, or anything that answers like it (CachedTokenVerifier)."""

    def verify(self, token: str) -> Principal: ...


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
        self, scope: Scope, *, on_refused: Callable[[Request, E], Awaitable[None]] | None = None
    ) -> Callable[..., Coroutine[Any, Any, Principal]]:
        """A dependency that yields the caller holding `scope`, or raises the refusal.

        `on_refused` runs before a refusal is raised (a gateway records refused requests).
        """

        # A default, not an annotation: FastAPI resolves string annotations in module globals.
        async def caller(
            request: Request,
            credentials: HTTPAuthorizationCredentials | None = Depends(self._scheme),  # noqa: B008
        ) -> Principal:
            outcome = self.check(request, credentials, scope)
            if isinstance(outcome, Principal):
                return outcome
            if on_refused is not None:
                await on_refused(request, outcome)
            raise outcome

        return caller

    def check(
        self, request: Request, credentials: HTTPAuthorizationCredentials | None, scope: Scope
    ) -> Principal | E:
        """The caller, or the error that refuses the request."""
        if credentials is None:
            return self._unauthenticated("a bearer token is required", code=self._missing_code)
        try:
            principal = self._verifier(request).verify(credentials.credentials)
        except AuthError as error:
            return self._unauthenticated(str(error), code=error.code)
        if self._admit is not None and (refusal := self._admit(request, principal)) is not None:
            return refusal
        if not principal.has(scope):
            return self._forbidden(f"the token lacks the scope {scope.value}")
        return principal
