"""Property: at every point of any history of verifications with service choices,
registrations, consents granted and revoked, time passing and Dukcapil's updates, revocations
and deaths, each agency's view holds exactly the citizens it has a relationship in force with,
and exactly the fields those relationships grant; its prefill and its agency topic say the same.

`Identity` below is a small reference of identity's side: it keeps each citizen's relationships
and consents and publishes them as identity does (a profile record carrying the relationships
in force, a consent record carrying the active consents, a consent mirrored as a relationship).
Its records are folded through the gateways of several agencies of the real policy, the two
topics in either order, as their workers would; `expected` is an oracle written apart from the
gateway's domain, from identity's state alone.
"""

from __future__ import annotations

import datetime as dt
import uuid
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ikd_gateway.domain.model import SourcePosition
from ikd_gateway.service_layer.context import GatewayContext
from ikd_gateway.service_layer.prefill import DeniedRequest, prefill
from ikd_gateway.service_layer.stream import (
    ConsentRecord,
    ProfileRecord,
    apply_consents,
    apply_profile,
    apply_profiles,
    sweep_retention,
)
from ikd_shared.events.consent_v1 import (
    Consent,
    ConsentGranted,
    ConsentRevoked,
    ConsentStatus,
    GrantedBy,
)
from ikd_shared.events.profile_v1 import (
    CitizenDied,
    CitizenProfile,
    CredentialRevoked,
    ProfileEvent,
    ProfileUpdated,
    ProfileVerified,
    Relationship,
    RelationshipKind,
    RelationshipsChanged,
    flatten,
)
from ikd_shared.legal import LegalBasis
from tests.support.gateway_factories import NOW, POLICY, PSEUDONYM_KEY, profile, pseudonym_of
from tests.support.gateway_fakes import FakeUnitOfWork, Store, assert_only_a_floor

AGENCIES = ("polres-cirebon", "dinsos-cirebon", "bank-bjb", "pos-indonesia-cirebon")
SERVICES = [(a, s) for a in AGENCIES for s in POLICY.agency(a).services]
REGISTRABLE = [
    (a, s)
    for a, s in SERVICES
    if s.legal_basis in (LegalBasis.LEGAL_OBLIGATION, LegalBasis.PUBLIC_TASK)
]
CONSENTABLE = [(a, s) for a, s in SERVICES if s.needs_consent]
SERIALS = (11, 12, 13)
STEPS = [
    dt.timedelta(hours=1),
    dt.timedelta(days=30),
    dt.timedelta(days=200),
    dt.timedelta(days=1000),
    dt.timedelta(days=1900),
]


@dataclass
class Citizen:
    serial: int
    profile: CitizenProfile
    version: int = 0
    relationships: list[Relationship] = field(default_factory=list)
    consents: list[Consent] = field(default_factory=list)
    consents_version: int = 0
    dead: bool = False

    @property
    def pseudonym(self) -> str:
        return pseudonym_of(self.profile)


@dataclass
class Published:
    profiles: list[ProfileRecord] = field(default_factory=list)
    consents: list[ConsentRecord] = field(default_factory=list)


class Identity:
    """identity's side, as far as the gateways see it."""

    def __init__(self) -> None:
        self.now = NOW
        self.citizens = {serial: Citizen(serial, profile(serial)) for serial in SERIALS}
        self.log: list[ProfileRecord] = []
        """The profile topic (one partition): a record's offset is its index."""

    def in_force(self, citizen: Citizen) -> list[Relationship]:
        # Like identity, publish only what is in force (time may have ended some).
        citizen.relationships = [r for r in citizen.relationships if r.expires_at > self.now]
        return list(citizen.relationships)

    def _profile(self, citizen: Citizen, event: ProfileEvent | None, out: Published) -> None:
        record = ProfileRecord(
            str(uuid.uuid4()), citizen.pseudonym, event, SourcePosition(0, len(self.log))
        )
        self.log.append(record)
        out.profiles.append(record)

    def _relate(
        self, citizen: Citizen, kind: RelationshipKind, agency: str, service: Any, **extra: Any
    ) -> Relationship:
        relationship = Relationship(
            relationship_id=extra.pop("relationship_id", uuid.uuid4()),
            kind=kind,
            agency=agency,
            service=service.code,
            legal_basis=service.legal_basis,
            starts_at=self.now,
            expires_at=extra.pop(
                "expires_at", self.now + dt.timedelta(days=service.retention_days)
            ),
            **extra,
        )
        citizen.relationships.append(relationship)
        return relationship

    def _changed(
        self,
        citizen: Citizen,
        out: Published,
        *,
        started: list[Relationship] | None = None,
        ended: list[Relationship] | None = None,
    ) -> None:
        citizen.version += 1
        event = RelationshipsChanged(
            pseudonym=citizen.pseudonym,
            version=citizen.version,
            profile=citizen.profile,
            verified_at=self.now,
            changed_at=self.now,
            started=started or [],
            ended=ended or [],
            relationships=self.in_force(citizen),
        )
        self._profile(citizen, event, out)

    def _consents(self, citizen: Citizen, consent: Consent, out: Published) -> None:
        citizen.consents_version += 1
        active = [c for c in citizen.consents if c.expires_at > self.now]
        kind = ConsentGranted if consent.status is ConsentStatus.ACTIVE else ConsentRevoked
        event = kind(
            pseudonym=citizen.pseudonym,
            consents_version=citizen.consents_version,
            consent=consent,
            active_consents=active,
        )
        out.consents.append(ConsentRecord(str(uuid.uuid4()), citizen.pseudonym, event))

    def verify(self, citizen: Citizen, chosen: list[tuple[str, Any]]) -> Published:
        """A verification at the front desk naming services (any agencies), maybe none."""
        out = Published()
        for agency, service in chosen:
            self._relate(citizen, RelationshipKind.SERVICE_REQUEST, agency, service)
        citizen.dead = False
        citizen.version += 1
        event = ProfileVerified(
            pseudonym=citizen.pseudonym,
            version=citizen.version,
            profile=citizen.profile,
            verified_at=self.now,
            changed_fields=["full_name"],
            relationships=self.in_force(citizen),
        )
        self._profile(citizen, event, out)
        return out

    def register(self, citizen: Citizen, agency: str, service: Any) -> Published:
        out = Published()
        started = self._relate(
            citizen, RelationshipKind.REGISTRATION, agency, service, legal_reference="SK 1/2025"
        )
        self._changed(citizen, out, started=[started])
        return out

    def end(self, citizen: Citizen, pick: int) -> Published:
        mine = [r for r in self.in_force(citizen) if r.kind is RelationshipKind.REGISTRATION]
        if not mine:
            return Published()
        gone = mine[pick % len(mine)]
        citizen.relationships.remove(gone)
        out = Published()
        self._changed(citizen, out, ended=[gone])
        return out

    def grant(
        self, citizen: Citizen, agency: str, service: Any, names: list[str], days: int
    ) -> Published:
        given = Consent(
            consent_id=uuid.uuid4(),
            pseudonym=citizen.pseudonym,
            agency=agency,
            service=service.code,
            fields=names,
            purpose_code=service.purpose.code,
            purpose_text=service.purpose.text,
            starts_at=self.now,
            expires_at=self.now + dt.timedelta(days=days),
            status=ConsentStatus.ACTIVE,
            granted_by=GrantedBy.CITIZEN,
        )
        citizen.consents.append(given)
        out = Published()
        self._consents(citizen, given, out)
        mirrored = self._relate(
            citizen,
            RelationshipKind.CONSENT,
            agency,
            service,
            relationship_id=given.consent_id,
            expires_at=given.expires_at,
        )
        self._changed(citizen, out, started=[mirrored])
        return out

    def revoke(self, citizen: Citizen, pick: int) -> Published:
        active = [c for c in citizen.consents if c.expires_at > self.now]
        if not active:
            return Published()
        gone = active[pick % len(active)]
        citizen.consents.remove(gone)
        out = Published()
        revoked = gone.model_copy(update={"status": ConsentStatus.REVOKED, "revoked_at": self.now})
        self._consents(citizen, revoked, out)
        ended = [r for r in citizen.relationships if r.relationship_id == gone.consent_id]
        citizen.relationships = [r for r in citizen.relationships if r not in ended]
        self._changed(citizen, out, ended=ended)
        return out

    def update(self, citizen: Citizen) -> Published:
        """Dukcapil's feed changed the address and occupation."""
        citizen.version += 1
        citizen.profile = profile(
            citizen.serial,
            street=f"Jl. Versi {citizen.version}",
            occupation=f"Kerja {citizen.version}",
        )
        event = ProfileUpdated(
            pseudonym=citizen.pseudonym,
            version=citizen.version,
            profile=citizen.profile,
            verified_at=self.now,
            updated_at=self.now,
            changed_fields=["address.street", "occupation"],
            relationships=self.in_force(citizen),
        )
        out = Published()
        self._profile(citizen, event, out)
        return out

    def erase(self, citizen: Citizen, *, died: bool) -> Published:
        """A death or a revoked credential: every relationship and consent ends."""
        citizen.version += 1
        event: CitizenDied | CredentialRevoked
        if died:
            event = CitizenDied(
                pseudonym=citizen.pseudonym,
                version=citizen.version,
                date_of_death=self.now.date(),
                recorded_at=self.now,
            )
            citizen.dead = True
        else:
            event = CredentialRevoked(
                pseudonym=citizen.pseudonym,
                version=citizen.version,
                reason="lost",
                revoked_at=self.now,
            )
        citizen.relationships, citizen.consents = [], []
        out = Published()
        self._profile(citizen, event, out)
        self._profile(citizen, None, out)  # the tombstone
        return out


def expected(identity: Identity, agency: str) -> dict[str, dict[str, frozenset[str]]]:
    """The oracle: per citizen the agency may hold, per service the fields it may use."""
    now = identity.now
    policy = POLICY.agency(agency)
    held: dict[str, dict[str, frozenset[str]]] = {}
    for citizen in identity.citizens.values():
        reasons = [r for r in citizen.relationships if r.agency == agency and r.expires_at > now]
        if not reasons:
            continue
        per_service = {}
        for service in policy.services:
            kinds = {r.kind for r in reasons if r.service == service.code}
            if service.legal_basis is LegalBasis.CONSENT:
                names: set[str] = set()
                if RelationshipKind.CONSENT in kinds:
                    for c in citizen.consents:
                        mine = c.agency == agency and c.service == service.code
                        if mine and c.starts_at <= now < c.expires_at:
                            names |= set(c.fields) & service.fields
                per_service[service.code] = frozenset(names)
            elif kinds & {RelationshipKind.SERVICE_REQUEST, RelationshipKind.REGISTRATION}:
                per_service[service.code] = service.fields
            else:
                per_service[service.code] = frozenset()
        held[citizen.pseudonym] = per_service
    return held


class Gateways:
    """One store and context per agency, fed as their workers would feed them."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self.stores = {agency: Store() for agency in AGENCIES}
        self.ctx = {
            agency: GatewayContext(
                agency=POLICY.agency(agency),
                pseudonym_key=PSEUDONYM_KEY,
                consumer=f"ikd-gateway-{agency}",
                clock=lambda: identity.now,
            )
            for agency in AGENCIES
        }

    async def deliver(self, published: Published, consents_first: bool) -> None:
        for agency in AGENCIES:
            store, ctx = self.stores[agency], self.ctx[agency]
            steps = [("profiles", published.profiles), ("consents", published.consents)]
            for kind, records in steps[::-1] if consents_first else steps:
                if kind == "profiles":
                    if records:
                        await apply_profiles(FakeUnitOfWork(store), ctx, records)
                    continue
                for record in records:
                    result = await apply_consents(FakeUnitOfWork(store), ctx, record)
                    if result.refetch is not None:  # the worker re-reads by offset
                        again = self.identity.log[result.refetch.offset]
                        await apply_profile(FakeUnitOfWork(store), ctx, again, reapply=True)

    async def sweep(self) -> None:
        for agency in AGENCIES:
            while await sweep_retention(FakeUnitOfWork(self.stores[agency]), self.ctx[agency]):
                pass


async def check(gateways: Gateways, identity: Identity, what: str) -> None:
    flat = {c.pseudonym: flatten(c.profile) for c in identity.citizens.values()}
    for agency in AGENCIES:
        store, ctx = gateways.stores[agency], gateways.ctx[agency]
        want = expected(identity, agency)
        rows = {p: row for p, row in store.views.items() if not row.erased and not row.is_floor}
        assert set(rows) == set(want), f"{agency} after {what}: holds exactly the related"
        for pseudonym, row in store.views.items():
            assert row.erased or row.is_floor or pseudonym in want
            assert not row.erased or not row.data
            if row.is_floor:
                assert_only_a_floor(row)
            assert all(r.agency == agency for r in row.relationships), "only its own"
        for pseudonym, per_service in want.items():
            names = frozenset().union(*per_service.values())
            row = rows[pseudonym]
            assert set(row.data) == names, f"{agency} after {what}: exactly the granted fields"
            assert all(row.data[name] == flat[pseudonym][name] for name in row.data)
        disclosed = {
            pseudonym: {s: set(f) for s, f in per_service.items() if f}
            for pseudonym, per_service in store.disclosed.items()
        }
        assert disclosed == {
            p: {s: set(f) for s, f in per_service.items() if f}
            for p, per_service in want.items()
            if any(per_service.values())
        }, f"{agency} after {what}: the agency topic says the same"
        for citizen in identity.citizens.values():
            for service in ctx.agency.services:
                grant = want.get(citizen.pseudonym, {}).get(service.code, frozenset())
                try:
                    answer = await prefill(
                        FakeUnitOfWork(store),
                        ctx,
                        service_code=service.code,
                        nik=None,
                        pseudonym=citizen.pseudonym,
                    )
                except DeniedRequest as denied:
                    refusal = denied.error.code
                else:
                    assert set(answer.fields) == grant, f"{agency}/{service.code} after {what}"
                    continue
                assert not grant, f"{agency}/{service.code} after {what}: refused"
                if citizen.pseudonym not in want:
                    assert refusal == "citizen_not_found", "no hint whether the citizen exists"


verifications = st.tuples(
    st.just("verify"),
    st.integers(0, 2),
    st.frozensets(st.integers(0, len(SERVICES) - 1), max_size=4),
)
registrations = st.tuples(
    st.just("register"), st.integers(0, 2), st.integers(0, len(REGISTRABLE) - 1)
)
consents = st.tuples(
    st.just("consent"),
    st.integers(0, 2),
    st.integers(0, len(CONSENTABLE) - 1),
    st.integers(1, 2**12 - 1),
    st.integers(1, 400),
)
# Mostly short steps: a service's retention is years, a consent's up to 400 days.
time_passes = st.tuples(st.just("advance"), st.sampled_from([0, 0, 1, 1, 2, 3, 4]))
# Repeated to weigh them: what builds relationships comes more often than what ends a citizen.
operations = st.one_of(
    verifications,
    verifications,
    verifications,
    verifications,
    registrations,
    registrations,
    consents,
    consents,
    time_passes,
    time_passes,
    st.tuples(st.just("end"), st.integers(0, 2), st.integers(0, 7)),
    st.tuples(st.just("revoke"), st.integers(0, 2), st.integers(0, 7)),
    st.tuples(st.just("update"), st.integers(0, 2)),
    st.tuples(st.sampled_from(["revoked", "died"]), st.integers(0, 2)),
)


def act(identity: Identity, op: tuple[Any, ...]) -> Published:
    kind, *args = op
    if kind == "advance":
        identity.now += STEPS[args[0]]
        return Published()
    citizen = identity.citizens[SERIALS[args[0]]]
    if citizen.dead and kind != "advance":
        return Published()  # the dead do nothing more
    if kind == "verify":
        chosen = [SERVICES[i] for i in sorted(args[1])]
        return identity.verify(citizen, chosen)
    if citizen.version == 0:
        return Published()  # identity knows nothing of a citizen never verified
    if kind == "register":
        agency, service = REGISTRABLE[args[1]]
        return identity.register(citizen, agency, service)
    if kind == "end":
        return identity.end(citizen, args[1])
    if kind == "consent":
        agency, service = CONSENTABLE[args[1]]
        names = sorted(service.fields)
        chosen = [names[i] for i in range(len(names)) if args[2] >> (i % 12) & 1] or names[:1]
        return identity.grant(citizen, agency, service, chosen, args[3])
    if kind == "revoke":
        return identity.revoke(citizen, args[1])
    if kind == "update":
        return identity.update(citizen)
    return identity.erase(citizen, died=kind == "died")


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    first=st.lists(
        st.frozensets(st.integers(0, len(SERVICES) - 1), min_size=1, max_size=3),
        min_size=len(SERIALS),
        max_size=len(SERIALS),
    ),
    history=st.lists(st.tuples(operations, st.booleans()), min_size=1, max_size=30),
)
async def test_each_agency_holds_exactly_the_related_citizens_and_granted_fields(
    first: list[frozenset[int]], history: list[tuple[tuple[Any, ...], bool]]
) -> None:
    identity = Identity()
    gateways = Gateways(identity)
    # Each citizen starts at the front desk, naming some services.
    history = [(("verify", i, services), False) for i, services in enumerate(first)] + history
    most = purged = 0
    for step, (op, consents_first) in enumerate(history):
        published = act(identity, op)
        await gateways.deliver(published, consents_first)
        await gateways.sweep()
        await check(gateways, identity, f"step {step} {op[0]}")
        held = sum(bool(row.data) for s in gateways.stores.values() for row in s.views.values())
        most = max(most, held)
        purged += sum(r.event is None for s in gateways.stores.values() for r in s.agency_records)
    event(f"most rows with fields at once: {min(most, 5)}{'+' if most >= 5 else ''}")
    event(f"agency-topic purges: {'some' if purged else 'none'}")
