"""CredentialVerifier without servers: each rejection code, both algorithms, freshness."""

from __future__ import annotations

import datetime as dt

import jwt
import pytest

from ikd_dev.issuer import generate_issuer_key, mint_credential, public_jwk
from ikd_dev.synthetic import citizen
from ikd_shared.credentials import DEFAULT_AUDIENCES, CredentialError, CredentialVerifier, Purpose

ED = generate_issuer_key("EdDSA")
EC = generate_issuer_key("ES256")
VERIFIER = CredentialVerifier(
    {"keys": [public_jwk(ED, "ed-1"), public_jwk(EC, "ec-1")]},
    issuer="dukcapil",
    audience=DEFAULT_AUDIENCES[Purpose.VERIFICATION],
)
PROFILE = citizen(5, 0)
NOW = dt.datetime.now(dt.UTC)


def _mint(key=ED, kid="ed-1", **kwargs) -> str:
    kwargs.setdefault("issuer", "dukcapil")
    kwargs.setdefault("purpose", Purpose.VERIFICATION)
    kwargs.setdefault("profile", PROFILE)
    return mint_credential(key, kid=kid, **kwargs)


@pytest.mark.parametrize(("key", "kid"), [(ED, "ed-1"), (EC, "ec-1")])
def test_both_algorithms_verify(key, kid) -> None:
    verified = VERIFIER.verify(_mint(key, kid))
    assert verified.profile == PROFILE
    assert verified.kid == kid


def _code(token: str, **kwargs) -> str:
    with pytest.raises(CredentialError) as error:
        VERIFIER.verify(token, **kwargs)
    return error.value.code


def test_rejections_have_codes() -> None:
    assert _code("abc") == "malformed_credential"
    assert _code(_mint(kid="nope")) == "unknown_kid"
    assert _code(_mint(EC, "ed-1")) == "disallowed_algorithm"  # an ES256 JWS under an Ed key
    assert _code(_mint(generate_issuer_key("EdDSA"))) == "bad_signature"
    assert _code(_mint(issuer="other")) == "wrong_issuer"
    assert _code(_mint(audience="other")) == "wrong_audience"
    assert _code(_mint(issued_at=NOW - dt.timedelta(hours=1))) == "credential_expired"
    assert _code(_mint(issued_at=NOW + dt.timedelta(hours=1))) == "credential_not_yet_valid"
    assert _code(_mint(extra_claims={"nik": "1234"})) == "invalid_nik_length"
    assert _code(_mint(extra_claims={"nik": citizen(5, 1).nik})) == "nik_mismatch"
    assert _code("x" * 20_000) == "credential_too_large"
    hs = jwt.encode(
        {"a": 1}, "secret-secret-secret-secret-32by", algorithm="HS256", headers={"kid": "ed-1"}
    )
    assert _code(hs) == "disallowed_algorithm"


@pytest.mark.parametrize("purpose", [Purpose.CONSENT, Purpose.TRAIL])
def test_a_credential_for_another_purpose_is_refused(purpose) -> None:
    assert _code(_mint(purpose=purpose)) == "wrong_audience"


def test_a_credential_naming_several_audiences_serves_none() -> None:
    both = [DEFAULT_AUDIENCES[Purpose.VERIFICATION], DEFAULT_AUDIENCES[Purpose.TRAIL]]
    assert _code(_mint(audience=both)) == "wrong_audience"
    # One audience in a list is still one purpose.
    VERIFIER.verify(_mint(audience=[DEFAULT_AUDIENCES[Purpose.VERIFICATION]]))


def test_every_purpose_has_its_own_audience() -> None:
    assert len(set(DEFAULT_AUDIENCES.values())) == len(Purpose)


def test_clock_skew_tolerates_small_drift() -> None:
    # The wall clock, not NOW: a long run may reach this test after a default lifetime.
    VERIFIER.verify(_mint(issued_at=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=20)))


def test_fresh_credential_demanded_by_max_age() -> None:
    # A long lifetime keeps the credential unexpired however late in the run this test executes.
    token = _mint(issued_at=NOW - dt.timedelta(minutes=8), lifetime=dt.timedelta(hours=1))
    VERIFIER.verify(token)
    assert _code(token, max_age=dt.timedelta(minutes=5)) == "credential_not_fresh"
