"""The audit service's error hierarchy: each error carries its HTTP status and a stable code."""

from __future__ import annotations

from ikd_shared.errors import ApiError


class AuditError(ApiError):
    status_code = 400
    code = "audit_error"


class BadFilter(AuditError):
    code = "invalid_filter"


class BadCursor(AuditError):
    code = "invalid_cursor"


class PageTooLarge(AuditError):
    code = "page_size_too_large"


class BadProofRequest(AuditError):
    code = "invalid_proof_request"


class Unauthenticated(AuditError):
    status_code = 401
    code = "unauthenticated"


class Forbidden(AuditError):
    status_code = 403
    code = "insufficient_scope"


class NotFound(AuditError):
    status_code = 404
    code = "not_found"


class NoTreeHead(AuditError):
    status_code = 503
    code = "no_tree_head"


class TreeHeadPending(AuditError):
    """The signer (another process) did not sign the entries asked about in time."""

    status_code = 503
    code = "tree_head_pending"
