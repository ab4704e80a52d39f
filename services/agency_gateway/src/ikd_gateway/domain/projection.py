"""The projection of the profile stream onto one citizen's row, as a pure fold.

A batch of profile records is applied citizen by citizen: each record is folded, in order,
over the citizen's row in memory (versions guard, erasures purge, stale events change
nothing). A version whose relationships name none of the agency's services purges the citizen
as if erased: of a citizen the agency held only a version floor is left (the pseudonym and that
version, for a bounded time: `model.version_floor`), so that an older version delivered again
is refused; of a citizen it never held, nothing at all. A floor counts as no row, except that it
refuses versions not newer than its own (and rises with newer ones it sees). What the fold
leaves says what to write: the final row, whether to cancel the citizen's pending webhook
messages and drop their consents, and which record's projection the row now is (its access
event and webhook messages). Re-projecting a version the row already has, after a consent
granted fields the row lacks, is one more case of the same fold.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace
from typing import Any

from ikd_gateway.domain.model import (
    CitizenView,
    SourcePosition,
    erased,
    project_profile,
    version_floor,
)
from ikd_shared.events.consent_v1 import Consent
from ikd_shared.events.profile_v1 import (
    CitizenDied,
    CredentialRevoked,
    ProfileEvent,
    ProfileUpdated,
    ProfileVerified,
    RelationshipsChanged,
)
from ikd_shared.policy import AgencyPolicy


@dataclass(frozen=True, slots=True)
class Change:
    """One profile record to fold (`event` None for a tombstone)."""

    pseudonym: str
    event: ProfileEvent | None
    source: SourcePosition | None = None
    reapply: bool = False
    """Re-project the version the row already has (a consent granted fields it lacks)."""


@dataclass(frozen=True, slots=True)
class Step:
    """What folding one record did."""

    applied: bool
    reason: str


@dataclass
class CitizenFold:
    """One citizen's row while its records of a batch are folded, in order."""

    row: CitizenView | None
    consents: tuple[Consent, ...]
    baseline: dict[str, Any]
    """The data the pending webhook messages are relative to (the row before the batch, or
    the row when its messages were last cancelled)."""
    stored: int | None = None
    """The index of the record whose projection the row now is, if it was written here."""
    announce: bool = False
    """Whether the stored projection's webhook messages still stand (not cancelled since)."""
    cancel: bool = False
    delete_consents: bool = False

    @classmethod
    def start(cls, row: CitizenView | None, consents: tuple[Consent, ...]) -> CitizenFold:
        return cls(
            row=row,
            consents=consents,
            baseline=dict(row.data) if row and not row.erased else {},
        )

    @property
    def changed(self) -> set[str]:
        """The row's fields that differ from the baseline (what webhooks announce)."""
        data = self.row.data if self.row is not None else {}
        return {name for name, value in data.items() if self.baseline.get(name) != value}


def fold(
    state: CitizenFold,
    index: int,
    change: Change,
    agency: AgencyPolicy,
    now: dt.datetime,
    floor_until: dt.datetime,
) -> Step:
    """Fold one record (the `index`-th of its batch) over the citizen's row; a purge leaves a
    floor until `floor_until`."""
    event = change.event
    current = state.row
    if change.reapply:
        if (
            isinstance(event, ProfileVerified | ProfileUpdated | RelationshipsChanged)
            and current is not None
            and not current.erased
            and not current.is_floor
            and current.version == event.version
        ):
            return _store(state, index, change, event, agency, now, floor_until)
        return Step(False, "stale")
    if event is None:  # a tombstone: erase whatever version is there
        if current is None or current.erased or current.is_floor:
            state.delete_consents = True
            state.consents = ()
            return Step(False, "nothing to erase")
        return _erase(state, erased(change.pseudonym, current.version))
    if isinstance(event, CitizenDied | CredentialRevoked):
        if current is not None and current.version >= event.version:
            state.cancel = True  # a stale death still cancels the pending messages
            state.announce = False
            state.baseline = dict(current.data) if not current.erased else {}
            return Step(False, "stale")
        if current is None or current.is_floor:  # not held: nothing kept of the death
            if current is not None:
                state.row = _raised(current, event.version)
            state.cancel = True
            state.delete_consents = True
            state.consents = ()
            return Step(False, "not held")
        return _erase(state, erased(change.pseudonym, event.version))
    if isinstance(event, ProfileVerified | ProfileUpdated | RelationshipsChanged):
        if current is not None and current.version >= event.version:
            return Step(False, "stale")
        return _store(state, index, change, event, agency, now, floor_until)
    return Step(False, "ignored")  # pragma: no cover - decode() yields only the above


def _store(
    state: CitizenFold,
    index: int,
    change: Change,
    event: ProfileVerified | ProfileUpdated | RelationshipsChanged,
    agency: AgencyPolicy,
    now: dt.datetime,
    floor_until: dt.datetime,
) -> Step:
    row = project_profile(
        agency=agency,
        pseudonym=change.pseudonym,
        version=event.version,
        profile=event.profile,
        verified_at=event.verified_at,
        relationships=event.relationships,
        consents=state.consents,
        now=now,
        source=change.source,
    )
    if row is None:
        return _drop(state, version_floor(change.pseudonym, event.version, floor_until))
    state.row = row
    state.stored = index
    state.announce = True
    return Step(True, "stored")


def _drop(state: CitizenFold, floor: CitizenView) -> Step:
    """No reason left to hold the citizen: a row gives way to `floor` (a floor already there
    only rises to its version), pending messages are cancelled; the consents stay (they are the
    consent topic's, which says when they end)."""
    current = state.row
    held = current is not None and not current.is_floor
    if held:
        state.row = floor
    elif current is not None:
        state.row = _raised(current, floor.version)
    state.stored = None
    state.announce = False
    state.cancel = True
    state.baseline = {}
    return Step(held, "purged" if held else "not related")


def _raised(floor: CitizenView, version: int) -> CitizenView:
    """The floor refusing versions up to `version` too (the caller checked it is newer), until
    the same end: a floor is kept for a bounded time after the purge, whatever follows."""
    return replace(floor, version=version)


def _erase(state: CitizenFold, view: CitizenView) -> Step:
    state.row = view
    state.stored = None
    state.announce = False
    state.cancel = True
    state.baseline = {}
    state.delete_consents = True
    state.consents = ()
    return Step(True, "erased")
