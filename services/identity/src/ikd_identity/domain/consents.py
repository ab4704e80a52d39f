"""What a consent may say: the rules the policy and an officer's desk set, as pure functions.

A consent is the legal basis of a consent-based service only: for a service resting on a legal
obligation, a public task or a contract it would allow nothing the policy does not already
allow, and it would let an agency hold a citizen beyond the reason the law gives it. So a
consent names a service of the policy whose legal basis is consent, at most that service's
fields, the service's purpose, and an expiry within the service's consent limit
(`consent_max_days`, by default its `retention_days`). The handlers ask these before they look
at the credential, so a refused request stores nothing and spends no credential.
"""

from __future__ import annotations

import datetime as dt

from ikd_identity.domain.commands import ConsentTerms, OfficerDesk
from ikd_identity.domain.errors import AgencyNotServed, ConsentNotAllowed, InvalidConsent
from ikd_shared.policy import MppPolicy, PolicyError, ServicePolicy


def check_desk(desk: OfficerDesk | None, agency: str) -> None:
    """An officer's client acts only for the agencies it is registered to serve."""
    if desk is not None and agency not in desk.serves:
        raise AgencyNotServed(f"client {desk.client_id} does not serve agency {agency}")


def consent_service(policy: MppPolicy, agency: str, service: str) -> ServicePolicy:
    try:
        found = policy.agency(agency).service(service)
    except PolicyError:
        found = None
    if found is None:
        raise ConsentNotAllowed(
            f"{agency}/{service} is not a service of {policy.mpp.code}", code="unknown_service"
        )
    if not found.needs_consent:
        raise ConsentNotAllowed(
            f"{agency}/{service} rests on {found.legal_basis.value}, not on consent",
            code="consent_not_applicable",
        )
    return found


def consent_period(
    policy: MppPolicy, terms: ConsentTerms, now: dt.datetime
) -> tuple[dt.datetime, dt.datetime]:
    """The consent's (starts_at, expires_at) if the policy allows the terms."""
    service = consent_service(policy, terms.agency, terms.service)
    beyond = sorted(set(terms.fields) - service.fields)
    if beyond:
        raise ConsentNotAllowed(
            f"{terms.agency}/{terms.service} may not use: {', '.join(beyond)}",
            code="fields_not_in_policy",
        )
    if terms.purpose_code != service.purpose.code:
        raise ConsentNotAllowed(
            f"the purpose of {terms.agency}/{terms.service} is {service.purpose.code}",
            code="purpose_mismatch",
        )
    starts_at = terms.starts_at or now
    if starts_at.tzinfo is None or terms.expires_at.tzinfo is None:
        raise InvalidConsent("starts_at and expires_at need a time zone")
    if terms.expires_at <= max(starts_at, now):
        raise InvalidConsent("expires_at must be after starts_at and in the future")
    limit = dt.timedelta(days=service.consent_limit_days)
    if terms.expires_at > now + limit:
        raise ConsentNotAllowed(
            f"a consent to {terms.agency}/{terms.service} lasts at most {limit.days} days",
            code="expiry_beyond_limit",
        )
    return starts_at, terms.expires_at
