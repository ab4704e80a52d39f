"""The identity service's errors: one hierarchy, each with its HTTP status and stable code."""

from __future__ import annotations

from typing import ClassVar

from ikd_shared.errors import ApiError


class IdentityError(ApiError):
    status_code = 400
    code = "bad_request"


class Unauthenticated(IdentityError):
    status_code = 401
    code = "unauthenticated"


class Forbidden(IdentityError):
    status_code = 403
    code = "insufficient_scope"


class CredentialRejected(IdentityError):
    """The IKD credential is not accepted; the code names the reason."""

    # Content problems are 400, trust problems 403, a replay 409, size 413.
    STATUS_BY_CODE: ClassVar[dict[str, int]] = {
        "malformed_credential": 400,
        "missing_claims": 400,
        "invalid_claims": 400,
        "invalid_nik": 400,
        "nik_mismatch": 400,
        "bad_signature": 403,
        "unknown_kid": 403,
        "disallowed_algorithm": 403,
        "wrong_issuer": 403,
        "wrong_audience": 403,
        "credential_expired": 403,
        "credential_not_yet_valid": 403,
        "credential_not_fresh": 403,
        "credential_revoked": 403,
        "credential_replayed": 409,
        "credential_too_large": 413,
    }

    def __init__(self, code: str, detail: str) -> None:
        status = self.STATUS_BY_CODE.get(code, 400 if code.startswith("invalid_nik") else 403)
        super().__init__(detail, code=code, status_code=status)


class CitizenNotFound(IdentityError):
    status_code = 404
    code = "citizen_not_found"


class CitizenInactive(IdentityError):
    """The citizen is recorded as deceased, or their credential is revoked."""

    status_code = 409
    code = "citizen_inactive"


class InvalidUpdate(IdentityError):
    status_code = 400
    code = "invalid_update"


class ConsentNotFound(IdentityError):
    status_code = 404
    code = "consent_not_found"


class ConsentNotActive(IdentityError):
    status_code = 409
    code = "consent_not_active"


class InvalidConsent(IdentityError):
    status_code = 400
    code = "invalid_consent"


class UnknownService(IdentityError):
    """A named service is not in the MPP's policy (`unknown_services` lists them)."""

    status_code = 400
    code = "unknown_service"


class ServicesRequired(IdentityError):
    """The verification must name the services the citizen came for."""

    status_code = 400
    code = "services_required"


class RegistrationRefused(IdentityError):
    """The policy does not let this agency register citizens for the service."""

    status_code = 403
    code = "service_not_registrable"


class RegistrationNotFound(IdentityError):
    """No registration of the caller's agency with this id (another agency's looks the same)."""

    status_code = 404
    code = "registration_not_found"


class RegistrationNotActive(IdentityError):
    status_code = 409
    code = "registration_not_active"


class ConsentNotAllowed(IdentityError):
    """The policy does not allow this consent; the code names why.

    unknown_service, consent_not_applicable (the service rests on another legal basis),
    fields_not_in_policy, purpose_mismatch, expiry_beyond_limit.
    """

    status_code = 400
    code = "consent_not_allowed"


class AgencyNotServed(IdentityError):
    """The officer's client may not act for this agency."""

    status_code = 403
    code = "agency_not_served"


class OAuthError(IdentityError):
    """RFC 6749 section 5.2 errors; the code is the OAuth `error` value."""

    def __init__(self, code: str, detail: str, status_code: int = 400) -> None:
        super().__init__(detail, code=code, status_code=status_code)


class TokenThrottled(OAuthError):
    """Too many failed client authentications from this address: 429, secret left unchecked."""

    def __init__(self, retry_after_seconds: int) -> None:
        super().__init__(
            "slow_down",
            f"too many failed client authentications; retry after {retry_after_seconds} s",
            status_code=429,
        )
        self.retry_after_seconds = retry_after_seconds


class ConcurrentWrite(Exception):
    """Another transaction created or changed the same row first; the command is retried."""
