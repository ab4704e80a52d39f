"""Vocabulary of UU PDP (Law 27/2022) used across policies, consents and access records."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import StringConstraints


class LegalBasis(StrEnum):
    """UU PDP Art. 20(2): the lawful bases for processing personal data."""

    CONSENT = "consent"
    CONTRACT = "contract"
    LEGAL_OBLIGATION = "legal_obligation"
    VITAL_INTEREST = "vital_interest"
    PUBLIC_TASK = "public_task"
    LEGITIMATE_INTEREST = "legitimate_interest"


CODE_PATTERN = r"^[a-z0-9][a-z0-9-]{1,47}$"

AgencyCode = Annotated[str, StringConstraints(pattern=CODE_PATTERN)]
ServiceCode = Annotated[str, StringConstraints(pattern=CODE_PATTERN)]
PurposeCode = Annotated[str, StringConstraints(pattern=CODE_PATTERN)]
