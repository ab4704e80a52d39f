"""Citizen pseudonyms: the only citizen identifier in Kafka keys, headers and logs."""

from __future__ import annotations

import hashlib
import hmac
import re
from typing import Annotated

from pydantic import StringConstraints

PSEUDONYM_PATTERN = r"^[0-9a-f]{64}$"
_PSEUDONYM_RE = re.compile(PSEUDONYM_PATTERN)

Pseudonym = Annotated[str, StringConstraints(pattern=PSEUDONYM_PATTERN)]
"""Lower-case hex HMAC-SHA256 of a NIK."""


def pseudonymize(nik: str, key: bytes) -> str:
    """HMAC-SHA256 of the NIK under the platform's pseudonym key, as lower-case hex."""
    return hmac.new(key, nik.encode("ascii"), hashlib.sha256).hexdigest()


def is_pseudonym(value: str) -> bool:
    return _PSEUDONYM_RE.fullmatch(value) is not None
