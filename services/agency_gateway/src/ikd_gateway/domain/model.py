"""The agency's minimised view of a citizen, and the rules that decide what it may hold.

Everything here is pure: given the agency's policy, the citizen's relationships with the agency,
its consents and a time, it says whether the agency may hold the citizen at all, which fields
it may store, until when, and which fields one service may read. The same functions decide what
goes into the view, into a prefill answer, into a webhook body and into the agency topic, so the
four can never disagree.

An agency holds a citizen only while a relationship in force names one of its services (UU PDP
purpose limitation). A service that rests on another basis than consent gets its fields from its
own service requests and registrations, until each one's expiry; a consent-based service gets
the fields its consents name, while a consent relationship for it is in force.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from ikd_shared.events.consent_v1 import Consent
from ikd_shared.events.profile_v1 import (
    CitizenProfile,
    Relationship,
    RelationshipKind,
    flatten,
)
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
    relationships: tuple[Relationship, ...] = ()
    """The agency's own relationships with the citizen (never another agency's): the reasons
    the row exists, kept to decide again as time passes."""
    floor_until: dt.datetime | None = None
    """Set on a version floor (`version_floor`): when the retention sweep deletes it."""

    @property
    def is_floor(self) -> bool:
        return self.floor_until is not None

    @property
    def next_expiry(self) -> dt.datetime | None:
        """When the row must be decided again: a field or a relationship runs out, or a
        floor's time is up."""
        times = [*self.expires.values(), *(r.expires_at for r in self.relationships)]
        if self.floor_until is not None:
            times.append(self.floor_until)
        return min(times) if times else None

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


def agency_relationships(
    agency: AgencyPolicy, relationships: Iterable[Relationship], now: dt.datetime
) -> tuple[Relationship, ...]:
    """The relationships in force that name one of this agency's services, in a stable order.

    Identity publishes only relationships in force; here only their end is checked, so that a
    clock a little behind identity's cannot drop a relationship that has just started.
    """
    codes = _compiled(agency).codes
    code = agency.code
    mine = {
        r.relationship_id: r
        for r in relationships
        if r.agency == code and r.service in codes and r.expires_at > now
    }
    return tuple(sorted(mine.values(), key=lambda r: (r.service, str(r.relationship_id))))


def holds(view: CitizenView | None, now: dt.datetime) -> bool:
    """Whether the agency may hold the citizen now: a relationship of the row is in force."""
    return (
        view is not None and not view.erased and any(r.expires_at > now for r in view.relationships)
    )


@dataclass(frozen=True, slots=True)
class _Service:
    """What the projection reads of one service, read off its policy once."""

    policy: ServicePolicy
    code: str
    fields: frozenset[str]
    needs_consent: bool


@dataclass(frozen=True, slots=True)
class _Compiled:
    agency: AgencyPolicy
    codes: frozenset[str]
    services: tuple[_Service, ...]
    by_code: dict[str, _Service]


_COMPILED: dict[int, _Compiled] = {}


def _compiled(agency: AgencyPolicy) -> _Compiled:
    """The agency's services as the projection reads them, per policy object rather than per
    record (a policy is immutable; a process holds one per agency it serves)."""
    found = _COMPILED.get(id(agency))
    if found is None or found.agency is not agency:
        services = tuple(_Service(s, s.code, s.fields, s.needs_consent) for s in agency.services)
        found = _Compiled(
            agency,
            frozenset(s.code for s in services),
            services,
            {s.code: s for s in services},
        )
        if len(_COMPILED) >= 1024:  # policies replaced again and again: don't keep them all
            _COMPILED.clear()
        _COMPILED[id(agency)] = found
    return found


def _service_of(service: ServicePolicy) -> _Service:
    return _Service(service, service.code, service.fields, service.needs_consent)


def _grants(
    service: _Service,
    relationships: Iterable[Relationship],
    consents: Iterable[Consent],
    now: dt.datetime,
) -> list[tuple[frozenset[str], dt.datetime]]:
    """What the service may hold now, as (fields, until) per reason."""
    code = service.code
    mine = [r for r in relationships if r.service == code and r.expires_at > now]
    if not mine:
        return []
    if not service.needs_consent:
        return [
            (service.fields, r.expires_at) for r in mine if r.kind is not RelationshipKind.CONSENT
        ]
    consented = [r.expires_at for r in mine if r.kind is RelationshipKind.CONSENT]
    if not consented:
        return []
    until = max(consented)
    return [
        (frozenset(service.fields & set(c.fields)), min(until, c.expires_at))
        for c in consents
        if c.service == code and c.covers(now)
    ]


def service_grant(
    service: ServicePolicy,
    relationships: Iterable[Relationship],
    consents: Iterable[Consent],
    now: dt.datetime,
) -> frozenset[str] | None:
    """Fields the service may use now; None when it needs a consent the citizen has not given."""
    return _service_grant(_service_of(service), relationships, consents, now)


def _service_grant(
    service: _Service,
    relationships: Iterable[Relationship],
    consents: Iterable[Consent],
    now: dt.datetime,
) -> frozenset[str] | None:
    grants = _grants(service, relationships, consents, now)
    if not grants:
        return None if service.needs_consent else frozenset()
    if len(grants) == 1:
        return grants[0][0]
    return frozenset().union(*(names for names, _ in grants))


def field_expiry(
    agency: AgencyPolicy,
    relationships: Iterable[Relationship],
    consents: Iterable[Consent],
    now: dt.datetime,
) -> dict[str, dt.datetime]:
    """Each field the agency may hold now, with the time it must be purged.

    A field is kept as long as the longest-lasting reason among its services: a service
    request's or registration's expiry, a consent's (and its relationship's).
    """
    relationships, consents = tuple(relationships), tuple(consents)
    expiry: dict[str, dt.datetime] = {}
    for service in _compiled(agency).services:
        for names, until in _grants(service, relationships, consents, now):
            if until <= now:
                continue
            for name in names:
                if name not in expiry or expiry[name] < until:
                    expiry[name] = until
    return expiry


def project_profile(
    *,
    agency: AgencyPolicy,
    pseudonym: str,
    version: int,
    profile: CitizenProfile,
    verified_at: dt.datetime,
    relationships: Iterable[Relationship],
    consents: Iterable[Consent],
    now: dt.datetime,
    source: SourcePosition | None = None,
) -> CitizenView | None:
    """The view row for one profile version: the profile minus every field not granted.

    None when no relationship in force names one of the agency's services: nothing may be
    held of the citizen.
    """
    mine = agency_relationships(agency, relationships, now)
    if not mine:
        return None
    expires = field_expiry(agency, mine, consents, now)
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
        relationships=mine,
    )


def restrict(
    view: CitizenView, agency: AgencyPolicy, consents: Iterable[Consent], now: dt.datetime
) -> CitizenView | None:
    """The row after a consent change or at a retention check: fields no longer granted go,
    and the whole row (None) once no relationship is left in force.

    Fields the new consents grant but the row lacks are not invented; the caller re-reads the
    profile record to add them (see `missing_fields`).
    """
    if view.erased or view.verified_at is None:
        return view
    mine = agency_relationships(agency, view.relationships, now)
    if not mine:
        return None
    allowed = field_expiry(agency, mine, consents, now)
    data = {name: value for name, value in view.data.items() if name in allowed}
    expires = {name: allowed[name] for name in data}
    return replace(view, data=data, expires=expires, relationships=mine)


def missing_fields(
    view: CitizenView, agency: AgencyPolicy, consents: Iterable[Consent], now: dt.datetime
) -> frozenset[str]:
    """Fields the agency may now hold that the row does not have (a consent just granted)."""
    if view.erased or view.verified_at is None:
        return frozenset()
    allowed = field_expiry(agency, view.relationships, consents, now)
    return frozenset(allowed) - set(view.data)


def erased(pseudonym: str, version: int) -> CitizenView:
    """What remains of a citizen after death, revocation or erasure: the version, no data."""
    return CitizenView(
        pseudonym=pseudonym, version=version, data={}, expires={}, verified_at=None, erased=True
    )


def version_floor(pseudonym: str, version: int, until: dt.datetime) -> CitizenView:
    """What remains of a citizen the agency held and no longer may: the pseudonym and the last
    version, nothing else, until `until`.

    Without it an older version delivered again (identity's relay re-sending a suffix after a
    takeover, a re-read of the compacted topic before it dropped the older versions) would find
    no row to be older than, and be stored as new. A newer version that relates the citizen
    again replaces it; the retention sweep deletes it once its time is up.
    """
    return CitizenView(
        pseudonym=pseudonym,
        version=version,
        data={},
        expires={},
        verified_at=None,
        floor_until=until,
    )


def answer_fields(
    service: ServicePolicy, consents: Iterable[Consent], view: CitizenView, now: dt.datetime
) -> dict[str, Any] | None:
    """What one service may read from the row now; None if it needs a missing consent."""
    return _answer(_service_of(service), consents, view, now, None)


def _answer(
    service: _Service,
    consents: Iterable[Consent],
    view: CitizenView,
    now: dt.datetime,
    live: frozenset[str] | None,
) -> dict[str, Any] | None:
    granted = _service_grant(service, view.relationships, consents, now)
    if granted is None:
        return None
    if view.verified_at is None:
        return {}
    if live is None:
        live = view.live_fields(now)
    data = view.data
    return {name: data[name] for name in sorted(granted & live) if name in data}


def disclosed(
    agency: AgencyPolicy, consents: Iterable[Consent], view: CitizenView | None, now: dt.datetime
) -> dict[str, dict[str, Any]]:
    """Per service, what it may read of the row now: its prefill answer, its webhook fields.

    Services that may read nothing are left out; an empty result means the agency may hold
    nothing of the citizen (what its agency topic then says with a tombstone).
    """
    if view is None or not holds(view, now):
        return {}
    consents = tuple(consents)
    live = view.live_fields(now)  # once for every service
    found = {}
    for service in _compiled(agency).services:
        fields = _answer(service, consents, view, now, live)
        if fields:
            found[service.code] = fields
    return found


Fingerprint = dict[str, dict[str, str]]
"""Per service, a digest of each disclosed field's value: what was last published, without
keeping the values twice."""


def fingerprint(disclosure: Mapping[str, Mapping[str, Any]]) -> Fingerprint:
    # Services mostly share fields, read from the same row: each value is hashed once.
    digests: dict[int, str] = {}
    found: Fingerprint = {}
    for service, fields in sorted(disclosure.items()):
        digested = found[service] = {}
        for name, value in sorted(fields.items()):
            digest = digests.get(id(value))
            if digest is None:
                digest = digests[id(value)] = _digest(value)
            digested[name] = digest
    return found


def changed_fields(before: Fingerprint, after: Fingerprint) -> list[str]:
    """Field names added, removed or changed for any service between two fingerprints."""
    changed: set[str] = set()
    for service in before.keys() | after.keys():
        old, new = before.get(service, {}), after.get(service, {})
        changed |= {name for name in old.keys() | new.keys() if old.get(name) != new.get(name)}
    return sorted(changed)


def _digest(value: Any) -> str:
    # Dates as in JSON: a fresh projection holds date objects, a row read back ISO strings.
    # Strings and dates (nearly every field) skip json.dumps for its C string encoder: the same
    # text, so digests already published stay equal.
    if isinstance(value, str):
        return _string_digest(value)
    if isinstance(value, dt.date):
        return _string_digest(value.isoformat())
    encoded = json.dumps(value, sort_keys=True, default=_iso, separators=(",", ":"))
    return hashlib.sha256(encoded.encode()).hexdigest()


@functools.lru_cache(maxsize=1 << 14)
def _string_digest(value: str) -> str:
    # Many values recur across citizens (a city, a religion, an occupation): hashed once each.
    return hashlib.sha256(_json_string(value).encode()).hexdigest()


_json_string: Callable[[str], str] = json.encoder.encode_basestring_ascii


def _iso(value: Any) -> str:
    return value.isoformat() if isinstance(value, dt.date) else str(value)
