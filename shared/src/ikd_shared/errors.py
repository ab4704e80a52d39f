"""The base of every service's error hierarchy, free of any web framework.

Domain code raises these; `ikd_shared.api` turns them into RFC 9457 problem answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ApiError(Exception):
    """An error a caller is told about: an HTTP status, a stable code, a detail, extra members."""

    status_code = 400
    code = "bad_request"

    def __init__(
        self,
        detail: str,
        *,
        code: str | None = None,
        status_code: int | None = None,
        extras: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        if status_code is not None:
            self.status_code = status_code
        # More members of the problem body (RFC 9457 extension members).
        self.extras: dict[str, Any] = dict(extras or {})
