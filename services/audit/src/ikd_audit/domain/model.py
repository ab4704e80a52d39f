"""Entries to append to the log; the log's format itself is `ikd_shared.transparency`."""

from __future__ import annotations

import dataclasses
import datetime as dt
import uuid
from dataclasses import dataclass

from ikd_shared.events.access_v1 import AccessRecorded
from ikd_shared.transparency import Entry


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
    def from_event(cls, event: AccessRecorded) -> NewEntry:
        return cls(
            access_id=event.access_id,
            occurred_at=event.occurred_at,
            agency=event.agency,
            service=event.service,
            pseudonym=event.pseudonym,
            fields=tuple(event.fields),
            purpose=event.purpose,
            legal_basis=event.legal_basis.value if event.legal_basis else None,
            channel=event.channel.value,
            outcome=event.outcome.value,
            reason=event.reason,
        )

    def at(self, position: int, recorded_at: dt.datetime) -> Entry:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return Entry(position=position, recorded_at=recorded_at, **values)


@dataclass(frozen=True, slots=True)
class Cosignature:
    """A witness's cosignature (c2sp.org/tlog-cosignature) of the checkpoint of one tree size."""

    tree_size: int
    witness: str  # the cosigner's key name
    key_id: int
    cosigned_at: dt.datetime
    line: str  # the signature line as the witness returned it
