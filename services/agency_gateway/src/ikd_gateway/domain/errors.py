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


class NotFound(GatewayError):
    status_code = 404
    code = "not_found"


class CitizenNotFound(NotFound):
    code = "citizen_not_found"


class EndpointNotFound(NotFound):
    code = "endpoint_not_found"


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


class TooManyDenials(GatewayError):
    """A client denied too often is refused for a while (`retry_after` seconds)."""

    status_code = 429
    code = "too_many_denials"


class WebhookHostNotAllowed(Forbidden):
    code = "webhook_host_not_allowed"


class WebhookEndpointLimit(GatewayError):
    status_code = 409
    code = "webhook_endpoint_limit"
