"""Witness settings (prefix IKD_WITNESS_): the log it watches, its own key and file, no Kafka."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from ikd_shared import checkpoint
from ikd_shared.settings import Ed25519KeySetting


class WitnessSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IKD_WITNESS_", extra="ignore", frozen=True)

    name: str = Field(
        pattern=r"^[^\s+]{1,255}$",
        description="the witness's key name in its cosignatures, a schema-less URL",
    )
    signing_key: Ed25519KeySetting = Field(
        description="the witness's own Ed25519 private key (PKCS8 PEM, or @path to one)"
    )
    log_url: str = Field(
        pattern=r"^https?://[^\s]+$", description="base URL of the audit service's public log"
    )
    log_vkey: str = Field(description="the log's verifier key (GET /v1/log/vkey, out of band)")
    log_origin: str | None = Field(
        default=None, description="the log's checkpoint origin; default: the vkey's name"
    )
    database: Path = Field(
        default=Path("witness.sqlite3"), description="the witness's own SQLite file"
    )
    poll_interval_seconds: float = Field(default=10.0, gt=0)
    post_cosignatures: bool = Field(
        default=True, description="return each cosignature to the log (POST /v1/log/cosignatures)"
    )
    host: str = Field(default="127.0.0.1")
    port: int = Field(default=18020, ge=1, le=65535)

    @field_validator("log_vkey")
    @classmethod
    def _vkey_parses(cls, value: str) -> str:
        checkpoint.parse_vkey(value)
        return value.strip()

    @property
    def log_verifier(self) -> checkpoint.Verifier:
        return checkpoint.parse_vkey(self.log_vkey)

    @property
    def origin(self) -> str:
        return self.log_origin or self.log_verifier.name
