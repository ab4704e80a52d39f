"""Identity service settings: variables prefixed IKD_IDENTITY_, plus the shared IKD_* ones."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import AfterValidator, Field, PostgresDsn, model_validator
from pydantic_settings import SettingsConfigDict

from ikd_identity.adapters.keys import published_keys
from ikd_shared.credentials import DEFAULT_AUDIENCES, Purpose
from ikd_shared.policy import DEFAULT_POLICY
from ikd_shared.settings import (
    Ed25519KeySetting,
    JwksSetting,
    ServiceSettings,
    TrustedProxiesSetting,
)

DEFAULT_CREDENTIAL_ISSUER = "https://dukcapil.kemendagri.go.id/ikd"


def _publishable(jwks: dict[str, Any]) -> dict[str, Any]:
    published_keys(jwks)  # raises ValueError naming what may not be published
    return jwks


class IdentitySettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="IKD_IDENTITY_", extra="ignore", frozen=True)

    database_url: PostgresDsn = Field(description="runtime DSN (the ikd_identity_app role)")
    migration_database_url: PostgresDsn | None = Field(
        default=None, description="owner DSN for `migrate` and `clients add`"
    )
    trust_jwks: JwksSetting = Field(
        description="Dukcapil trust anchors: a JWKS as inline JSON or @path"
    )
    credential_issuer: str = Field(default=DEFAULT_CREDENTIAL_ISSUER, min_length=1)
    verification_audience: str = Field(
        default=DEFAULT_AUDIENCES[Purpose.VERIFICATION],
        min_length=1,
        description="aud of credentials shown at a counter to be verified",
    )
    consent_audience: str = Field(
        default=DEFAULT_AUDIENCES[Purpose.CONSENT],
        min_length=1,
        description="aud of credentials that grant or revoke a consent",
    )
    credential_max_age_s: int = Field(
        default=300, ge=10, description="how fresh a credential proving a consent must be"
    )
    policy_file: Path = Field(
        default=DEFAULT_POLICY,
        description="the MPP's policy YAML: the services a citizen may ask for or consent to",
    )
    token_signing_key: Ed25519KeySetting = Field(description="Ed25519 private key (PEM or @path)")
    token_key_id: str | None = Field(
        default=None, description="kid of the token key; default: its RFC 7638 thumbprint"
    )
    token_published_keys: Annotated[JwksSetting, AfterValidator(_publishable)] = Field(
        default_factory=lambda: {"keys": []},
        description="public Ed25519 JWKs published beside the signing key, which they never "
        "sign with: the next key before it signs, the previous one until its tokens expired "
        "(inline JSON or @path; a key without kid gets its RFC 7638 thumbprint)",
    )
    token_issuer: str = Field(default="ikd-identity", min_length=1)
    token_ttl_s: int = Field(default=300, ge=30, le=3600)
    # Failed client authentications at /oauth/token (ikd_shared.throttle): a burst of the
    # limit, then one more attempt per window/limit. Client secrets are 256 random bits, so the
    # limits are about argon2's cost (~160 ms and 64 MiB per check), not about guessing.
    token_throttle_window_s: float = Field(
        default=300.0, gt=0, description="the window of both token throttle limits"
    )
    token_throttle_max_failures_per_client: int = Field(
        default=10, ge=1, description="failed authentications of one client id from one address"
    )
    token_throttle_max_failures_per_address: int = Field(
        default=30, ge=1, description="failed authentications from one address, any client id"
    )
    trusted_proxies: TrustedProxiesSetting = Field(
        default=(),
        description="reverse proxies (addresses or CIDRs, comma-separated) whose "
        "X-Forwarded-For names the client address; empty: the direct peer is the client",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=18000, ge=1, le=65535)
    max_body_bytes: int = Field(default=2 * 1024 * 1024, ge=1024)
    db_pool_max: int = Field(default=10, ge=1)
    verify_group_max: int = Field(
        default=64,
        ge=1,
        le=1000,
        description="verifications committed together at most (group commit; 1: one each)",
    )
    verify_groups_in_flight: int = Field(
        default=2, ge=1, description="verification transactions open at once (group commit)"
    )
    relay_enabled: bool = Field(default=True, description="run the outbox relay inside `serve`")
    relay_batch_size: int = Field(default=1000, ge=1, le=10000)
    relay_poll_interval_s: float = Field(default=1.0, gt=0)
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _one_audience_per_purpose(self) -> Self:
        if self.verification_audience == self.consent_audience:
            raise ValueError(
                "IKD_IDENTITY_VERIFICATION_AUDIENCE and IKD_IDENTITY_CONSENT_AUDIENCE must differ:"
                " a credential serves one purpose"
            )
        return self

    def audience(self, purpose: Purpose) -> str:
        return {
            Purpose.VERIFICATION: self.verification_audience,
            Purpose.CONSENT: self.consent_audience,
        }[purpose]

    @property
    def app_dsn(self) -> str:
        return str(self.database_url)

    @property
    def owner_dsn(self) -> str:
        return str(self.migration_database_url or self.database_url)
