"""The APIs' OpenAPI documents as client generators read them: stable operation ids and the
OAuth2 client-credentials scheme, with the scope each protected operation needs.

An app passes `generate_unique_id_function=operation_id` to FastAPI and calls
`document_security` once its routes are in place.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

from ikd_shared.auth import Scope

OPERATION_ID = re.compile(r"^[a-z][a-zA-Z0-9]*$")
"""lowerCamelCase, as generated clients name their methods."""

OAUTH2 = "oauth2"
IDENTITY_TOKEN_URL = "/oauth/token"  # noqa: S105 - a path, not a secret
"""Identity's token endpoint. Relative in every document: only a deployment knows where
identity answers, and each scheme's description says that the token comes from identity."""
SCOPES: Mapping[str, str] = {
    Scope.VERIFY: "an MPP counter submits IKD credentials",
    Scope.FEED: "Dukcapil's update feed",
    Scope.CONSENT: "an MPP officer's desk records a citizen's consents",
    Scope.REGISTER: "an agency's gateway registers citizens for a legal duty",
    Scope.PREFILL: "an agency backend reads its prefill API",
    Scope.WEBHOOKS: "an agency backend manages its webhook endpoints",
    Scope.REGISTRATIONS: "an agency backend registers citizens",
    Scope.AUDIT_READ: "an auditor searches and exports the access log",
}


def operation_id(route: APIRoute) -> str:
    """The operation id of a route without an explicit one: its function's name in
    lowerCamelCase (`list_entries` -> `listEntries`), so it only changes when the code does,
    never with the path or the method."""
    head, *rest = route.name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def document_security(app: FastAPI, *, token_url: str) -> None:
    """Declare the bearer tokens as what they are, OAuth2 client-credentials access tokens
    from identity's `POST /oauth/token`: one `oauth2` scheme, and on every operation that
    takes a token the scope it requires (from `ikd_shared.bearer`'s security requirement)."""
    generate: Callable[[], dict[str, Any]] = app.openapi
    done: list[dict[str, Any]] = []

    def openapi() -> dict[str, Any]:
        if done:
            return done[0]
        document = generate()
        schemes = document.setdefault("components", {}).setdefault("securitySchemes", {})
        bearer = schemes.pop("HTTPBearer", None)
        if bearer is not None:
            used: set[str] = set()
            for item in document.get("paths", {}).values():
                for operation in item.values():
                    requirements = (
                        operation.get("security") if isinstance(operation, dict) else None
                    )
                    if not requirements:
                        continue
                    rewritten = []
                    for requirement in requirements:
                        if "HTTPBearer" in requirement:
                            scopes = requirement.pop("HTTPBearer")
                            requirement[OAUTH2] = scopes
                            used.update(scopes)
                        rewritten.append(requirement)
                    operation["security"] = rewritten
            schemes[OAUTH2] = {
                "type": "oauth2",
                "description": (
                    "An access token of the identity service, sent as `Authorization: Bearer "
                    "<token>`. A client asks for it with its client id and secret (client "
                    f"credentials grant) at identity's `POST {token_url}`."
                ),
                "flows": {
                    "clientCredentials": {
                        "tokenUrl": token_url,
                        "scopes": {scope: SCOPES.get(scope, scope) for scope in sorted(used)},
                    }
                },
            }
        done.append(document)
        return document

    app.openapi = openapi  # type: ignore[method-assign]
