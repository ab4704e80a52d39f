"""Audit settings, built once at process start: the service's (prefix IKD_AUDIT_) and its
signer's (prefix IKD_SIGNER_). Only the signer's hold the tree-head signing key."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BeforeValidator, Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from ikd_audit.domain.patterns import OpeningHours, Thresholds
from ikd_audit.service_layer.checkpoints import DEFAULT_ORIGIN
from ikd_shared import checkpoint
from ikd_shared.credentials import DEFAULT_AUDIENCES, Purpose
from ikd_shared.settings import (
    DeploymentSettings,
    Ed25519KeySetting,
    JwksSetting,
    ServiceSettings,
    TokenKeySettings,
    TrustedProxiesSetting,
)


def _read_vkey(value: Any) -> Any:
    """A verifier key inline, or `@path` to a file holding one (it is public)."""
    if isinstance(value, str) and value.startswith("@"):
        try:
            value = Path(value[1:]).read_text()
        except OSError as error:
            raise ValueError(f"cannot read the vkey file: {error.strerror}") from None
    if isinstance(value, str):
        try:
            verifier = checkpoint.parse_vkey(value)
        except checkpoint.NoteError as error:
            raise ValueError(str(error)) from None
        if verifier.signature_type != checkpoint.ED25519:
            raise ValueError("the log's verifier key must be an Ed25519 (0x01) note key")
        return value.strip()
    return value


VkeySetting = Annotated[str, BeforeValidator(_read_vkey)]
"""The log's verifier key (c2sp.org/signed-note), inline or `@path`."""


class AuditSettings(ServiceSettings, TokenKeySettings):
    model_config = SettingsConfigDict(env_prefix="IKD_AUDIT_", extra="ignore", frozen=True)

    database_url: str = Field(
        pattern=r"^postgres(ql)?://",
        description="runtime role ikd_audit_app: INSERT and SELECT on the log only",
    )
    migration_database_url: str | None = Field(
        default=None,
        pattern=r"^postgres(ql)?://",
        description="owner role, used by `ikd-audit migrate` only",
    )
    log_vkey: VkeySetting = Field(
        description="the log's verifier key (`ikd-audit vkey` where the signer's key is, inline "
        "or @path): its name is the checkpoints' origin, its key checks the tree heads. The "
        "signing key itself stays with `ikd-audit signer`",
    )
    signer_wait_seconds: float = Field(
        default=10.0,
        gt=0,
        le=120,
        description="how long a request for entries no tree head covers yet waits for the signer",
    )
    token_jwks: JwksSetting | None = Field(
        default=None,
        description="identity's access-token JWKS (inline JSON or @path), static",
    )
    token_issuer: str = Field(default="ikd-identity")
    token_audience: str = Field(default="ikd-audit")
    trust_jwks: JwksSetting = Field(
        description="IKD credential trust anchors (Dukcapil issuer JWKS; inline JSON or @path)",
    )
    credential_issuer: str = Field(
        default="https://dukcapil.kemendagri.go.id/ikd",
    )
    trail_audience: str = Field(
        default=DEFAULT_AUDIENCES[Purpose.TRAIL],
        min_length=1,
        description="aud of credentials that open a citizen's trail (identity accepts others)",
    )
    credential_max_age_seconds: int = Field(
        default=300,
        ge=10,
        le=3600,
        description="a citizen's trail request needs a credential issued this recently",
    )
    session_secret: SecretStr = Field(
        description="signs console session cookies and pagination cursors",
    )
    session_max_age_seconds: int = Field(default=1800, ge=60)
    secure_cookies: bool | None = Field(
        default=None,
        description="console cookie only over HTTPS; default: on outside development",
    )
    host: str = Field(default="127.0.0.1")
    port: int = Field(default=18010, ge=1, le=65535)
    page_size_default: int = Field(default=50, ge=1)
    page_size_max: int = Field(default=500, ge=1)
    consumer_batch_size: int = Field(default=500, ge=1, le=10000)
    run_consumer: bool = Field(default=True)
    consumer_group: str = Field(default="ikd-audit")

    # Failed console sign-ins (ikd_shared.throttle), counted in the database for all replicas:
    # a burst of the limit in the window, then one more attempt per window/limit.
    login_max_failures: int = Field(
        default=5, ge=1, description="failed console sign-ins of one client id from one address"
    )
    login_max_failures_per_address: int = Field(
        default=20, ge=1, description="failed console sign-ins from one address, any client id"
    )
    login_failure_window_seconds: float = Field(default=900.0, gt=0)
    trusted_proxies: TrustedProxiesSetting = Field(
        default=(),
        description="reverse proxies (addresses or CIDRs, comma-separated) whose "
        "X-Forwarded-For names the client address; empty: the direct peer is the client",
    )
    seen_credential_grace_seconds: float = Field(
        default=86400.0,
        ge=0,
        description="prune replay-protection rows this long after their credential expired",
    )
    prune_interval_seconds: float = Field(
        default=3600.0, ge=0, description="how often `serve` prunes; 0 turns it off"
    )

    # Access-pattern alerts (docs/auditor-guide.md): `serve` checks every interval.
    anomaly_interval_seconds: float = Field(
        default=60.0, ge=0, description="how often `serve` looks for anomalies; 0 turns it off"
    )
    anomaly_window_seconds: int = Field(
        default=900, ge=60, le=86400, description="the detection window (aligned to UTC)"
    )
    anomaly_baseline_windows: int = Field(
        default=672, ge=1, le=10000, description="windows before it that give the usual rate"
    )
    anomaly_rate_factor: float = Field(
        default=5.0, gt=1, description="alert when a window holds this many times the usual"
    )
    anomaly_min_lookups: int = Field(
        default=30, ge=1, description="never a look-up rate alert below this many in a window"
    )
    anomaly_min_denials: int = Field(
        default=10, ge=1, description="never a denial rate alert below this many in a window"
    )
    anomaly_not_found_burst: int = Field(
        default=10, ge=1, description="citizen_not_found denials of one agency in one window"
    )
    anomaly_off_hours_min: int = Field(
        default=1, ge=1, description="look-ups or registrations while closed, in one window"
    )
    opening_hours: str = Field(
        default="mon-fri 08:00-16:00; sat 08:00-12:00",
        description="when the MPP's counters are open, local time ('mon-fri 08:00-16:00; ...')",
    )
    opening_hours_zone: str = Field(default="Asia/Jakarta")
    witness_keys: str = Field(
        default="",
        description="verifier keys (vkeys) of the witnesses whose cosignatures are kept and "
        "shown, separated by spaces",
    )

    @field_validator("witness_keys")
    @classmethod
    def _witness_keys_parse(cls, value: str) -> str:
        for vkey in value.split():
            checkpoint.parse_vkey(vkey)
        return value

    @field_validator("opening_hours")
    @classmethod
    def _opening_hours_parse(cls, value: str) -> str:
        OpeningHours.parse(value)
        return value

    @field_validator("opening_hours_zone")
    @classmethod
    def _zone_known(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value

    @property
    def thresholds(self) -> Thresholds:
        return Thresholds(
            window=dt.timedelta(seconds=self.anomaly_window_seconds),
            baseline_windows=self.anomaly_baseline_windows,
            rate_factor=self.anomaly_rate_factor,
            min_lookups=self.anomaly_min_lookups,
            min_denials=self.anomaly_min_denials,
            not_found_burst=self.anomaly_not_found_burst,
            off_hours_min=self.anomaly_off_hours_min,
        )

    @property
    def hours(self) -> OpeningHours:
        return OpeningHours.parse(self.opening_hours, self.opening_hours_zone)

    def witness_verifiers(self) -> list[checkpoint.Verifier]:
        return [checkpoint.parse_vkey(vkey) for vkey in self.witness_keys.split()]

    @property
    def cookies_https_only(self) -> bool:
        return self.secure_cookies if self.secure_cookies is not None else not self.is_development

    @property
    def log_verifier(self) -> checkpoint.Verifier:
        return checkpoint.parse_vkey(self.log_vkey)


class SignerSettings(DeploymentSettings):
    """`ikd-audit signer`: the one process with the tree-head key, on its own database role.

    No Kafka, no pseudonym key, no token keys: it reads the log and adds signed tree heads.
    Outside development a placeholder database password is refused, as in every service.
    """

    model_config = SettingsConfigDict(env_prefix="IKD_SIGNER_", extra="ignore", frozen=True)

    database_url: str = Field(
        pattern=r"^postgres(ql)?://",
        description="signer role ikd_audit_signer: reads the log, adds tree heads, nothing else",
    )
    signing_key: Ed25519KeySetting = Field(
        description="Ed25519 private key (PKCS8 PEM, or @path to one) that signs tree heads "
        "and checkpoints; no other process is given it",
    )
    log_origin: str = Field(
        default=DEFAULT_ORIGIN,
        pattern=r"^[^\s+]{1,255}$",
        description="the checkpoints' origin line and the log key's name "
        "(c2sp.org/tlog-checkpoint): a schema-less URL naming this log",
    )
    interval_seconds: float = Field(
        default=10.0, gt=0, description="sign new entries at least this often"
    )
    max_entries: int = Field(
        default=1000, ge=1, description="sign as soon as this many entries are unsigned"
    )
    host: str = Field(default="127.0.0.1", description="health and metrics only")
    port: int = Field(default=18030, ge=1, le=65535)

    @property
    def note_signer(self) -> checkpoint.Signer:
        return checkpoint.signer_from_pem(self.log_origin, self.signing_key.get_secret_value())


class ReportSettings(DeploymentSettings):
    """`ikd-audit report make` only: the key that signs agency reports (prefix IKD_REPORT_).

    Not the tree-head key, and not given to `serve`: a report names the checkpoint it was
    counted from, so a false one is caught by recounting, and the log's key signs nothing else.
    """

    model_config = SettingsConfigDict(env_prefix="IKD_REPORT_", extra="ignore", frozen=True)

    signing_key: Ed25519KeySetting = Field(
        description="Ed25519 private key (PKCS8 PEM, or @path to one) that signs agency reports",
    )
    key_name: str = Field(
        default="ikd-audit-report",
        pattern=r"^[^\s+]{1,255}$",
        description="the report key's name in its signed notes and vkey",
    )

    @property
    def note_signer(self) -> checkpoint.Signer:
        return checkpoint.signer_from_pem(self.key_name, self.signing_key.get_secret_value())
