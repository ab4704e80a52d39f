"""The gateway's error hierarchy: each error carries its HTTP status and a stable code."""

from __future__ import annotations

from ikd_shared.errors import ApiError


class GatewayError(ApiError):
    status_code = 400
    code = "gateway_error"


class Unauthenticated(GatewayError):
    status_code = 401
    code = "unauthenticated"


class Forbidden(GatewayError):
    status_code = 403
    code = "forbidden"


class WrongAgency(Forbidden):
    code = "wrong_agency"


class MissingScope(Forbidden):
    code = "insufficient_scope"


class ServiceNotAllowed(Forbidden):
    code = "service_not_allowed"


class ConsentRequired(Forbidden):
    code = "consent_required"


class NikLookupNotAllowed(Forbidden):
    code = "nik_lookup_not_allowed"


class ServiceNotRegistrable(Forbidden):
    code = "service_not_registrable"


class NotFound(GatewayError):
    status_code = 404
    code = "not_found"


class CitizenNotFound(NotFound):
    code = "citizen_not_found"


class EndpointNotFound(NotFound):
    code = "endpoint_not_found"


class RegistrationNotFound(NotFound):
    code = "registration_not_found"


class BadCitizenReference(GatewayError):
    status_code = 400
    code = "invalid_citizen_reference"


class InvalidNik(BadCitizenReference):
    code = "invalid_nik"


class InvalidPseudonym(BadCitizenReference):
    code = "invalid_pseudonym"


class NikInUrl(BadCitizenReference):
    code = "nik_not_allowed_in_url"


class WebhookUrlNotAllowed(GatewayError):
    status_code = 400
    code = "webhook_url_not_allowed"


class IdentityFailed(GatewayError):
    """identity answered a registration in a way the gateway cannot pass on."""

    status_code = 502
    code = "identity_failed"


class IdentityUnavailable(GatewayError):
    """identity could not be reached, or registrations are not configured here."""

    status_code = 503
    code = "identity_unavailable"


class TooManyDenials(GatewayError):
    """A client denied too often is refused for a while (`retry_after` seconds)."""

    status_code = 429
    code = "too_many_denials"


class WebhookHostNotAllowed(Forbidden):
    code = "webhook_host_not_allowed"


class WebhookEndpointLimit(GatewayError):
    status_code = 409
    code = "webhook_endpoint_limit"


class MessageNotFound(NotFound):
    code = "message_not_found"


class EndpointDisabled(GatewayError):
    status_code = 409
    code = "endpoint_disabled"


class MessagePending(GatewayError):
    """The message is still scheduled (or being sent): its next attempt comes anyway."""

    status_code = 409
    code = "message_pending"


class NotHeld(GatewayError):
    """A redelivery of a citizen's data the agency no longer holds for the endpoint's service
    (purged, erased, consent revoked, relationship ended): refused, never resent stale."""

    status_code = 409
    code = "citizen_not_held"

    def __init__(self, detail: str, *, service: str, pseudonym: str) -> None:
        super().__init__(detail)
        self.service = service
        self.pseudonym = pseudonym
