"""`ikdctl dev-issuer`: keys and JWKS on disk, credentials identity's default verifier accepts."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ikd_identity.config import DEFAULT_CREDENTIAL_AUDIENCE, DEFAULT_CREDENTIAL_ISSUER
from ikd_ops.cli import app
from ikd_shared.credentials import CredentialVerifier
from ikd_shared.nik import parse_nik

runner = CliRunner()


@pytest.mark.parametrize("algorithm", ["EdDSA", "ES256"])
def test_dev_issuer_init_and_mint(tmp_path, algorithm) -> None:
    result = runner.invoke(app, ["dev-issuer", "init", "--out", str(tmp_path), "--alg", algorithm])
    assert result.exit_code == 0, result.output
    jwks = json.loads((tmp_path / "dukcapil-jwks.json").read_text())
    assert jwks["keys"][0]["alg"] == algorithm
    assert "d" not in jwks["keys"][0]  # only the public half is published
    assert (tmp_path / "dukcapil-issuer.pem").stat().st_mode & 0o077 == 0

    again = runner.invoke(app, ["dev-issuer", "init", "--out", str(tmp_path)])
    assert "keeping it" in again.output
    assert json.loads((tmp_path / "dukcapil-jwks.json").read_text()) == jwks

    verifier = CredentialVerifier(
        jwks, issuer=DEFAULT_CREDENTIAL_ISSUER, audience=DEFAULT_CREDENTIAL_AUDIENCE
    )
    minted = runner.invoke(
        app, ["dev-issuer", "mint", "--key-dir", str(tmp_path), "--seed", "3", "--index", "9"]
    )
    assert minted.exit_code == 0, minted.output
    first = verifier.verify(minted.output.strip())

    nik = "3209085306780001"
    minted = runner.invoke(app, ["dev-issuer", "mint", "--key-dir", str(tmp_path), "--nik", nik])
    verified = verifier.verify(minted.output.strip())
    assert verified.nik == nik
    assert verified.profile.date_of_birth == parse_nik(nik).birth_date
    assert verified.jti != first.jti


def test_mint_refuses_an_invalid_nik(tmp_path) -> None:
    runner.invoke(app, ["dev-issuer", "init", "--out", str(tmp_path)])
    result = runner.invoke(
        app, ["dev-issuer", "mint", "--key-dir", str(tmp_path), "--nik", "0000000000000000"]
    )
    assert result.exit_code != 0
    assert "unknown_province" in result.output
