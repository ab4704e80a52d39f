"""Entries to append to the log; the log's format itself is `ikd_shared.transparency`."""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass
from enum import StrEnum

AUDITOR_CHANNEL = "auditor"  # an auditor's look-up, not an agency's access
AUDITOR_PREFIX = "auditor:"  # the accessor of a look-up: auditor:<client id>


class LookupAction(StrEnum):
    SEARCH = "search"  # a search or statistics filtered by the citizen
    ENTRY = "entry"  # one of the citizen's entries opened (with its proof)
    EXPORT = "export"  # the citizen's entries exported


@dataclass(frozen=True, slots=True)
class NewEntry:
    """An access to be appended; the log gives it a position."""

    access_id: uuid.UUID
    occurred_at: dt.datetime
    agency: str
    service: str | None
    pseudonym: str | None
    fields: tuple[str, ...]
    purpose: str | None
    legal_basis: str | None
    channel: str
    outcome: str
    reason: str | None

    @classmethod
    def lookup(
        cls, auditor: str, pseudonym: str, action: LookupAction, at: dt.datetime
    ) -> NewEntry:
        """An auditor's query naming a citizen: in the log, and so in the citizen's trail."""
        return cls(
            access_id=uuid.uuid4(),
            occurred_at=at,
            agency=f"{AUDITOR_PREFIX}{auditor}",
            service=None,
            pseudonym=pseudonym,
            fields=(),
            purpose=action.value,
            legal_basis=None,
            channel=AUDITOR_CHANNEL,
            outcome="served",
            reason=None,
        )


@dataclass(frozen=True, slots=True)
class Cosignature:
    """A witness's cosignature (c2sp.org/tlog-cosignature) of the checkpoint of one tree size."""

    tree_size: int
    witness: str  # the cosigner's key name
    key_id: int
    cosigned_at: dt.datetime
    line: str  # the signature line as the witness returned it
