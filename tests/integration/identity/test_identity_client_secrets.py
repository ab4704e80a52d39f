"""Admin commands on the real database: a client's or an auditor's secret goes in on standard
input (never as an argument outside development), and a placeholder database password stops
them outside development before anything connects."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg

from ikd_audit.cli import MIGRATIONS as AUDIT_MIGRATIONS
from ikd_identity.adapters.postgres import PgClients
from ikd_identity.adapters.secrets import Argon2Hasher

BIN = Path(sys.executable).parent
SECRET = "a-chosen-secret-of-the-feed-client-0123456789"


def run(
    command: list[str], env: dict[str, str], stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own console scripts
        command,
        env={**os.environ, **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_a_client_secret_from_standard_input_authenticates(
    identity_db: Any, api: Any
) -> None:
    env = {"IKD_IDENTITY_MIGRATION_DATABASE_URL": identity_db.owner_dsn}
    added = run(
        [str(BIN / "ikd-identity"), "clients", "add", "--id", "feed-1", "--scopes",
         "identity:feed", "--secret-file", "-"],
        env,
        stdin=SECRET + "\n",
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert SECRET not in added.stdout  # a secret it was given is not printed back
    connection = await asyncpg.connect(identity_db.owner_dsn)
    try:
        client = await PgClients(connection).get("feed-1")
    finally:
        await connection.close()
    assert client is not None
    assert Argon2Hasher().verify(client.secret_hash, SECRET)
    token = await api.client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "client_id": "feed-1", "client_secret": SECRET},
    )
    assert token.status_code == 200, token.text


def test_outside_development_argv_secrets_and_placeholder_passwords_are_refused(
    identity_db: Any,
) -> None:
    production = {
        "IKD_ENVIRONMENT": "production",
        "IKD_IDENTITY_MIGRATION_DATABASE_URL": identity_db.owner_dsn,  # dev-test-role-password
    }
    migrate = run([str(BIN / "ikd-identity"), "migrate"], production)
    assert migrate.returncode == 2
    assert "IKD_IDENTITY_MIGRATION_DATABASE_URL holds a placeholder" in migrate.stderr
    argv = run(
        [str(BIN / "ikd-identity"), "clients", "add", "--id", "feed-2", "--scopes",
         "identity:feed", "--secret", SECRET],
        {**production, "IKD_IDENTITY_MIGRATION_DATABASE_URL": f"postgresql://o:{SECRET}@h:1/x"},
    )  # fmt: skip
    assert argv.returncode == 2
    assert "process list" in argv.stderr


async def test_an_auditor_secret_from_a_file(database_factory: Any, tmp_path: Path) -> None:
    audit_db = await database_factory("audit", Path(AUDIT_MIGRATIONS))
    keys_env = audit_env_for_cli(audit_db.app_dsn)
    secret_file = tmp_path / "auditor.secret"
    secret_file.write_text(SECRET + "\n")
    added = run(
        [str(BIN / "ikd-audit"), "auditors", "add", "--id", "auditor-9", "--secret-file",
         str(secret_file)],
        keys_env,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert "secret (shown once)" not in added.stdout
    connection = await asyncpg.connect(audit_db.owner_dsn)
    try:
        stored = await connection.fetchval(
            "SELECT secret_hash FROM auditor WHERE client_id = 'auditor-9'"
        )
    finally:
        await connection.close()
    assert Argon2Hasher().verify(stored, SECRET)


def audit_env_for_cli(database_url: str) -> dict[str, str]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from ikd_dev.issuer import generate_issuer_key, public_jwk
    from ikd_shared import checkpoint

    vkey = checkpoint.Signer("audit.test.example/log", Ed25519PrivateKey.generate()).verifier.vkey
    jwks = json.dumps({"keys": [public_jwk(generate_issuer_key(), "k1")]})
    return {
        "IKD_AUDIT_DATABASE_URL": database_url,
        "IKD_AUDIT_LOG_VKEY": vkey,
        "IKD_AUDIT_TOKEN_JWKS": jwks,
        "IKD_AUDIT_TRUST_JWKS": jwks,
        "IKD_AUDIT_SESSION_SECRET": "a-session-secret-for-the-cli-test-0123456789",
    }
