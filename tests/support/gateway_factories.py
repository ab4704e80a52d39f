"""Builders for the gateway's tests: profiles, consents, stream records, tokens."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ikd_gateway.service_layer.context import GatewayContext
from ikd_gateway.service_layer.stream import ProfileRecord
from ikd_shared.auth import TokenIssuer
from ikd_shared.events.consent_v1 import (
    Consent,
    ConsentGranted,
    ConsentRevoked,
    ConsentStatus,
    GrantedBy,
)
from ikd_shared.events.profile_v1 import (
    Address,
    CitizenProfile,
    ProfileUpdated,
    ProfileVerified,
    Relationship,
    RelationshipKind,
    RelationshipsChanged,
)
from ikd_shared.nik import Sex, make_nik
from ikd_shared.policy import DEFAULT_POLICY, MppPolicy, load_policy
from ikd_shared.pseudonym import pseudonymize

PSEUDONYM_KEY = b"dev-pseudonym-key-for-local-development-only"
NOW = dt.datetime(2025, 6, 1, 9, 0, tzinfo=dt.UTC)
POLICY: MppPolicy = load_policy(DEFAULT_POLICY)
DEMO_AGENCIES = ("polres-cirebon", "bank-bjb", "dinsos-cirebon")


def context(agency: str, *, clock: Any = None) -> GatewayContext:
    return GatewayContext(
        agency=POLICY.agency(agency),
        pseudonym_key=PSEUDONYM_KEY,
        consumer=f"ikd-gateway-{agency}",
        clock=clock or (lambda: NOW),
    )


def profile(
    serial: int = 1,
    *,
    street: str = "Jl. Sunan Gunung Jati No. 1",
    occupation: str = "Petani",
    female: bool = False,
) -> CitizenProfile:
    born = dt.date(1990, 1, 1) + dt.timedelta(days=serial * 37 % 9000)
    sex = Sex.FEMALE if female else Sex.MALE
    return CitizenProfile(
        nik=make_nik("320901", born, sex, serial % 9999 + 1),
        full_name=f"Warga {serial}",
        place_of_birth="Cirebon",
        date_of_birth=born,
        sex=sex,
        blood_type="O",
        address=Address(
            street=street,
            rt="001",
            rw="002",
            village="Sumber",
            district="Sumber",
            regency="Kabupaten Cirebon",
            province="Jawa Barat",
            postal_code="45611",
        ),
        religion="islam",
        marital_status="kawin",
        occupation=occupation,
        nationality="WNI",
        family_card_number=f"3209{serial:012d}",
    )


def pseudonym_of(citizen: CitizenProfile) -> str:
    return pseudonymize(citizen.nik, PSEUDONYM_KEY)


def relationship(
    agency: str,
    service: str,
    *,
    kind: RelationshipKind | None = None,
    starts_at: dt.datetime = NOW,
    expires_at: dt.datetime | None = None,
    relationship_id: uuid.UUID | None = None,
) -> Relationship:
    """One relationship as identity publishes it: by default the kind the service's legal basis
    calls for (a consent, else a service request) and an expiry from its retention."""
    policy = POLICY.agency(agency).service(service)
    assert policy is not None, f"{service} is not a service of {agency}"
    if kind is None:
        kind = (
            RelationshipKind.CONSENT if policy.needs_consent else RelationshipKind.SERVICE_REQUEST
        )
    return Relationship(
        relationship_id=relationship_id or uuid.uuid4(),
        kind=kind,
        agency=agency,
        service=service,
        legal_basis=policy.legal_basis,
        legal_reference=policy.legal_reference if kind is RelationshipKind.REGISTRATION else None,
        starts_at=starts_at,
        expires_at=expires_at or starts_at + dt.timedelta(days=policy.retention_days),
    )


def related_everywhere(at: dt.datetime = NOW) -> list[Relationship]:
    """A relationship with every service of every agency of the policy, from `at`: a citizen
    every agency may hold (as every verified citizen was before relationships)."""
    return [
        relationship(agency.code, service.code, starts_at=at)
        for agency in POLICY.agencies
        for service in agency.services
    ]


def verified(
    citizen: CitizenProfile,
    version: int = 1,
    verified_at: dt.datetime = NOW,
    *,
    relationships: list[Relationship] | None = None,
) -> ProfileVerified:
    """A verification; the citizen is related to every service unless `relationships` says."""
    return ProfileVerified(
        pseudonym=pseudonym_of(citizen),
        version=version,
        profile=citizen,
        verified_at=verified_at,
        changed_fields=["full_name"],
        relationships=related_everywhere(verified_at) if relationships is None else relationships,
    )


def bulk_fed(citizen: CitizenProfile, version: int = 1, at: dt.datetime = NOW) -> ProfileUpdated:
    """A profile from Dukcapil's bulk feed of a citizen who never asked any agency for anything:
    no relationships."""
    return ProfileUpdated(
        pseudonym=pseudonym_of(citizen),
        version=version,
        profile=citizen,
        verified_at=at,
        updated_at=at,
        changed_fields=["address.street"],
    )


def relationships_changed(
    citizen: CitizenProfile,
    version: int,
    relationships: list[Relationship],
    *,
    at: dt.datetime = NOW,
    started: list[Relationship] | None = None,
    ended: list[Relationship] | None = None,
) -> RelationshipsChanged:
    """A relationship started or ended: the citizen's whole record with those in force."""
    return RelationshipsChanged(
        pseudonym=pseudonym_of(citizen),
        version=version,
        profile=citizen,
        verified_at=at,
        changed_at=at,
        started=started or [],
        ended=ended or [],
        relationships=relationships,
    )


def record(event: ProfileVerified, event_id: str | None = None) -> ProfileRecord:
    return ProfileRecord(event_id or str(uuid.uuid4()), event.pseudonym, event)


def consent(
    pseudonym: str,
    agency: str,
    service: str,
    fields: list[str],
    *,
    expires_at: dt.datetime | None = None,
    starts_at: dt.datetime | None = None,
) -> Consent:
    return Consent(
        consent_id=uuid.uuid4(),
        pseudonym=pseudonym,
        agency=agency,
        service=service,
        fields=fields,
        purpose_code="account-opening",
        purpose_text="open an account",
        starts_at=starts_at or NOW - dt.timedelta(days=1),
        expires_at=expires_at or NOW + dt.timedelta(days=365),
        status=ConsentStatus.ACTIVE,
        granted_by=GrantedBy.CITIZEN,
    )


def consent_event(
    pseudonym: str, version: int, active: list[Consent], *, revoked: Consent | None = None
) -> ConsentGranted | ConsentRevoked:
    if revoked is not None:
        gone = revoked.model_copy(update={"status": ConsentStatus.REVOKED, "revoked_at": NOW})
        return ConsentRevoked(
            pseudonym=pseudonym, consents_version=version, consent=gone, active_consents=active
        )
    return ConsentGranted(
        pseudonym=pseudonym, consents_version=version, consent=active[-1], active_consents=active
    )


class Tokens:
    """Mints identity-service tokens with a freshly generated Ed25519 key."""

    def __init__(self) -> None:
        self.issuer = TokenIssuer(
            Ed25519PrivateKey.generate(), kid="test-key", issuer="ikd-identity"
        )

    def jwks(self) -> dict[str, Any]:
        return self.issuer.jwks()

    def for_agency(
        self,
        agency: str | None,
        scopes: set[str] | None = None,
        *,
        audience: str = "ikd-gateway",
        now: dt.datetime | None = None,
    ) -> str:
        return self.issuer.issue(
            f"client-{agency}", scopes or {"gateway:prefill"}, [audience], agency=agency, now=now
        )
