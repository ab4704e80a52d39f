"""`ikdctl dev-issuer`: keys and JWKS on disk, credentials identity's default verifier accepts."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from ikd_audit.config import AuditSettings
from ikd_identity.config import DEFAULT_CREDENTIAL_ISSUER, IdentitySettings
from ikd_ops.cli import app
from ikd_shared.credentials import CredentialError, CredentialVerifier
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

    verifier = _verifier(jwks, _default("verification_audience", IdentitySettings))
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


def _default(name: str, settings: type) -> str:
    return str(settings.model_fields[name].default)


def _verifier(jwks: dict, audience: str) -> CredentialVerifier:
    return CredentialVerifier(jwks, issuer=DEFAULT_CREDENTIAL_ISSUER, audience=audience)


@pytest.mark.parametrize(
    ("purpose", "audience"),
    [
        ("verification", _default("verification_audience", IdentitySettings)),
        ("consent", _default("consent_audience", IdentitySettings)),
        ("trail", _default("trail_audience", AuditSettings)),
    ],
)
def test_mint_for_each_purpose_is_accepted_by_that_use_only(tmp_path, purpose, audience) -> None:
    runner.invoke(app, ["dev-issuer", "init", "--out", str(tmp_path)])
    jwks = json.loads((tmp_path / "dukcapil-jwks.json").read_text())
    minted = runner.invoke(
        app, ["dev-issuer", "mint", "--key-dir", str(tmp_path), "--purpose", purpose]
    )
    assert minted.exit_code == 0, minted.output
    token = minted.output.strip()
    assert _verifier(jwks, audience).verify(token).nik
    others = [
        _default("verification_audience", IdentitySettings),
        _default("consent_audience", IdentitySettings),
        _default("trail_audience", AuditSettings),
    ]
    others.remove(audience)
    for other in others:
        with pytest.raises(CredentialError) as error:
            _verifier(jwks, other).verify(token)
        assert error.value.code == "wrong_audience"


def test_mint_refuses_an_invalid_nik(tmp_path) -> None:
    runner.invoke(app, ["dev-issuer", "init", "--out", str(tmp_path)])
    result = runner.invoke(
        app, ["dev-issuer", "mint", "--key-dir", str(tmp_path), "--nik", "0000000000000000"]
    )
    assert result.exit_code != 0
    assert "unknown_province" in result.output
