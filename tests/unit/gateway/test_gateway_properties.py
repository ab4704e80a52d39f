"""Property: whatever the policy, relationships, consents and profile, nothing leaks outside
policy ∩ (the services a relationship in force names) ∩ (consent where needed).

Checked at the four places data leaves the profile: the view row, the prefill answer, the
webhook body and the agency topic's record.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ikd_gateway.domain.model import SourcePosition, erased
from ikd_gateway.service_layer.context import GatewayContext
from ikd_gateway.service_layer.prefill import DeniedRequest, prefill
from ikd_gateway.service_layer.stream import (
    ConsentRecord,
    ProfileRecord,
    apply_consents,
    apply_profile,
    sweep_retention,
)
from ikd_gateway.service_layer.unit_of_work import Endpoint
from ikd_gateway.service_layer.webhooks import Dispatcher, RetryPolicy
from ikd_shared.events.consent_v1 import Consent
from ikd_shared.events.profile_v1 import (
    PROFILE_FIELDS,
    ProfileVerified,
    Relationship,
    RelationshipKind,
    flatten,
)
from ikd_shared.legal import LegalBasis
from ikd_shared.policy import AgencyKind, AgencyPolicy, Purpose, ServicePolicy
from tests.support.gateway_factories import (
    NOW,
    PSEUDONYM_KEY,
    consent,
    consent_event,
    profile,
    pseudonym_of,
)
from tests.support.gateway_fakes import FakeUnitOfWork, Store

AGENCY = "test-agency"
field_sets = st.frozensets(st.sampled_from(PROFILE_FIELDS), min_size=1)


@st.composite
def agency_policies(draw: st.DrawFn) -> AgencyPolicy:
    count = draw(st.integers(1, 4))
    services = tuple(
        ServicePolicy(
            code=f"service-{i}",
            name=f"Service {i}",
            fields=draw(field_sets),
            purpose=Purpose(code=f"purpose-{i}", text="a purpose for the property test"),
            legal_basis=draw(st.sampled_from(list(LegalBasis))),
            legal_reference="Test law",
            retention_days=draw(st.integers(1, 3000)),
        )
        for i in range(count)
    )
    return AgencyPolicy(
        code=AGENCY, name="Test agency", kind=AgencyKind.REGENCY_OFFICE, services=services
    )


@st.composite
def consent_sets(draw: st.DrawFn, pseudonym: str) -> list[Consent]:
    consents = []
    for _ in range(draw(st.integers(0, 5))):
        consents.append(
            consent(
                pseudonym,
                draw(st.sampled_from([AGENCY, "other-agency"])),
                f"service-{draw(st.integers(0, 4))}",
                sorted(draw(field_sets)),
                expires_at=NOW + dt.timedelta(days=draw(st.integers(-30, 400))),
                starts_at=NOW - dt.timedelta(days=draw(st.integers(-5, 30))),
            )
        )
    return consents


@st.composite
def relationship_sets(draw: st.DrawFn) -> list[Relationship]:
    found = []
    for _ in range(draw(st.integers(0, 4))):
        service = f"service-{draw(st.integers(0, 4))}"
        found.append(
            Relationship(
                relationship_id=uuid.uuid4(),
                kind=draw(st.sampled_from(list(RelationshipKind))),
                agency=draw(st.sampled_from([AGENCY, AGENCY, "other-agency"])),
                service=service,
                legal_basis=LegalBasis.PUBLIC_TASK,
                starts_at=NOW - dt.timedelta(days=draw(st.integers(0, 400))),
                expires_at=NOW + dt.timedelta(days=draw(st.integers(-30, 400))),
            )
        )
    return found


def allowed(
    service: ServicePolicy, consents: list[Consent], relationships: list[Relationship]
) -> frozenset[str]:
    """What the law of this test says a service may see: policy ∩ (a reason in force) ∩
    (consent where needed)."""
    reasons = {
        r.kind
        for r in relationships
        if r.agency == AGENCY and r.service == service.code and r.expires_at > NOW
    }
    if service.legal_basis is not LegalBasis.CONSENT:
        return service.fields if reasons - {RelationshipKind.CONSENT} else frozenset()
    if RelationshipKind.CONSENT not in reasons:
        return frozenset()
    granted: set[str] = set()
    for c in consents:
        if c.agency == AGENCY and c.service == service.code and c.starts_at <= NOW < c.expires_at:
            granted |= set(c.fields)
    return service.fields & granted


class CapturingSender:
    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []

    async def post(self, url: str, request: Any) -> Any:
        self.bodies.append(json.loads(request.body))

        class Ok:
            status_code, error, duration_ms = 200, None, 1.0

        return Ok()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    policy=agency_policies(),
    data=st.data(),
    serial=st.integers(1, 9000),
    age_days=st.integers(0, 3500),
    consent_first=st.booleans(),
)
async def test_fields_never_exceed_policy_and_consent(
    policy: AgencyPolicy, data: st.DataObject, serial: int, age_days: int, consent_first: bool
) -> None:
    citizen = profile(serial)
    pseudonym = pseudonym_of(citizen)
    consents = data.draw(consent_sets(pseudonym))
    relationships = data.draw(relationship_sets())
    verified_at = NOW - dt.timedelta(days=age_days)
    ctx = GatewayContext(
        agency=policy, pseudonym_key=PSEUDONYM_KEY, consumer="c", clock=lambda: NOW
    )
    store = Store()
    for service in policy.services:
        endpoint = Endpoint(
            id=uuid.uuid4(),
            url="https://agency.example/hook",
            service=service.code,
            secret="whsec_" + "A" * 44,
            enabled=True,
        )
        store.endpoints[endpoint.id] = endpoint

    event = ProfileVerified(
        pseudonym=pseudonym,
        version=1,
        profile=citizen,
        verified_at=verified_at,
        changed_fields=list(PROFILE_FIELDS),
        relationships=relationships,
    )
    consent_record = ConsentRecord(
        "consent-1",
        pseudonym,
        consent_event(pseudonym, 1, consents or [])
        if consents
        else consent_event(
            pseudonym, 1, [], revoked=consent(pseudonym, AGENCY, "service-0", ["nik"])
        ),
    )
    steps = [
        ("consent", consent_record),
        ("profile", ProfileRecord("p-1", pseudonym, event, SourcePosition(0, 7))),
    ]
    if not consent_first:
        steps.reverse()
    for kind, item in steps:
        if kind == "consent":
            result = await apply_consents(FakeUnitOfWork(store), ctx, item)
            if result.refetch is not None:  # what the worker does: re-read the record
                await apply_profile(
                    FakeUnitOfWork(store),
                    ctx,
                    ProfileRecord("p-1", pseudonym, event, SourcePosition(0, 7)),
                    reapply=True,
                )
        else:
            await apply_profile(FakeUnitOfWork(store), ctx, item)
    await sweep_retention(FakeUnitOfWork(store), ctx)

    flat = flatten(citizen)
    union = frozenset().union(*(allowed(s, consents, relationships) for s in policy.services))
    related = any(
        r.agency == AGENCY and policy.service(r.service) and r.expires_at > NOW
        for r in relationships
    )
    assert (pseudonym in store.views) == related, "held exactly while a reason is in force"
    row = store.views.get(pseudonym) or erased(pseudonym, 1)
    assert set(row.data) <= union
    assert set(row.data) == union, "everything granted is on record, nothing else"
    assert all(row.data[name] == flat[name] for name in row.data)

    topic = store.agency_records[-1].event if store.agency_records else None
    on_topic = {grant.service: grant.fields for grant in topic.services} if topic else {}
    for service in policy.services:
        permitted = allowed(service, consents, relationships)
        assert set(on_topic.get(service.code, {})) == permitted, "the topic says what is allowed"
        assert all(on_topic[service.code][n] == flat[n] for n in on_topic.get(service.code, {}))
        try:
            answer = await prefill(
                FakeUnitOfWork(store), ctx, service_code=service.code, nik=None, pseudonym=pseudonym
            )
        except DeniedRequest as denied:
            code = denied.error.code
        else:
            assert set(answer.fields) <= permitted
            assert set(answer.fields) == permitted
            assert answer.fields == on_topic[service.code], "the topic says what prefill says"
            continue
        assert code in ("consent_required", "citizen_not_found")
        assert not permitted
        assert related or code == "citizen_not_found", "no hint of a citizen not held"

    sender = CapturingSender()
    dispatcher = Dispatcher(
        uow_factory=lambda: FakeUnitOfWork(store),
        ctx=ctx,
        sender=sender,
        signer=lambda secret, mid, ts, body: type("R", (), {"body": body})(),
        check=_allow,
        dead_letter=_no_dead_letter,
        retry=RetryPolicy(),
    )
    await dispatcher.run_once(limit=100)
    for body in sender.bodies:
        service = policy.service(body["data"]["service"])
        assert service is not None
        assert set(body["data"]["fields"]) <= allowed(service, consents, relationships)
        assert body["data"]["fields"] == json.loads(
            json.dumps(on_topic[service.code], default=str)
        ), "the topic says what the webhook says"


async def _allow(url: str) -> str:
    return url


async def _no_dead_letter(record: dict[str, Any]) -> None:
    raise AssertionError("nothing should be dead-lettered here")
