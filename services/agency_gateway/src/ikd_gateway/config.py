"""Settings of one gateway deployment (env prefix IKD_GATEWAY_); one agency per deployment."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Self

from pydantic import BeforeValidator, Field, HttpUrl, PostgresDsn, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from ikd_shared.legal import CODE_PATTERN
from ikd_shared.policy import DEFAULT_POLICY, REPO_ROOT
from ikd_shared.settings import ServiceSettings, TokenKeySettings


def _secret_file(value: Any) -> Any:
    # `@path`: the secret is read from a file, so it never shows on a command line or in `ps`.
    if isinstance(value, str) and value.startswith("@"):
        try:
            return Path(value[1:]).read_text().strip()
        except OSError as error:
            raise ValueError(f"cannot read the secret file: {error.strerror}") from None
    return value


class GatewaySettings(ServiceSettings, TokenKeySettings):
    model_config = SettingsConfigDict(env_prefix="IKD_GATEWAY_", extra="ignore", frozen=True)

    agency: Annotated[str, Field(pattern=CODE_PATTERN)] = Field(
        description="the agency this deployment serves (a code from the policy file)"
    )
    policy_file: Path = Field(default=DEFAULT_POLICY, description="the MPP's policy YAML")
    database_url: PostgresDsn = Field(description="runtime role (<db>_app) of the agency's DB")
    migration_database_url: PostgresDsn | None = Field(
        default=None, description="owner role (<db>_owner); only `ikd-gateway migrate` needs it"
    )
    db_pool_max: int = Field(
        default=10,
        ge=1,
        description="most pooled connections per process; small when many gateways share a "
        "server (make up's whole MPP)",
    )
    token_jwks: str | None = Field(
        default=None, description="identity's token JWKS: inline JSON or @path (static)"
    )
    token_issuer: str = "ikd-identity"  # noqa: S105 - an issuer name, not a secret
    token_audience: str = "ikd-gateway"  # noqa: S105 - an audience name
    host: str = "127.0.0.1"
    port: int = Field(default=18100, ge=1, le=65535)
    data_dir: Path | None = Field(
        default=None, description="faust data dir; default .run/gateway/<agency>/ in the repo"
    )
    worker_web_port: int | None = Field(
        default=None, description="faust's own web server (metrics); disabled when unset"
    )
    worker_metrics_port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description="the worker's Prometheus metrics (webhook counters) on HOST:<port>; "
        "off when unset (the API's /metrics has the rest)",
    )
    session_timeout_seconds: float = Field(
        default=10.0,
        ge=6,
        le=300,
        description="Kafka consumer session timeout: how soon a crashed worker's partitions move",
    )
    stream_batch_size: int = Field(
        default=500,
        ge=1,
        le=10_000,
        description="most records of one topic the worker applies in one transaction",
    )
    stream_batch_seconds: float = Field(
        default=0.05,
        gt=0,
        le=5,
        description="how long the worker waits to fill a batch before applying what it has",
    )
    relay_interval_seconds: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description="fallback poll of the access and agency-topic outboxes: a commit in the "
        "same process wakes its relay at once, so the poll only picks up rows another process "
        "left behind; every poll is a transaction, which 37 idle gateways pay for",
    )
    retention_check_seconds: float = Field(default=60.0, gt=0)
    version_floor_seconds: float = Field(
        default=7 * 24 * 3600.0,
        gt=0,
        description="how long a citizen no longer held keeps a version floor (pseudonym and "
        "last version only) that refuses older versions delivered again",
    )
    webhook_max_attempts: int = Field(default=8, ge=1, le=30)
    webhook_backoff_base_seconds: float = Field(default=2.0, gt=0)
    webhook_backoff_max_seconds: float = Field(default=3600.0, gt=0)
    webhook_timeout_seconds: float = Field(default=10.0, gt=0, le=60)
    webhook_disable_after_seconds: float = Field(
        default=5 * 24 * 3600.0,
        gt=0,
        description="disable an endpoint whose attempts have all failed for this long "
        "(Standard Webhooks providers use days); its pending messages are cancelled",
    )
    webhook_poll_seconds: float = Field(
        default=1.0,
        gt=0,
        le=60,
        description="how often an idle worker looks for due webhook messages (new ones and "
        "retries); each look is a transaction",
    )
    webhook_allow_private_targets: bool = Field(
        default=False,
        description="development only: no webhook target checks (loopback/private URLs, any "
        "host whether or not the policy lists it)",
    )
    webhook_max_endpoints: int = Field(
        default=10, ge=1, le=1000, description="enabled webhook endpoints the agency may have"
    )
    receiver_secret: SecretStr | None = Field(
        default=None, description="whsec_... secret of the example receiver"
    )
    identity_url: HttpUrl | None = Field(
        default=None,
        description="identity's API, where the gateway registers citizens for its agency; "
        "registrations answer 503 while unset",
    )
    identity_client_id: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9._-]{2,64}$",
        description="the gateway's own OAuth client at identity (default gateway-<agency>)",
    )
    identity_client_secret: Annotated[SecretStr | None, BeforeValidator(_secret_file)] = Field(
        default=None, description="that client's secret: @path to a file holding it"
    )
    identity_timeout_seconds: float = Field(default=10.0, gt=0, le=60)

    @model_validator(mode="after")
    def _identity_client_complete(self) -> Self:
        if self.identity_url is not None and self.identity_client_secret is None:
            raise ValueError(
                "IKD_GATEWAY_IDENTITY_CLIENT_SECRET is required with IKD_GATEWAY_IDENTITY_URL"
            )
        return self

    denial_limit: int = Field(
        default=50,
        ge=1,
        le=100_000,
        description="denied prefill requests of one client within the window that throttle it",
    )
    denial_window_seconds: float = Field(default=60.0, gt=0, le=86_400)
    denial_block_seconds: float = Field(
        default=300.0, gt=0, le=86_400, description="how long a throttled client gets 429"
    )
    denial_recheck_seconds: float = Field(
        default=1.0,
        ge=0,
        le=60,
        description="how long an API replica trusts that a client was not throttled; a block "
        "another replica set takes effect here within this time",
    )

    @property
    def consumer_group(self) -> str:
        return f"ikd-gateway-{self.agency}"

    @property
    def identity_client(self) -> str:
        return self.identity_client_id or f"gateway-{self.agency}"

    @property
    def private_targets_allowed(self) -> bool:
        return self.is_development and self.webhook_allow_private_targets

    def resolved_data_dir(self) -> Path:
        return self.data_dir or REPO_ROOT / ".run" / "gateway" / self.agency
