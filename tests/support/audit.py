"""Helpers for the audit tests: keys, settings and access events."""

from __future__ import annotations

import datetime as dt
import json
import os
import uuid
from dataclasses import dataclass
from typing import Any
from unittest import mock

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ikd_audit.config import AuditSettings
from ikd_dev.issuer import IssuerKey, mint_credential, public_jwk
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


def audit_env(keys: Keys, database_url: str, prefix: str, **extra: Any) -> dict[str, str]:
    env = {
        "IKD_AUDIT_DATABASE_URL": database_url,
        "IKD_AUDIT_TREE_HEAD_SIGNING_KEY": keys.tree_head_pem,
        "IKD_AUDIT_TOKEN_JWKS": json.dumps(keys.tokens.jwks()),
        "IKD_AUDIT_TRUST_JWKS": json.dumps(
            {"keys": [public_jwk(keys.dukcapil, "dukcapil-test-1")]}
        ),
        "IKD_AUDIT_SESSION_SECRET": "dev-audit-session-secret-for-tests-only",
        "IKD_KAFKA_TOPIC_PREFIX": prefix,
        "IKD_AUDIT_TREE_HEAD_INTERVAL_SECONDS": "1",
        "IKD_AUDIT_TREE_HEAD_MAX_ENTRIES": "50",
        "IKD_AUDIT_PAGE_SIZE_MAX": "100",
    }
    env.update({key: str(value) for key, value in extra.items()})
    return env


def make_settings(env: dict[str, str]) -> AuditSettings:
    with mock.patch.dict(os.environ, env):
        return AuditSettings()


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
