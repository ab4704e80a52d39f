"""Client administration on the real database and the real token endpoint: `clients list`
shows no secret, `rotate-secret` with a grace period lets old and new secrets overlap and
without one replaces the secret at once, a disabled client gets no token, and `keys` prints
public keys only."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import asyncpg
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from ikd_identity.adapters.keys import thumbprint
from ikd_identity.adapters.postgres import PgClients

BIN = Path(sys.executable).parent
FIRST = "the-first-secret-of-counter-7-0123456789abcdef"
SECOND = "the-second-secret-of-counter-7-0123456789abcdef"
THIRD = "the-third-secret-of-counter-7-0123456789abcdef"


def cli(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - our own console script
        [str(BIN / "ikd-identity"), *args],
        env={**os.environ, **env},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def token_status(api: Any, client_id: str, secret: str) -> int:
    response = await api.client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret},
    )
    return int(response.status_code)


async def test_list_rotate_with_and_without_grace_and_disable(identity_db: Any, api: Any) -> None:
    env = {"IKD_IDENTITY_MIGRATION_DATABASE_URL": identity_db.owner_dsn}
    added = cli(
        env, "clients", "add", "--id", "counter-7", "--scopes", "identity:verify",
        "--agency", "bpjs-kesehatan", "--secret-file", "-", stdin=FIRST,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    assert await token_status(api, "counter-7", FIRST) == 200

    rotated = cli(
        env, "clients", "rotate-secret", "--id", "counter-7", "--grace-minutes", "60",
        "--secret-file", "-", stdin=SECOND,
    )  # fmt: skip
    assert rotated.returncode == 0, rotated.stderr
    assert "the old one works until" in rotated.stdout
    assert SECOND not in rotated.stdout
    assert await token_status(api, "counter-7", SECOND) == 200
    assert await token_status(api, "counter-7", FIRST) == 200  # the overlap

    listed = cli(env, "clients", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = {row["client_id"]: row for row in map(json.loads, listed.stdout.splitlines())}
    row = rows["counter-7"]
    assert row["status"] == "enabled"
    assert row["agency"] == "bpjs-kesehatan"
    assert row["scopes"] == ["identity:verify"]
    assert row["previous_secret_valid_until"] is not None
    connection = await asyncpg.connect(identity_db.owner_dsn)
    try:
        stored = await PgClients(connection).get("counter-7")
    finally:
        await connection.close()
    assert stored is not None
    assert stored.previous_secret_hash is not None
    for output in (listed.stdout, cli(env, "clients", "list").stdout):
        assert stored.secret_hash not in output
        assert stored.previous_secret_hash not in output
        assert "counter-7" in output

    # Without a grace period (a leaked secret): the old ones stop working at once.
    now = cli(
        env, "clients", "rotate-secret", "--id", "counter-7", "--secret-file", "-", stdin=THIRD
    )
    assert now.returncode == 0, now.stderr
    assert "the old one no longer works" in now.stdout
    assert await token_status(api, "counter-7", THIRD) == 200
    assert await token_status(api, "counter-7", SECOND) == 401
    assert await token_status(api, "counter-7", FIRST) == 401

    disabled = cli(env, "clients", "disable", "--id", "counter-7")
    assert disabled.returncode == 0, disabled.stderr
    assert await token_status(api, "counter-7", THIRD) == 401
    listed = cli(env, "clients", "list")
    assert "counter-7\tdisabled" in listed.stdout

    unknown = cli(
        env, "clients", "rotate-secret", "--id", "nobody", "--secret-file", "-", stdin=THIRD
    )
    assert unknown.returncode == 1
    assert "not registered" in unknown.stderr


def test_outside_development_a_rotated_secret_never_comes_from_argv(identity_db: Any) -> None:
    production = {
        "IKD_ENVIRONMENT": "production",
        "IKD_IDENTITY_MIGRATION_DATABASE_URL": f"postgresql://o:{SECOND}@127.0.0.1:1/x",
    }
    argv = cli(production, "clients", "rotate-secret", "--id", "counter-7", "--secret", THIRD)
    assert argv.returncode == 2
    assert "No such option" in argv.stderr


def test_keys_generate_writes_a_private_file_and_prints_the_public_jwk(tmp_path: Path) -> None:
    out = tmp_path / "next-token-key.pem"
    generated = cli({}, "keys", "generate", "--out", str(out))
    assert generated.returncode == 0, generated.stderr
    assert out.stat().st_mode & 0o777 == 0o600
    jwk = json.loads(generated.stdout)
    assert "d" not in jwk
    assert jwk["kid"] == thumbprint(jwk)
    pem = out.read_bytes()
    key = load_pem_private_key(pem, password=None)
    assert isinstance(key, Ed25519PrivateKey)
    x = base64.urlsafe_b64encode(key.public_key().public_bytes_raw()).rstrip(b"=").decode()
    assert jwk["x"] == x
    public = cli({}, "keys", "public", "--key-file", str(out))
    assert json.loads(public.stdout) == jwk
    again = cli({}, "keys", "generate", "--out", str(out))
    assert again.returncode != 0  # a key is never overwritten
    assert out.read_bytes() == pem
