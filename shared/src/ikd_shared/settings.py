"""Settings shared by every service: pydantic-settings, one env prefix per service.

A service calls `load_settings(MySettings)` at start; a missing or invalid variable stops it
with one line naming the variable, and placeholder secrets are refused outside development.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Self, TypeVar
from urllib.parse import unquote, urlsplit

from pydantic import (
    AfterValidator,
    AliasChoices,
    BeforeValidator,
    Field,
    HttpUrl,
    IPvAnyNetwork,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from ikd_shared.auth import load_ed25519_private_key, load_jwks

PLACEHOLDER_MARKERS = ("change-me", "changeme", "placeholder", "example", "dev-", "insecure")
MIN_SECRET_LENGTH = 32


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class PlaceholderSecretError(ValueError):
    pass


def is_placeholder(secret: str) -> bool:
    lowered = secret.lower()
    return len(secret) < MIN_SECRET_LENGTH or any(m in lowered for m in PLACEHOLDER_MARKERS)


def dsn_password(dsn: str) -> str | None:
    """The password inside a postgresql:// URL, if it carries one."""
    if not dsn.startswith(("postgres://", "postgresql://")):
        return None
    try:
        password = urlsplit(dsn).password
    except ValueError:
        return None
    return unquote(password) if password else None


def _read_key_file(value: Any) -> Any:
    # Read @path before anything else so the placeholder check sees the key, not its file name.
    if isinstance(value, str) and value.startswith("@"):
        try:
            return Path(value[1:]).read_text()
        except OSError as error:
            raise ValueError(f"cannot read the key file: {error.strerror}") from None
    return value


def _read_password_file(value: Any) -> Any:
    value = _read_key_file(value)
    return value.strip() if isinstance(value, str) else value


class KafkaSecurityProtocol(StrEnum):
    SASL_SSL = "SASL_SSL"
    PLAINTEXT = "PLAINTEXT"  # development brokers without security only


class DeploymentSettings(BaseSettings):
    """IKD_ENVIRONMENT, and the refusal of placeholder secrets and database passwords outside
    development: the base of every process's settings (services and their admin commands)."""

    model_config = SettingsConfigDict(env_prefix="IKD_", extra="ignore", frozen=True)

    environment: Environment = Field(
        default=Environment.PRODUCTION,
        validation_alias=AliasChoices("IKD_ENVIRONMENT"),
        description="development allows placeholder secrets and private webhook targets",
    )

    @property
    def is_development(self) -> bool:
        return self.environment is Environment.DEVELOPMENT

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Self:
        if self.is_development:
            return self
        for name, value in self:
            if isinstance(value, SecretStr) and is_placeholder(value.get_secret_value()):
                raise PlaceholderSecretError(
                    f"{env_name(type(self), name)} holds a placeholder or short secret "
                    f"(need {MIN_SECRET_LENGTH}+ random characters outside development)"
                )
            # A database URL carries its password inline (typed DSN or plain text alike).
            password = dsn_password(str(value)) if value is not None else None
            if password is not None and is_placeholder(password):
                raise PlaceholderSecretError(
                    f"{env_name(type(self), name)} holds a placeholder or short database "
                    f"password (need {MIN_SECRET_LENGTH}+ random characters outside development)"
                )
        return self


class KafkaClientSettings(DeploymentSettings):
    """Where and as whom a process connects to Kafka: each service, ikdctl, the benchmarks.

    The same variables for every process (IKD_KAFKA_*): each process runs as one principal.
    """

    model_config = SettingsConfigDict(env_prefix="IKD_", extra="ignore", frozen=True)

    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:19092",
        validation_alias=AliasChoices("IKD_KAFKA_BOOTSTRAP_SERVERS"),
    )
    kafka_security_protocol: KafkaSecurityProtocol = Field(
        default=KafkaSecurityProtocol.SASL_SSL,
        validation_alias=AliasChoices("IKD_KAFKA_SECURITY_PROTOCOL"),
        description="SASL_SSL (SCRAM over TLS); PLAINTEXT only in development",
    )
    kafka_sasl_mechanism: str = Field(
        default="SCRAM-SHA-512", validation_alias=AliasChoices("IKD_KAFKA_SASL_MECHANISM")
    )
    kafka_username: str | None = Field(
        default=None,
        validation_alias=AliasChoices("IKD_KAFKA_USERNAME"),
        description="this process's Kafka principal (SCRAM user)",
    )
    kafka_password: Annotated[SecretStr | None, BeforeValidator(_read_password_file)] = Field(
        default=None,
        validation_alias=AliasChoices("IKD_KAFKA_PASSWORD"),
        description="the principal's SCRAM password, inline or @path",
    )
    kafka_ca_file: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("IKD_KAFKA_CA_FILE"),
        description="PEM CA bundle the brokers' certificates chain to (default: system CAs)",
    )

    @model_validator(mode="after")
    def _require_kafka_credentials(self) -> Self:
        if self.kafka_security_protocol is KafkaSecurityProtocol.PLAINTEXT:
            if not self.is_development:
                raise ValueError(
                    "IKD_KAFKA_SECURITY_PROTOCOL=PLAINTEXT is allowed only in development"
                )
            return self
        for name in ("kafka_username", "kafka_password"):
            if getattr(self, name) is None:
                raise ValueError(f"{env_name(type(self), name)} is required with SASL_SSL")
        return self


class ServiceSettings(KafkaClientSettings):
    """Base of each service's settings; subclasses set `env_prefix` in their model_config."""

    model_config = SettingsConfigDict(env_prefix="IKD_", extra="ignore", frozen=True)

    kafka_topic_prefix: str = Field(
        default="",
        validation_alias=AliasChoices("IKD_KAFKA_TOPIC_PREFIX"),
        pattern=r"^[a-zA-Z0-9._-]*$",
        description="prepended to every topic name (tests use a unique one per run)",
    )
    kafka_replication_factor: int = Field(
        default=1, ge=1, validation_alias=AliasChoices("IKD_KAFKA_REPLICATION_FACTOR")
    )
    pseudonym_key: SecretStr = Field(
        validation_alias=AliasChoices("IKD_PSEUDONYM_KEY"),
        description="HMAC key that turns a NIK into the citizen pseudonym; same for all services",
    )


S = TypeVar("S", bound=DeploymentSettings)


def _check_ed25519_key(value: SecretStr) -> SecretStr:
    try:
        load_ed25519_private_key(value.get_secret_value())
    except (ValueError, TypeError):
        raise ValueError("not an Ed25519 private key in PEM form") from None
    return value


def _load_jwks(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return load_jwks(value)
        except (OSError, ValueError) as error:
            raise ValueError(f"cannot load the JWKS: {error}") from None
    return value


Ed25519KeySetting = Annotated[
    SecretStr, BeforeValidator(_read_key_file), AfterValidator(_check_ed25519_key)
]
"""An Ed25519 private key setting: PKCS8 PEM inline or `@path`; holds the PEM text."""

JwksSetting = Annotated[dict[str, Any], NoDecode, BeforeValidator(_load_jwks)]
"""A JWKS setting: inline JSON or `@path` to a JSON file."""


class TokenKeySettings(DeploymentSettings):
    """Where a service finds identity's access-token keys: the JWKS URL (kept fresh by
    ikd_shared.jwks), or a static `token_jwks` the subclass declares (tests, offline)."""

    token_jwks_url: HttpUrl | None = Field(
        default=None,
        description="identity's /.well-known/jwks.json, fetched, cached and refreshed on an "
        "unknown kid (https outside development); instead of TOKEN_JWKS",
    )
    token_jwks_ca_file: Path | None = Field(
        default=None,
        description="PEM CA bundle identity's certificate chains to (default: system CAs)",
    )
    token_jwks_refresh_seconds: float = Field(
        default=300.0, ge=5, le=86_400, description="how often the JWKS is fetched again"
    )
    token_jwks_min_interval_seconds: float = Field(
        default=10.0,
        ge=0.1,
        le=3600,
        description="the least time between two fetches a token with an unknown kid causes",
    )

    @model_validator(mode="after")
    def _one_token_key_source(self) -> Self:
        static = getattr(self, "token_jwks", None)
        url_name = env_name(type(self), "token_jwks_url")
        static_name = env_name(type(self), "token_jwks")
        if (static is None) == (self.token_jwks_url is None):
            raise ValueError(f"set one of {url_name} and {static_name}")
        url = self.token_jwks_url
        if url is not None and url.scheme != "https" and not self.is_development:
            raise ValueError(f"{url_name} must be https outside development")
        return self


def _split_networks(value: Any) -> Any:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


TrustedProxiesSetting = Annotated[
    tuple[IPvAnyNetwork, ...], NoDecode, BeforeValidator(_split_networks)
]
"""Reverse proxies whose X-Forwarded-For is believed: addresses or CIDR networks, comma-separated.

Empty (the default): the direct peer is the client. Only a peer in this list may name another
client address, and then the right-most address that is not itself a trusted proxy counts
(uvicorn's ProxyHeadersMiddleware; see `proxy_hosts`)."""


def proxy_hosts(trusted: tuple[IPvAnyNetwork, ...]) -> list[str]:
    """The trusted proxies in the form uvicorn's ProxyHeadersMiddleware takes."""
    return [str(network) for network in trusted]


def env_name(settings_cls: type[DeploymentSettings], field_name: str) -> str:
    """The environment variable that sets a field."""
    field = settings_cls.model_fields.get(field_name)
    if field is None and any(
        isinstance(f.validation_alias, AliasChoices) and field_name in f.validation_alias.choices
        for f in settings_cls.model_fields.values()
    ):
        return field_name  # validation errors of aliased fields name the alias itself
    if field is not None and isinstance(field.validation_alias, AliasChoices):
        first = field.validation_alias.choices[0]
        if isinstance(first, str):
            return first
    prefix = settings_cls.model_config.get("env_prefix", "")
    return f"{prefix}{field_name}".upper()


def describe_errors(settings_cls: type[DeploymentSettings], error: ValidationError) -> list[str]:
    lines = []
    for item in error.errors():
        message = item["msg"].removeprefix("Value error, ")
        if not item["loc"]:
            lines.append(message)
            continue
        variable = env_name(settings_cls, str(item["loc"][0]))
        if item["type"] == "missing":
            lines.append(f"setting {variable} is missing")
        else:
            lines.append(f"setting {variable} is invalid: {message}")
    return lines


def secret_option(
    value: str | None, file: Path | None, *, development: bool, option: str = "--secret"
) -> str | None:
    """A secret handed to an admin command: from `file` (`-`: standard input), or as the value
    of `option` on the command line in development only (`ps` shows a process's arguments to
    every user of the host). None when neither is given. ValueError says what is wrong."""
    if value is not None and file is not None:
        raise ValueError(f"give {option} or {option}-file, not both")
    if value is not None:
        if not development:
            raise ValueError(
                f"{option} would show the secret in the process list; outside development "
                f"give {option}-file PATH, or {option}-file - to read it from standard input"
            )
        return value
    if file is None:
        return None
    try:
        text = sys.stdin.read() if str(file) == "-" else file.read_text()
    except OSError as error:
        raise ValueError(f"cannot read {file}: {error.strerror}") from None
    secret = text.strip()
    if not secret:
        raise ValueError(f"{option}-file gave an empty secret")
    return secret


def load_settings(settings_cls: type[S]) -> S:
    """Build settings from the environment or exit with one line per bad variable."""
    try:
        return settings_cls()
    except ValidationError as error:
        for line in describe_errors(settings_cls, error):
            print(f"{settings_cls.__module__.split('.')[0]}: {line}", file=sys.stderr)
        raise SystemExit(2) from None
