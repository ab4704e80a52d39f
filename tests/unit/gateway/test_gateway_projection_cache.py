"""The projection reads each policy's services once per policy object: a replaced policy (a
reload, another agency in the same process) must be read afresh, never answered from another's."""

from __future__ import annotations

from ikd_gateway.domain.model import disclosed, field_expiry, fingerprint, project_profile
from tests.support.gateway_factories import NOW, POLICY, profile, pseudonym_of, relationship


def test_a_narrowed_policy_is_read_afresh() -> None:
    agency = POLICY.agency("polres-cirebon")
    first, second = agency.services[0], agency.services[1]
    related = [relationship(agency.code, s.code) for s in (first, second)]
    whole = field_expiry(agency, related, (), NOW)
    assert set(whole) == first.fields | second.fields
    narrowed = agency.model_copy(update={"services": (first,)})
    assert set(field_expiry(narrowed, related, (), NOW)) == first.fields
    widened_again = agency.model_copy(update={"services": (second,)})
    assert set(field_expiry(widened_again, related, (), NOW)) == second.fields
    # Another agency's policy is never answered from this one's.
    assert field_expiry(POLICY.agency("bank-bjb"), related, (), NOW) == {}


def test_disclosure_per_service_and_its_fingerprint() -> None:
    agency = POLICY.agency("polres-cirebon")
    citizen = profile(1)
    related = [relationship(agency.code, s.code) for s in agency.services]
    view = project_profile(
        agency=agency,
        pseudonym=pseudonym_of(citizen),
        version=1,
        profile=citizen,
        verified_at=NOW,
        relationships=related,
        consents=(),
        now=NOW,
    )
    assert view is not None
    disclosure = disclosed(agency, (), view, NOW)
    for service in agency.services:
        if service.needs_consent:
            assert service.code not in disclosure
        else:
            assert set(disclosure[service.code]) == service.fields & set(view.data)
    # Values shared by services hash once, to the digest each would have alone.
    shared = fingerprint(disclosure)
    for code, fields in disclosure.items():
        assert shared[code] == fingerprint({code: fields})[code]
