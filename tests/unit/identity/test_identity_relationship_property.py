"""Property: whatever happens to a citizen (verifications naming services, registrations and
their end, consents and their revocation, time passing, death), the latest record identity
published for them lists exactly the relationships a simple reference model says are in force.

The check reads the record as a gateway would: the latest one of the citizen's key, its
relationships filtered by `covers(now)` (expiry is not an event).
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from dataclasses import dataclass, field

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ikd_dev.issuer import mint_credential, public_jwk
from ikd_dev.synthetic import citizen
from ikd_identity.domain import commands
from ikd_identity.domain.errors import CitizenInactive, CitizenNotFound
from ikd_identity.service_layer import handlers, registrations
from ikd_identity.service_layer.handlers import Deps
from ikd_shared.credentials import DEFAULT_AUDIENCES, CredentialVerifier, Purpose
from ikd_shared.events.profile_v1 import (
    ProfileUpdated,
    ProfileVerified,
    RelationshipsChanged,
)
from ikd_shared.events.topics import PROFILE
from ikd_shared.policy import DEFAULT_POLICY, load_policy
from ikd_shared.pseudonym import pseudonymize
from tests.support.identity_fakes import FakeState, FakeUnitOfWork

POLICY = load_policy(DEFAULT_POLICY)
KEY = b"property-pseudonym-key"
PEOPLE = [citizen(4, index) for index in range(2)]
REQUESTABLE = ["skck", "passport", "bjb-savings-account", "social-assistance", "traffic-fine"]
REGISTRABLE = ["social-assistance", "hajj-registration", "disability-card"]
CONSENTED = ("bank-bjb", "bjb-savings-account")

Entry = tuple[str, str, str, dt.datetime]  # kind, agency, service, expires_at


def _offered(service: str) -> tuple[str, int]:
    for agency in POLICY.agencies:
        found = agency.service(service)
        if found is not None:
            return agency.code, found.retention_days
    raise AssertionError(service)


@dataclass
class Tracked:
    kind: str
    agency: str
    service: str
    expires_at: dt.datetime
    ended: bool = False
    relationship_id: object = None

    def in_force(self, now: dt.datetime) -> bool:
        return not self.ended and now < self.expires_at


@dataclass
class Citizen:
    known: bool = False  # identity holds a profile
    dead: bool = False
    entries: list[Tracked] = field(default_factory=list)

    def start_or_renew(self, kind: str, service: str, now: dt.datetime) -> Tracked:
        agency, days = _offered(service)
        for entry in self.entries:
            if entry.in_force(now) and (entry.kind, entry.service) == (kind, service):
                entry.expires_at = now + dt.timedelta(days=days)
                return entry
        entry = Tracked(kind, agency, service, now + dt.timedelta(days=days))
        self.entries.append(entry)
        return entry

    def expected(self, now: dt.datetime) -> Counter[Entry]:
        return Counter(
            (e.kind, e.agency, e.service, e.expires_at) for e in self.entries if e.in_force(now)
        )


operations = st.lists(
    st.one_of(
        st.tuples(st.just("verify"), st.integers(0, 1), st.sets(st.sampled_from(REQUESTABLE))),
        st.tuples(st.just("register"), st.integers(0, 1), st.sampled_from(REGISTRABLE)),
        st.tuples(st.just("end"), st.integers(0, 1), st.integers(0, 3)),
        st.tuples(st.just("consent"), st.integers(0, 1), st.integers(1, 400)),
        st.tuples(st.just("revoke"), st.integers(0, 1), st.integers(0, 3)),
        st.tuples(st.just("advance"), st.integers(0, 1), st.integers(1, 2000)),
        st.tuples(st.just("death"), st.integers(0, 1), st.just(0)),
    ),
    max_size=14,
)


def _published(state: FakeState, pseudonym: str, now: dt.datetime) -> Counter[Entry] | None:
    """What the latest record of the citizen says is in force now (None: no record at all)."""
    latest = [m for m in state.outbox if m.topic == PROFILE.name and m.key == pseudonym]
    if not latest:
        return None
    message = latest[-1]
    if message.payload is None:
        return Counter()
    models = (ProfileVerified, ProfileUpdated, RelationshipsChanged)
    model = next(m for m in models if m.event_type == message.ce_type)
    record = model.model_validate_json(message.payload)
    return Counter(
        (r.kind.value, r.agency, r.service, r.expires_at)
        for r in record.relationships
        if r.covers(now)
    )


@settings(
    max_examples=60,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=operations)
async def test_latest_record_lists_exactly_the_relationships_in_force(
    issuer_key, steps: list[tuple[str, int, object]]
) -> None:
    state = FakeState()
    now = [dt.datetime.now(dt.UTC)]
    anchors = {"keys": [public_jwk(issuer_key, "k1")]}
    deps = Deps(
        uow=lambda: FakeUnitOfWork(state),
        verifier=CredentialVerifier(
            anchors, issuer="dukcapil", audience=DEFAULT_AUDIENCES[Purpose.VERIFICATION]
        ),
        consent_verifier=CredentialVerifier(
            anchors, issuer="dukcapil", audience=DEFAULT_AUDIENCES[Purpose.CONSENT]
        ),
        pseudonym_key=KEY,
        credential_max_age=dt.timedelta(minutes=5),
        policy=POLICY,
        clock=lambda: now[0],
    )
    model = [Citizen() for _ in PEOPLE]

    def credential(who: int, purpose: Purpose = Purpose.VERIFICATION) -> str:
        return mint_credential(
            issuer_key, kid="k1", issuer="dukcapil", purpose=purpose, profile=PEOPLE[who]
        )

    for op, who, arg in steps:
        person, nik = model[who], PEOPLE[who].nik
        at = now[0]
        if op == "verify" and arg:
            services = tuple(sorted(arg))  # type: ignore[arg-type]
            command = commands.VerifyCredential(credential(who), "mpp-kabupaten-cirebon", services)
            if person.dead:
                try:
                    await handlers.verify_credential(command, deps)
                except CitizenInactive:
                    continue
                raise AssertionError("a deceased citizen was verified")
            await handlers.verify_credential(command, deps)
            person.known = True
            for service in services:
                person.start_or_renew("service_request", service, at)
        elif op == "register":
            service = str(arg)
            agency, _ = _offered(service)
            command_r = commands.RegisterCitizen(nik, service, "Perda 1/2026", agency, "gw")
            if not person.known or person.dead:
                try:
                    await registrations.register_citizen(command_r, deps)
                except CitizenNotFound:
                    continue
                raise AssertionError("registered a citizen identity does not hold")
            registered = await registrations.register_citizen(command_r, deps)
            entry = person.start_or_renew("registration", service, at)
            entry.relationship_id = registered.relationship_id
        elif op == "end":
            open_ones = [e for e in person.entries if e.kind == "registration" and e.in_force(at)]
            if open_ones:
                entry = open_ones[int(arg) % len(open_ones)]  # type: ignore[call-overload]
                await registrations.end_registration(
                    commands.EndRegistration(entry.relationship_id, entry.agency, "gw"),  # type: ignore[arg-type]
                    deps,
                )
                entry.ended = True
        elif op == "consent":
            terms = commands.ConsentTerms(
                agency=CONSENTED[0],
                service=CONSENTED[1],
                fields=["full_name"],
                purpose_code="account-opening",
                purpose_text="Pembukaan rekening",
                expires_at=at + dt.timedelta(days=int(arg)),  # type: ignore[call-overload]
            )
            grant = commands.GrantConsent(credential(who, Purpose.CONSENT), terms)
            if person.dead:
                try:
                    await handlers.grant_consent(grant, deps)
                except CitizenInactive:
                    continue
                raise AssertionError("a deceased citizen consented")
            consent = await handlers.grant_consent(grant, deps)
            person.known = True
            person.entries.append(
                Tracked("consent", *CONSENTED, consent.expires_at, False, consent.consent_id)
            )
        elif op == "revoke":
            given = [e for e in person.entries if e.kind == "consent" and not e.ended]
            if given:
                entry = given[int(arg) % len(given)]  # type: ignore[call-overload]
                await handlers.revoke_consent(
                    commands.RevokeConsent(
                        credential(who, Purpose.CONSENT),
                        entry.relationship_id,  # type: ignore[arg-type]
                    ),
                    deps,
                )
                entry.ended = True
        elif op == "advance":
            now[0] = at + dt.timedelta(days=int(arg))  # type: ignore[call-overload]
        elif op == "death" and person.known and not person.dead:
            await handlers.record_death(commands.RecordDeath(nik, PEOPLE[who].date_of_birth), deps)
            person.dead = True
            for entry in person.entries:
                entry.ended = True

        for index, tracked in enumerate(model):
            pseudonym = pseudonymize(PEOPLE[index].nik, KEY)
            published = _published(state, pseudonym, now[0])
            expected = tracked.expected(now[0])
            if published is None:
                assert not expected
            else:
                assert published == expected, (op, index)
            # Asking again never piles up: one stored request or registration per service
            # and kind is in force at a time.
            stored = Counter(
                (r.relationship.kind, r.relationship.service)
                for r in state.relationships.values()
                if r.pseudonym == pseudonym and r.in_force(now[0])
            )
            assert all(count == 1 for count in stored.values())
