"""Helpers for the audit tests: keys, settings, the signer and access events."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from unittest import mock

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ikd_audit.adapters.repository import SignRequests
from ikd_audit.bootstrap import SignerRuntime, bootstrap_signer
from ikd_audit.config import AuditSettings, SignerSettings
from ikd_audit.entrypoints.signer import run_signer
from ikd_audit.service_layer.checkpoints import DEFAULT_ORIGIN
from ikd_dev.issuer import IssuerKey, mint_credential, public_jwk
from ikd_shared import checkpoint
from ikd_shared.auth import TokenIssuer
from ikd_shared.credentials import Purpose
from ikd_shared.events.access_v1 import AccessRecorded, Channel, Outcome
from ikd_shared.events.profile_v1 import CitizenProfile
from ikd_shared.legal import LegalBasis
from ikd_shared.pseudonym import pseudonymize
from tests.support import environment  # noqa: F401 - loads deploy/dev.env

CREDENTIAL_ISSUER = "https://dukcapil.kemendagri.go.id/ikd"
PSEUDONYM_KEY = os.environ["IKD_PSEUDONYM_KEY"].encode()


@dataclass
class Keys:
    tree_head: Ed25519PrivateKey
    tokens: TokenIssuer
    dukcapil: IssuerKey

    @property
    def tree_head_pem(self) -> str:
        return self.tree_head.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()

    def log_vkey(self, origin: str = DEFAULT_ORIGIN) -> str:
        return checkpoint.Signer(origin, self.tree_head).verifier.vkey

    def token(self, scopes: set[str], audience: str = "ikd-audit") -> str:
        return self.tokens.issue("auditor-1", scopes, [audience])

    def credential(
        self, profile: CitizenProfile, purpose: Purpose = Purpose.TRAIL, **kwargs: Any
    ) -> str:
        """A credential for `purpose`: the citizen's trail unless told otherwise."""
        return mint_credential(
            self.dukcapil,
            kid="dukcapil-test-1",
            issuer=CREDENTIAL_ISSUER,
            purpose=purpose,
            profile=profile,
            **kwargs,
        )


def audit_env(
    keys: Keys, database_url: str, prefix: str, *, origin: str = DEFAULT_ORIGIN, **extra: Any
) -> dict[str, str]:
    """The service's settings: the log's verifier key, never the signing key."""
    env = {
        "IKD_AUDIT_DATABASE_URL": database_url,
        "IKD_AUDIT_LOG_VKEY": keys.log_vkey(origin),
        "IKD_AUDIT_SIGNER_WAIT_SECONDS": "20",
        "IKD_AUDIT_TOKEN_JWKS": json.dumps(keys.tokens.jwks()),
        "IKD_AUDIT_TRUST_JWKS": json.dumps(
            {"keys": [public_jwk(keys.dukcapil, "dukcapil-test-1")]}
        ),
        "IKD_AUDIT_SESSION_SECRET": "dev-audit-session-secret-for-tests-only",
        "IKD_KAFKA_TOPIC_PREFIX": prefix,
        "IKD_AUDIT_PAGE_SIZE_MAX": "100",
    }
    env.update({key: str(value) for key, value in extra.items()})
    return env


def signer_env(
    keys: Keys, database_url: str, *, origin: str = DEFAULT_ORIGIN, **extra: Any
) -> dict[str, str]:
    """The signer's settings. By default it signs only when asked, as the tests' heads were
    signed on demand before: no head of a size a test does not expect."""
    env = {
        "IKD_SIGNER_DATABASE_URL": database_url,
        "IKD_SIGNER_SIGNING_KEY": keys.tree_head_pem,
        "IKD_SIGNER_LOG_ORIGIN": origin,
        "IKD_SIGNER_INTERVAL_SECONDS": "3600",
        "IKD_SIGNER_MAX_ENTRIES": str(10**9),
    }
    env.update({key: str(value) for key, value in extra.items()})
    return env


def make_settings(env: dict[str, str]) -> AuditSettings:
    with mock.patch.dict(os.environ, env):
        return AuditSettings()


def make_signer_settings(env: dict[str, str]) -> SignerSettings:
    with mock.patch.dict(os.environ, env):
        return SignerSettings()


@contextlib.asynccontextmanager
async def running_signer(settings: SignerSettings) -> AsyncIterator[SignerRuntime]:
    """The signer process's loop in the background: its own role, key and LISTEN connection."""
    async with bootstrap_signer(settings) as runtime:
        requested = asyncio.Event()
        listener = await SignRequests.listen(settings.database_url, requested.set)
        task = asyncio.create_task(
            run_signer(
                runtime.signer,
                requested,
                interval=settings.interval_seconds,
                max_entries=settings.max_entries,
            )
        )
        try:
            yield runtime
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await listener.close()


def access(
    profile: CitizenProfile | None = None,
    *,
    agency: str = "bpjs-kesehatan",
    service: str = "daftar-peserta",
    channel: Channel = Channel.PREFILL,
    outcome: Outcome = Outcome.SERVED,
    fields: tuple[str, ...] = ("full_name", "address.street"),
    when: dt.datetime | None = None,
) -> AccessRecorded:
    return AccessRecorded(
        access_id=uuid.uuid4(),
        occurred_at=when or dt.datetime.now(dt.UTC),
        agency=agency,
        service=service,
        pseudonym=pseudonymize(profile.nik, PSEUDONYM_KEY) if profile else None,
        fields=list(fields),
        purpose="enrolment",
        legal_basis=LegalBasis.LEGAL_OBLIGATION,
        channel=channel,
        outcome=outcome,
        reason="not_in_policy" if outcome is Outcome.DENIED else None,
    )
