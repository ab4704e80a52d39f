"""Data-sharing policy of one MPP: its agencies, their services and what each may use.

The policy is data (YAML under deploy/policies/), validated here at start by every service
that decides with it (identity: which services a citizen may ask for and consent to; each
gateway: what its agency may hold). Deny by default: a field, service or agency that the policy
does not name is never granted.
"""

from __future__ import annotations

import ipaddress
import re
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Self

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from ikd_shared.events.profile_v1 import PROFILE_FIELDS
from ikd_shared.legal import AgencyCode, LegalBasis, PurposeCode, ServiceCode

REPO_ROOT = Path(__file__).resolve().parents[3]
DEFAULT_POLICY = REPO_ROOT / "deploy" / "policies" / "mpp-kabupaten-cirebon.yaml"

REGISTRATION_BASES = frozenset({LegalBasis.LEGAL_OBLIGATION, LegalBasis.PUBLIC_TASK})
"""The legal bases under which a service may allow registration (UU PDP Art. 20(2) c and e)."""

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=200)]


class PolicyError(ValueError):
    """A policy file that cannot be used; the message names the problem."""


class AgencyKind(StrEnum):
    NATIONAL_OFFICE = "national_office"  # instansi vertikal
    STATE_OWNED_COMPANY = "state_owned_company"  # BUMN / BUMD
    REGENCY_OFFICE = "regency_office"  # perangkat daerah kabupaten
    PROVINCE_OFFICE = "province_office"  # perangkat daerah provinsi
    PRIVATE_FIRM = "private_firm"


class Purpose(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    code: PurposeCode
    text: Annotated[str, StringConstraints(strip_whitespace=True, min_length=10, max_length=500)]


class ServicePolicy(BaseModel):
    """One service an agency offers at the MPP and the profile fields it may use."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    code: ServiceCode
    name: Name
    fields: frozenset[str] = Field(min_length=1)
    purpose: Purpose
    legal_basis: LegalBasis
    legal_reference: Name = Field(description="the statute or contract the basis rests on")
    retention_days: int = Field(ge=1, le=36500)
    registration: bool = Field(
        default=False,
        description="the agency may register citizens for this service through its gateway",
    )
    consent_max_days: int | None = Field(
        default=None, ge=1, le=36500, description="longest consent (default: retention_days)"
    )

    @field_validator("fields", mode="before")
    @classmethod
    def _known_fields(cls, value: object) -> object:
        if isinstance(value, list | tuple | set | frozenset):
            unknown = sorted({str(v) for v in value} - set(PROFILE_FIELDS))
            if unknown:
                raise ValueError(f"unknown profile fields: {', '.join(unknown)}")
            if isinstance(value, list) and len(set(value)) != len(value):
                raise ValueError("a field is listed twice")
        return value

    @model_validator(mode="after")
    def _registration_needs_a_duty(self) -> Self:
        # Registering a citizen without their request rests only on the agency's own duty.
        if self.registration and self.legal_basis not in REGISTRATION_BASES:
            raise ValueError(
                f"service {self.code}: registration needs legal_basis legal_obligation or "
                f"public_task, not {self.legal_basis.value}"
            )
        return self

    @model_validator(mode="after")
    def _consent_limit(self) -> Self:
        if self.consent_max_days is not None and not (
            self.needs_consent and self.consent_max_days <= self.retention_days
        ):
            raise ValueError("consent_max_days needs legal_basis consent, at most retention_days")
        return self

    @property
    def needs_consent(self) -> bool:
        return self.legal_basis is LegalBasis.CONSENT

    @property
    def consent_limit_days(self) -> int:
        """How long a consent to this service may last at most."""
        return self.consent_max_days or self.retention_days

    @property
    def allows_nik_lookup(self) -> bool:
        return "nik" in self.fields


# A webhook host pattern: a host name or IP address, or `*.` and a domain (any name under it).
_HOST_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"
_HOST_NAME = rf"{_HOST_LABEL}(\.{_HOST_LABEL})*"
_WEBHOOK_HOST = re.compile(rf"(\*\.)?{_HOST_NAME}")


def _canonical_host(value: str) -> str:
    """Lower case, no trailing dot or IPv6 brackets, an IP address in its one written form."""
    host = value.strip().strip("[]").rstrip(".").lower()
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


def _webhook_host(value: str) -> str:
    pattern = _canonical_host(value)
    try:
        ipaddress.ip_address(pattern)
    except ValueError:
        if len(pattern) > 253 or not _WEBHOOK_HOST.fullmatch(pattern):
            raise ValueError(f"{value!r} is not a host name, an IP address or *.domain") from None
    return pattern


WebhookHost = Annotated[str, AfterValidator(_webhook_host)]


class AgencyPolicy(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    code: AgencyCode
    name: Name
    kind: AgencyKind
    services: tuple[ServicePolicy, ...] = Field(min_length=1)
    webhook_hosts: tuple[WebhookHost, ...] = Field(
        default=(),
        description="hosts the agency may register webhook URLs on: names, IP addresses or "
        "*.domain (any name under the domain, not the domain itself); none: no webhooks",
    )

    def webhook_host_allowed(self, host: str) -> bool:
        """Whether a webhook URL's host is on the agency's list (deny by default)."""
        host = _canonical_host(host)
        return any(
            host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:]))
            for pattern in self.webhook_hosts
        )

    @model_validator(mode="after")
    def _unique_services(self) -> Self:
        seen: set[str] = set()
        for service in self.services:
            if service.code in seen:
                raise ValueError(f"agency {self.code} lists service {service.code} twice")
            seen.add(service.code)
        return self

    def service(self, code: str) -> ServicePolicy | None:
        for service in self.services:
            if service.code == code:
                return service
        return None

    @property
    def policy_fields(self) -> frozenset[str]:
        """Every field any of the agency's services may use (with consent where required)."""
        return frozenset().union(*(s.fields for s in self.services))


class MppInfo(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    code: AgencyCode
    name: Name
    regency_code: Annotated[str, StringConstraints(pattern=r"^[0-9]{4}$")]


class MppPolicy(BaseModel):
    """The whole policy file: one MPP and its agencies."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    mpp: MppInfo
    agencies: tuple[AgencyPolicy, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_codes(self) -> Self:
        agencies: set[str] = set()
        services: dict[str, str] = {}
        for agency in self.agencies:
            if agency.code in agencies:
                raise ValueError(f"agency {agency.code} is listed twice")
            agencies.add(agency.code)
            for service in agency.services:
                if service.code in services:
                    raise ValueError(
                        f"service code {service.code} is used by both "
                        f"{services[service.code]} and {agency.code}"
                    )
                services[service.code] = agency.code
        return self

    def agency(self, code: str) -> AgencyPolicy:
        for agency in self.agencies:
            if agency.code == code:
                return agency
        raise PolicyError(f"agency {code!r} is not in the policy of {self.mpp.code}")


def parse_policy(text: str, *, origin: str = "<policy>") -> MppPolicy:
    """Parse and validate a policy document; PolicyError names the first problem."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise PolicyError(f"{origin}: not valid YAML: {error}") from None
    try:
        return MppPolicy.model_validate(data)
    except ValidationError as error:
        first = error.errors()[0]
        where = _describe_location(data, first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        more = f" (and {error.error_count() - 1} more problems)" if error.error_count() > 1 else ""
        raise PolicyError(f"{origin}: {where}: {message}{more}") from None


def _describe_location(data: object, loc: tuple[int | str, ...]) -> str:
    """A validation error location with list positions replaced by the item's code."""
    parts: list[str] = []
    node = data
    for part in loc:
        if isinstance(node, list) and isinstance(part, int) and part < len(node):
            node = node[part]
            code = node.get("code") if isinstance(node, dict) else None
            parts.append(f"[{code}]" if isinstance(code, str) else f"[{part}]")
        else:
            node = node.get(part) if isinstance(node, dict) else None
            parts.append(f".{part}")
    return "".join(parts).lstrip(".") or "(top level)"


def load_policy(path: Path) -> MppPolicy:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise PolicyError(f"cannot read policy file {path}: {error.strerror}") from None
    return parse_policy(text, origin=str(path))
