"""The HTTP API (FastAPI): verifications, registrations, Dukcapil's feed, consents, tokens."""

from __future__ import annotations

import base64
import binascii
import contextlib
import logging
import re
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Form, Request, Response
from fastapi.responses import JSONResponse
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from ikd_identity import metrics
from ikd_identity.adapters.postgres import outbox_backlog, ping
from ikd_identity.bootstrap import Runtime, bootstrap
from ikd_identity.config import IdentitySettings
from ikd_identity.domain import commands
from ikd_identity.domain.errors import Forbidden, OAuthError, TokenThrottled, Unauthenticated
from ikd_identity.entrypoints import schemas
from ikd_identity.service_layer import handlers, registrations, tokens
from ikd_shared import api, kafka_lag, openapi
from ikd_shared.api import BodySizeLimit, install_error_handlers, problem
from ikd_shared.auth import Principal, Scope
from ikd_shared.bearer import Bearer
from ikd_shared.kafka import KafkaConnection
from ikd_shared.legal import CODE_PATTERN
from ikd_shared.settings import proxy_hosts

log = logging.getLogger(__name__)
_AGENCY = re.compile(CODE_PATTERN.strip("^$"))


async def get_container(request: Request) -> Runtime:
    # async: FastAPI would run a plain `def` dependency in its thread pool, on every request
    return get_container_of(request.app)


def get_container_of(app: FastAPI) -> Runtime:
    container: Runtime = app.state.container
    return container


ContainerDep = Annotated[Runtime, Depends(get_container)]


bearer = Bearer(
    lambda request: get_container_of(request.app).token_verifier,
    unauthenticated=Unauthenticated,
    forbidden=Forbidden,
    description="an access token from POST /oauth/token",
)
Verifier = Annotated[Principal, Depends(bearer.require(Scope.VERIFY))]
Feed = Annotated[Principal, Depends(bearer.require(Scope.FEED))]
Officer = Annotated[Principal, Depends(bearer.require(Scope.CONSENT))]
Registrar = Annotated[Principal, Depends(bearer.require(Scope.REGISTER))]

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"description": description, "content": {"application/problem+json": {}}}
    for status, description in {
        400: "invalid input (code names the reason)",
        401: "missing or invalid bearer token",
        403: "wrong scope, an untrusted credential, an agency the client does not serve, "
        "or a service the caller may not register",
        404: "not found (a consent that is not the citizen's is not found either)",
        409: "replayed credential, or an inactive citizen, consent or registration",
        413: "body or credential too large",
        422: "the body does not match the schema",
    }.items()
}


def _agency_of(caller: Principal) -> str:
    if caller.agency is None or not _AGENCY.fullmatch(caller.agency):
        raise Forbidden("the token names no valid agency", code="agency_required")
    return caller.agency


def _profile_out(result: handlers.ProfileResult) -> schemas.ProfileStatusOut:
    return schemas.ProfileStatusOut(
        pseudonym=result.pseudonym,
        version=result.version,
        changed=result.changed,
        changed_fields=result.changed_fields,
        status=result.status.value,
    )


def _terms(body: schemas.ConsentTermsIn) -> commands.ConsentTerms:
    return commands.ConsentTerms(
        agency=body.agency,
        service=body.service,
        fields=body.fields,
        purpose_code=body.purpose_code,
        purpose_text=body.purpose_text,
        expires_at=body.expires_at,
        starts_at=body.starts_at,
    )


async def _desk(caller: Principal, container: Runtime) -> commands.OfficerDesk:
    """The officer's desk is the token's client; it serves what the clients table says."""
    client = await container.clients.get(caller.client_id)
    serves = client.serves if client is not None and not client.disabled else frozenset()
    return commands.OfficerDesk(client_id=caller.client_id, serves=serves)


async def _grant(
    body: schemas.ConsentGrant, desk: commands.OfficerDesk | None, deps: handlers.Deps
) -> schemas.ConsentOut:
    consent = await handlers.grant_consent(
        commands.GrantConsent(credential=body.credential, terms=_terms(body), desk=desk), deps
    )
    metrics.CONSENT_CHANGES.labels("granted").inc()
    return schemas.ConsentOut(consent=consent)


async def _revoke(
    consent_id: uuid.UUID,
    body: schemas.ConsentRevoke,
    desk: commands.OfficerDesk | None,
    deps: handlers.Deps,
) -> schemas.ConsentOut:
    consent = await handlers.revoke_consent(
        commands.RevokeConsent(credential=body.credential, consent_id=consent_id, desk=desk), deps
    )
    metrics.CONSENT_CHANGES.labels("revoked").inc()
    return schemas.ConsentOut(consent=consent)


def create_app(settings: IdentitySettings, *, run_relay: bool | None = None) -> FastAPI:
    relay_on = settings.relay_enabled if run_relay is None else run_relay

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with bootstrap(settings, relay=relay_on) as runtime:
            app.state.container = runtime
            yield

    app = FastAPI(
        title="IKD identity service",
        version="1.0.0",
        description="Verifies IKD credentials, keeps canonical citizen profiles and consents, "
        "and publishes every change through a transactional outbox.",
        lifespan=lifespan,
        generate_unique_id_function=openapi.operation_id,
    )
    install_error_handlers(app)

    async def on_oauth_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, OAuthError)
        response = problem(exc.status_code, exc.code, exc.detail, error=exc.code)
        response.headers["Cache-Control"] = "no-store"
        if isinstance(exc, TokenThrottled):
            response.headers["Retry-After"] = str(exc.retry_after_seconds)
        return response

    app.add_exception_handler(OAuthError, on_oauth_error)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)

    @app.post(
        "/v1/verifications",
        response_model=schemas.VerificationOut,
        responses=_ERRORS,
        tags=["profiles"],
    )
    async def verify(
        body: schemas.VerificationRequest, caller: Verifier, container: ContainerDep
    ) -> schemas.VerificationOut:
        """Verify a citizen's IKD credential for the services the citizen came for.

        `services` may name services of any agencies of the MPP's policy (the front desk);
        omitted, an agency counter means its own service if it offers exactly one. Each
        service gets a service request (started, or renewed for a full retention period) and
        the citizen's record is published again with the relationships in force, even when
        the profile is unchanged. Errors: `unknown_service` (400, `unknown_services` lists
        them), `services_required` (400); nothing is stored then.
        """
        agency = _agency_of(caller)
        services = tuple(body.services) if body.services is not None else None
        try:
            result = await handlers.verify_credential(
                commands.VerifyCredential(
                    credential=body.credential,
                    agency=agency,
                    services=services,
                    client_id=caller.client_id,
                ),
                container.deps,
            )
        except Exception:
            metrics.VERIFICATIONS.labels("rejected").inc()
            raise
        metrics.VERIFICATIONS.labels("changed" if result.changed else "unchanged").inc()
        metrics.RELATIONSHIPS.labels("service_request").inc(len(result.relationships))
        return schemas.VerificationOut(
            **_profile_out(result).model_dump(), relationships=result.relationships
        )

    @app.post(
        "/v1/registrations",
        response_model=schemas.RelationshipOut,
        status_code=201,
        responses=_ERRORS,
        tags=["relationships"],
    )
    async def register(
        body: schemas.RegistrationRequest, caller: Registrar, container: ContainerDep
    ) -> schemas.RelationshipOut:
        """An agency's gateway registers a citizen for one of the agency's services.

        Only services of the token's agency whose policy allows registration (403
        `service_not_of_agency`, `service_not_registrable`); an unknown, deceased or revoked
        citizen is 404 `citizen_not_found`. Registering again while the registration is in
        force renews it (same id, a full retention period from now). The citizen's record is
        published with the registration started.
        """
        relationship = await registrations.register_citizen(
            commands.RegisterCitizen(
                nik=body.nik,
                service=body.service,
                legal_reference=body.legal_reference,
                agency=_agency_of(caller),
                client_id=caller.client_id,
            ),
            container.deps,
        )
        metrics.RELATIONSHIPS.labels("registration").inc()
        return schemas.RelationshipOut(relationship=relationship)

    @app.post(
        "/v1/registrations/{relationship_id}/end",
        response_model=schemas.RelationshipOut,
        responses=_ERRORS,
        tags=["relationships"],
    )
    async def end_registration(
        relationship_id: uuid.UUID, caller: Registrar, container: ContainerDep
    ) -> schemas.RelationshipOut:
        """End a registration of the token's agency (another agency's is 404
        `registration_not_found`; one already ended or expired is 409
        `registration_not_active`). The citizen's record is published with it ended."""
        relationship = await registrations.end_registration(
            commands.EndRegistration(
                relationship_id=relationship_id,
                agency=_agency_of(caller),
                client_id=caller.client_id,
            ),
            container.deps,
        )
        metrics.RELATIONSHIPS.labels("registration_ended").inc()
        return schemas.RelationshipOut(relationship=relationship)

    @app.post(
        "/v1/feed/updates",
        response_model=schemas.ProfileStatusOut,
        responses=_ERRORS,
        tags=["feed"],
    )
    async def feed_update(
        body: schemas.FeedUpdate, _: Feed, container: ContainerDep
    ) -> schemas.ProfileStatusOut:
        """Dukcapil's update feed: changed fields, a death, or a revoked credential."""
        deps = container.deps
        if isinstance(body, schemas.FieldUpdate):
            changes = body.changes.model_dump(mode="json", exclude_unset=True)
            result = await handlers.update_profile(commands.UpdateProfile(body.nik, changes), deps)
        elif isinstance(body, schemas.DeathRecord):
            result = await handlers.record_death(
                commands.RecordDeath(body.nik, body.date_of_death), deps
            )
        else:
            result = await handlers.revoke_credential(
                commands.RevokeCredential(body.nik, body.reason), deps
            )
        metrics.FEED_UPDATES.labels(body.kind).inc()
        return _profile_out(result)

    @app.post(
        "/v1/feed/profiles", response_model=schemas.BulkResultOut, responses=_ERRORS, tags=["feed"]
    )
    async def feed_profiles(
        body: schemas.BulkProfiles, _: Feed, container: ContainerDep
    ) -> schemas.BulkResultOut:
        """Bulk feed: up to 1000 profiles in one transaction (new ones, or refreshed ones)."""
        result = await handlers.load_profiles(commands.LoadProfiles(body.profiles), container.deps)
        return schemas.BulkResultOut(
            created=result.created,
            updated=result.updated,
            unchanged=result.unchanged,
            skipped_inactive=result.skipped_inactive,
        )

    @app.post(
        "/v1/consents",
        response_model=schemas.ConsentOut,
        status_code=201,
        responses=_ERRORS,
        tags=["consents"],
    )
    async def officer_grant(
        body: schemas.ConsentGrant, caller: Officer, container: ContainerDep
    ) -> schemas.ConsentOut:
        """At an MPP officer's desk the citizen consents with their fresh consent credential.

        The officer is the token's client, and it must serve the agency.
        """
        return await _grant(body, await _desk(caller, container), container.deps)

    @app.post(
        "/v1/consents/{consent_id}/revoke",
        response_model=schemas.ConsentOut,
        responses=_ERRORS,
        tags=["consents"],
    )
    async def officer_revoke(
        consent_id: uuid.UUID,
        body: schemas.ConsentRevoke,
        caller: Officer,
        container: ContainerDep,
    ) -> schemas.ConsentOut:
        """At an MPP officer's desk the citizen revokes a consent with their consent credential."""
        return await _revoke(consent_id, body, await _desk(caller, container), container.deps)

    @app.post(
        "/v1/citizen/consents",
        response_model=schemas.ConsentOut,
        status_code=201,
        responses=_ERRORS,
        tags=["consents"],
    )
    async def citizen_grant(
        body: schemas.ConsentGrant, container: ContainerDep
    ) -> schemas.ConsentOut:
        """A citizen consents on their own, with a fresh credential for the consent purpose."""
        return await _grant(body, None, container.deps)

    @app.post(
        "/v1/citizen/consents/{consent_id}/revoke",
        response_model=schemas.ConsentOut,
        responses=_ERRORS,
        tags=["consents"],
    )
    async def citizen_revoke(
        consent_id: uuid.UUID, body: schemas.ConsentRevoke, container: ContainerDep
    ) -> schemas.ConsentOut:
        """A citizen revokes one of their consents, with a fresh consent credential."""
        return await _revoke(consent_id, body, None, container.deps)

    @app.post(
        "/oauth/token",
        response_model=schemas.TokenOut,
        responses={
            **_ERRORS,
            429: {
                "description": "too many failed client authentications (see Retry-After)",
                "content": {"application/problem+json": {}},
            },
        },
        tags=["oauth"],
    )
    async def token(
        request: Request,
        response: Response,
        container: ContainerDep,
        grant_type: Annotated[str, Form(max_length=64)],
        client_id: Annotated[str | None, Form(max_length=64)] = None,
        client_secret: Annotated[str | None, Form(max_length=256)] = None,
        scope: Annotated[str | None, Form(max_length=512)] = None,
    ) -> schemas.TokenOut:
        """OAuth2 client credentials grant (client_secret_post or client_secret_basic)."""
        if grant_type != "client_credentials":
            raise OAuthError("unsupported_grant_type", "only client_credentials is supported")
        basic = _basic_credentials(request.headers.get("authorization"))
        if basic is not None:
            client_id, client_secret = basic
        if not client_id or client_secret is None:
            raise OAuthError("invalid_client", "client authentication is required", status_code=401)
        requested = set(scope.split()) if scope else None
        issued = await tokens.issue_token(
            client_id,
            client_secret,
            requested,
            clients=container.clients,
            hasher=container.hasher,
            issuer=container.token_issuer,
            throttle=container.token_throttle,
            address=request.client.host if request.client else "",
        )
        response.headers["Cache-Control"] = "no-store"
        return schemas.TokenOut(
            access_token=issued.access_token,
            expires_in=issued.expires_in,
            scope=" ".join(sorted(issued.scopes)),
        )

    @app.get("/.well-known/jwks.json", tags=["oauth"])
    async def jwks(container: ContainerDep) -> dict[str, Any]:
        """The public key that signs access tokens; services verify tokens locally with it."""
        return container.token_issuer.jwks()

    async def database_reachable() -> None:
        await ping(get_container_of(app).pool)

    async def refresh_outbox_backlog() -> None:
        metrics.OUTBOX_BACKLOG.set(await outbox_backlog(get_container_of(app).pool))

    app.include_router(
        api.operations_router(
            checks={
                "postgresql": database_reachable,
                "kafka": lambda: kafka_lag.kafka_reachable(KafkaConnection.from_settings(settings)),
            },
            refresh=[refresh_outbox_backlog],
            include_in_schema=True,
        )
    )
    app.add_middleware(api.RequestObservability)
    if settings.trusted_proxies:  # outermost: everything after sees the client's address
        app.add_middleware(
            ProxyHeadersMiddleware, trusted_hosts=proxy_hosts(settings.trusted_proxies)
        )
    openapi.document_security(app, token_url=openapi.IDENTITY_TOKEN_URL)
    return app


def _basic_credentials(header: str | None) -> tuple[str, str] | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise OAuthError("invalid_client", "malformed Basic credentials", status_code=401) from None
    client_id, sep, secret = decoded.partition(":")
    if not sep:
        raise OAuthError("invalid_client", "malformed Basic credentials", status_code=401)
    return client_id, secret
