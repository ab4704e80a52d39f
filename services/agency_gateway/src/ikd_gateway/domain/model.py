"""The agency's minimised view of a citizen, and the rules that decide what it may hold.

Everything here is pure: given the agency's policy, the citizen's consents and a time, it says
which fields may be stored, until when, and which fields one service may read. The same
functions decide what goes into the view, into a prefill answer, into a webhook body and into
the agency topic, so the four can never disagree.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ikd_shared.events.consent_v1 import Consent
from ikd_shared.events.profile_v1 import CitizenProfile, flatten
from ikd_shared.policy import AgencyPolicy, ServicePolicy


@dataclass(frozen=True, slots=True)
class SourcePosition:
    """Where on the profile topic the stored version came from (to re-read it by offset)."""

    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class CitizenView:
    """One row of the agency's view: only granted fields, each with the time it must go."""

    pseudonym: str
    version: int
    data: Mapping[str, Any]
    expires: Mapping[str, dt.datetime]
    verified_at: dt.datetime | None
    erased: bool = False
    source: SourcePosition | None = None

    @property
    def next_expiry(self) -> dt.datetime | None:
        return min(self.expires.values()) if self.expires else None

    def live_fields(self, now: dt.datetime) -> frozenset[str]:
        return frozenset(name for name, until in self.expires.items() if until > now)


@dataclass(frozen=True, slots=True)
class ConsentSet:
    """The citizen's active consents for this agency, replaced whole by each consent event."""

    pseudonym: str
    version: int
    consents: tuple[Consent, ...] = field(default_factory=tuple)


def consents_for_agency(consents: Iterable[Consent], agency: str) -> tuple[Consent, ...]:
    """Only the consents given to this agency (the others are none of its business)."""
    return tuple(c for c in consents if c.agency == agency)


def service_grant(
    service: ServicePolicy, consents: Iterable[Consent], now: dt.datetime
) -> frozenset[str] | None:
    """Fields the service may use now; None when it needs a consent the citizen has not given."""
    if not service.needs_consent:
        return service.fields
    granted: set[str] = set()
    found = False
    for consent in consents:
        if consent.service == service.code and consent.covers(now):
            found = True
            granted.update(service.fields & set(consent.fields))
    return frozenset(granted) if found else None


def field_expiry(
    agency: AgencyPolicy, consents: Iterable[Consent], base: dt.datetime, now: dt.datetime
) -> dict[str, dt.datetime]:
    """Each field the agency may hold now, with the time it must be purged.

    A field is kept for the longest retention among the services entitled to it; a field a
    service holds by consent goes at the consent's expiry at the latest.
    """
    consents = tuple(consents)
    expiry: dict[str, dt.datetime] = {}
    for service in agency.services:
        until = base + dt.timedelta(days=service.retention_days)
        if service.needs_consent:
            grants = [
                (frozenset(service.fields & set(c.fields)), min(until, c.expires_at))
                for c in consents
                if c.service == service.code and c.covers(now)
            ]
        else:
            grants = [(service.fields, until)]
        for names, grant_until in grants:
            if grant_until <= now:
                continue
            for name in names:
                if name not in expiry or expiry[name] < grant_until:
                    expiry[name] = grant_until
    return expiry


def project_profile(
    *,
    agency: AgencyPolicy,
    pseudonym: str,
    version: int,
    profile: CitizenProfile,
    verified_at: dt.datetime,
    consents: Iterable[Consent],
    now: dt.datetime,
    source: SourcePosition | None = None,
) -> CitizenView:
    """The view row for one profile version: the profile minus every field not granted."""
    expires = field_expiry(agency, consents, verified_at, now)
    flat = flatten(profile)
    data = {name: flat[name] for name in sorted(expires) if name in flat}
    expires = {name: expires[name] for name in data}
    return CitizenView(
        pseudonym=pseudonym,
        version=version,
        data=data,
        expires=expires,
        verified_at=verified_at,
        source=source,
    )


def restrict(
    view: CitizenView, agency: AgencyPolicy, consents: Iterable[Consent], now: dt.datetime
) -> CitizenView:
    """The row after a consent change or at a retention check: fields no longer granted go.

    Fields the new consents grant but the row lacks are not invented; the caller re-reads the
    profile record to add them (see `missing_fields`).
    """
    if view.erased or view.verified_at is None:
        return view
    allowed = field_expiry(agency, consents, view.verified_at, now)
    data = {name: value for name, value in view.data.items() if name in allowed}
    expires = {name: allowed[name] for name in data}
    return replace(view, data=data, expires=expires)


def missing_fields(
    view: CitizenView, agency: AgencyPolicy, consents: Iterable[Consent], now: dt.datetime
) -> frozenset[str]:
    """Fields the agency may now hold that the row does not have (a consent just granted)."""
    if view.erased or view.verified_at is None:
        return frozenset()
    return frozenset(field_expiry(agency, consents, view.verified_at, now)) - set(view.data)


def erased(pseudonym: str, version: int) -> CitizenView:
    """What remains of a citizen after death, revocation or erasure: the version, no data."""
    return CitizenView(
        pseudonym=pseudonym, version=version, data={}, expires={}, verified_at=None, erased=True
    )


def answer_fields(
    service: ServicePolicy, consents: Iterable[Consent], view: CitizenView, now: dt.datetime
) -> dict[str, Any] | None:
    """What one service may read from the row now; None if it needs a missing consent."""
    granted = service_grant(service, consents, now)
    if granted is None:
        return None
    if (
        view.verified_at is None
        or view.verified_at + dt.timedelta(days=service.retention_days) <= now
    ):
        return {}
    live = view.live_fields(now)
    return {name: view.data[name] for name in sorted(granted & live) if name in view.data}


def disclosed(
    agency: AgencyPolicy, consents: Iterable[Consent], view: CitizenView | None, now: dt.datetime
) -> dict[str, dict[str, Any]]:
    """Per service, what it may read of the row now: its prefill answer, its webhook fields.

    Services that may read nothing are left out; an empty result means the agency may hold
    nothing of the citizen (what its agency topic then says with a tombstone).
    """
    if view is None or view.erased:
        return {}
    consents = tuple(consents)
    found = {}
    for service in agency.services:
        fields = answer_fields(service, consents, view, now)
        if fields:
            found[service.code] = fields
    return found


Fingerprint = dict[str, dict[str, str]]
"""Per service, a digest of each disclosed field's value: what was last published, without
keeping the values twice."""


def fingerprint(disclosure: Mapping[str, Mapping[str, Any]]) -> Fingerprint:
    return {
        service: {name: _digest(value) for name, value in sorted(fields.items())}
        for service, fields in sorted(disclosure.items())
    }


def changed_fields(before: Fingerprint, after: Fingerprint) -> list[str]:
    """Field names added, removed or changed for any service between two fingerprints."""
    changed: set[str] = set()
    for service in before.keys() | after.keys():
        old, new = before.get(service, {}), after.get(service, {})
        changed |= {name for name in old.keys() | new.keys() if old.get(name) != new.get(name)}
    return sorted(changed)


def _digest(value: Any) -> str:
    # Dates as in JSON: a fresh projection holds date objects, a row read back ISO strings.
    encoded = json.dumps(value, sort_keys=True, default=_iso, separators=(",", ":"))
    return hashlib.sha256(encoded.encode()).hexdigest()


def _iso(value: Any) -> str:
    return value.isoformat() if isinstance(value, dt.date) else str(value)
