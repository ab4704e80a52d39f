"""Relationships: why an agency's service may hold a citizen, and until when (pure rules).

A service request starts when a verification names the service, a registration when the
agency registers the citizen under its legal duty; each expires `retention_days` (from the
policy) after it started or was last renewed, and ends early when the citizen dies or Dukcapil
revokes their credential. A consent is mirrored as a relationship of kind consent with the
consent's own period. Whoever publishes a citizen's record attaches `in_force(...)` to it.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from ikd_identity.domain.errors import (
    RegistrationRefused,
    ServicesRequired,
    UnknownService,
)
from ikd_shared.events.consent_v1 import Consent
from ikd_shared.events.profile_v1 import Relationship, RelationshipKind
from ikd_shared.legal import LegalBasis
from ikd_shared.policy import AgencyPolicy, MppPolicy, ServicePolicy


@dataclass(frozen=True, slots=True)
class RelationshipRecord:
    """A stored relationship: the published part plus who recorded it and whether it ended."""

    pseudonym: str
    relationship: Relationship
    recorded_by: str  # the client id (for a mirrored consent: 'citizen' or the officer's client)
    ended_at: dt.datetime | None = None

    @property
    def relationship_id(self) -> uuid.UUID:
        return self.relationship.relationship_id

    def in_force(self, at: dt.datetime) -> bool:
        return self.ended_at is None and self.relationship.covers(at)


@dataclass(frozen=True, slots=True)
class OfferedService:
    """A service of the policy together with the agency that offers it."""

    agency: AgencyPolicy
    service: ServicePolicy


def find_service(policy: MppPolicy, code: str) -> OfferedService | None:
    """The policy's service with this code (codes are unique across the MPP)."""
    for agency in policy.agencies:
        service = agency.service(code)
        if service is not None:
            return OfferedService(agency, service)
    return None


def requested_services(
    policy: MppPolicy, counter_agency: str, named: Sequence[str] | None
) -> list[OfferedService]:
    """The services a verification is for: those named, or the counter's only service.

    Named services may belong to any agency (the MPP's front desk serves them all). Without
    names, an agency counter means its own service when it offers exactly one; a counter of
    several services, or a front desk that is no agency of the policy, must name them.
    """
    if named:
        found = {code: find_service(policy, code) for code in dict.fromkeys(named)}
        unknown = sorted(code for code, offered in found.items() if offered is None)
        if unknown:
            raise UnknownService(
                f"not services of {policy.mpp.code}: {', '.join(unknown)}",
                extras={"unknown_services": unknown},
            )
        return [offered for offered in found.values() if offered is not None]
    agency = next((a for a in policy.agencies if a.code == counter_agency), None)
    if agency is None:
        raise ServicesRequired(
            f"{counter_agency} is no agency of {policy.mpp.code}: name the services the "
            "citizen came for"
        )
    if len(agency.services) != 1:
        raise ServicesRequired(
            f"{counter_agency} offers {len(agency.services)} services: name the ones the "
            "citizen came for",
            extras={"services": [service.code for service in agency.services]},
        )
    return [OfferedService(agency, agency.services[0])]


def registrable_service(policy: MppPolicy, agency_code: str, code: str) -> OfferedService:
    """The service an agency registers a citizen for, if the policy lets it."""
    offered = find_service(policy, code)
    if offered is None or offered.agency.code != agency_code:
        raise RegistrationRefused(
            f"{code} is not a service of {agency_code}", code="service_not_of_agency"
        )
    if not offered.service.registration:
        raise RegistrationRefused(
            f"the policy does not let {agency_code} register citizens for {code}",
            code="service_not_registrable",
        )
    return offered


def expiry(service: ServicePolicy, starts_at: dt.datetime) -> dt.datetime:
    return starts_at + dt.timedelta(days=service.retention_days)


def start_or_renew(
    existing: Iterable[RelationshipRecord],
    offered: OfferedService,
    *,
    pseudonym: str,
    kind: RelationshipKind,
    now: dt.datetime,
    recorded_by: str,
    legal_reference: str | None = None,
) -> RelationshipRecord:
    """A new relationship, or the one of the same kind and service in force, renewed.

    Renewing keeps the relationship's id and start and moves its expiry to a full retention
    period from now, so asking again never piles up relationships.
    """
    expires_at = expiry(offered.service, now)
    for record in existing:
        current = record.relationship
        if (
            record.in_force(now)
            and current.kind is kind
            and (current.agency, current.service) == (offered.agency.code, offered.service.code)
        ):
            renewed = current.model_copy(
                update={
                    "expires_at": expires_at,
                    "legal_reference": legal_reference or current.legal_reference,
                }
            )
            return replace(record, relationship=renewed)
    relationship = Relationship(
        relationship_id=uuid.uuid4(),
        kind=kind,
        agency=offered.agency.code,
        service=offered.service.code,
        legal_basis=offered.service.legal_basis,
        legal_reference=legal_reference or offered.service.legal_reference,
        starts_at=now,
        expires_at=expires_at,
    )
    return RelationshipRecord(pseudonym, relationship, recorded_by)


def consent_relationship(
    consent_id: uuid.UUID,
    agency: str,
    service: str,
    starts_at: dt.datetime,
    expires_at: dt.datetime,
) -> Relationship:
    """A consent as a relationship: same id and period, legal basis consent."""
    return Relationship(
        relationship_id=consent_id,
        kind=RelationshipKind.CONSENT,
        agency=agency,
        service=service,
        legal_basis=LegalBasis.CONSENT,
        starts_at=starts_at,
        expires_at=expires_at,
    )


def of_consent(consent: Consent) -> Relationship:
    return consent_relationship(
        consent.consent_id, consent.agency, consent.service, consent.starts_at, consent.expires_at
    )


def in_force(
    records: Iterable[RelationshipRecord],
    at: dt.datetime,
    *,
    changed: Iterable[RelationshipRecord] = (),
) -> list[Relationship]:
    """The relationships in force at `at`, `changed` replacing stored records of the same id.

    Sorted by agency, service, kind and start, so that equal sets publish equal lists.
    """
    by_id = {record.relationship_id: record for record in records}
    by_id.update((record.relationship_id, record) for record in changed)
    return sorted(
        (record.relationship for record in by_id.values() if record.in_force(at)),
        key=lambda r: (r.agency, r.service, r.kind.value, r.starts_at, str(r.relationship_id)),
    )
