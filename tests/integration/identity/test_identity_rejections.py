"""Every rejected input: its own 4xx and code, and nothing written (no profile, outbox, jti)."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from ikd_dev.issuer import generate_issuer_key
from tests.support.identity import (
    AUDIENCE,
    COUNTER_SERVICES,
    ISSUER,
    KID,
    DevIssuer,
    counts,
    person,
)

NOTHING = {"profiles": 0, "outbox": 0, "seen_credentials": 0, "consents": 0, "relationships": 0}


def _now() -> dt.datetime:
    """Taken per credential, not at collection: a long suite must not age these out."""
    return dt.datetime.now(dt.UTC)


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(**changes: Any) -> dict[str, Any]:
    profile = person(20)
    now = _now()
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "iat": now,
        "nbf": now,
        "exp": now + dt.timedelta(minutes=10),
        "jti": "jti-1",
        "nik": profile.nik,
        "profile": profile.model_dump(mode="json"),
    }
    claims.update(changes)
    return claims


def _profile(**changes: Any) -> dict[str, Any]:
    return {**person(20).model_dump(mode="json"), **changes}


def _sign(issuer: DevIssuer, claims: dict[str, Any], **headers: Any) -> str:
    return jwt.encode(claims, issuer.key, algorithm="EdDSA", headers={"kid": KID, **headers})


def _hmac_with_public_key(issuer: DevIssuer) -> str:
    public = issuer.key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = _b64(json.dumps({"alg": "HS256", "kid": KID, "typ": "JWT"}).encode())
    body = _b64(json.dumps(_claims(iat=0, nbf=0, exp=2**40)).encode())
    import hashlib
    import hmac

    signature = hmac.new(public, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(signature)}"


def _alg_none(_: DevIssuer) -> str:
    header = _b64(json.dumps({"alg": "none", "kid": KID}).encode())
    return f"{header}.{_b64(json.dumps(_claims(iat=0, nbf=0, exp=2**40)).encode())}."


def _wrong_signature(issuer: DevIssuer) -> str:
    other = DevIssuer(generate_issuer_key("EdDSA"))  # same kid, another key
    return other.mint(person(20))


def _tampered(issuer: DevIssuer) -> str:
    header, _, signature = issuer.mint(person(20)).split(".")
    now = int(_now().timestamp())
    claims = _claims(
        iat=now,
        nbf=now,
        exp=now + 600,
        jti="tampered",
    )
    return f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"


def _without(name: str) -> Callable[[DevIssuer], str]:
    def build(issuer: DevIssuer) -> str:
        claims = _claims()
        del claims[name]
        return _sign(issuer, claims)

    return build


CredentialCase = tuple[str, Callable[[DevIssuer], str], int, str]

CASES: list[CredentialCase] = [
    ("not a JWS", lambda _: "definitely-not-a-jws", 400, "malformed_credential"),
    ("garbage segments", lambda _: "e30.e30.e30x", 400, "malformed_credential"),
    ("unreadable header", lambda _: "!!!.e30.sig", 400, "malformed_credential"),
    ("bad signature", _wrong_signature, 403, "bad_signature"),
    ("tampered claims", _tampered, 403, "bad_signature"),
    ("unknown kid", lambda i: i.mint(person(20), kid="someone-else"), 403, "unknown_kid"),
    ("alg none", _alg_none, 403, "disallowed_algorithm"),
    ("HMAC keyed with the public key", _hmac_with_public_key, 403, "disallowed_algorithm"),
    ("wrong issuer", lambda i: i.mint(person(20), issuer="https://evil.test"), 403, "wrong_issuer"),
    ("wrong audience", lambda i: i.mint(person(20), audience="another-app"), 403, "wrong_audience"),
    (
        "expired",
        lambda i: i.mint(person(20), issued_at=_now() - dt.timedelta(hours=2)),
        403,
        "credential_expired",
    ),
    (
        "not yet valid",
        lambda i: i.mint(person(20), issued_at=_now() + dt.timedelta(hours=1)),
        403,
        "credential_not_yet_valid",
    ),
    ("missing jti", _without("jti"), 400, "missing_claims"),
    ("missing profile", _without("profile"), 400, "missing_claims"),
    (
        "unknown province in NIK",
        lambda i: _sign(
            i, _claims(nik="9909081306780001", profile=_profile(nik="9909081306780001"))
        ),
        400,
        "invalid_nik_unknown_province",
    ),
    (
        "impossible date in NIK",
        lambda i: _sign(
            i, _claims(nik="3209083206780001", profile=_profile(nik="3209083206780001"))
        ),
        400,
        "invalid_nik_impossible_date",
    ),
    ("NIK of wrong length", lambda i: _sign(i, _claims(nik="320908")), 400, "invalid_nik_length"),
    (
        "birth date contradicts NIK",
        lambda i: _sign(i, _claims(profile=_profile(date_of_birth="1990-01-01"))),
        400,
        "nik_mismatch",
    ),
    (
        "sex contradicts NIK",
        lambda i: _sign(
            i, _claims(profile=_profile(sex="female" if person(20).sex.value == "male" else "male"))
        ),
        400,
        "nik_mismatch",
    ),
    (
        "profile NIK differs from nik claim",
        lambda i: _sign(i, _claims(profile=_profile(nik=person(21).nik))),
        400,
        "nik_mismatch",
    ),
    (
        "missing profile field",
        lambda i: _sign(
            i, _claims(profile={k: v for k, v in _profile().items() if k != "occupation"})
        ),
        400,
        "invalid_claims",
    ),
    (
        "oversized profile field",
        lambda i: _sign(i, _claims(profile=_profile(full_name="A" * 500))),
        400,
        "invalid_claims",
    ),
    (
        "oversized credential",
        lambda i: _sign(i, _claims(padding="x" * 20_000)),
        413,
        "credential_too_large",
    ),
]


@pytest.mark.parametrize(
    ("build", "status", "code"),
    [pytest.param(build, status, code, id=name) for name, build, status, code in CASES],
)
async def test_rejected_credential_writes_nothing(api, issuer, db, build, status, code) -> None:
    response = await api.client.post(
        "/v1/verifications",
        json={"credential": build(issuer)},
        headers=api.auth("identity:verify"),
    )
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == code
    assert await counts(db) == NOTHING


async def test_replayed_credential_is_rejected_and_writes_nothing_more(api, issuer, db) -> None:
    credential = issuer.mint(person(22))
    headers = api.auth("identity:verify")
    body = {"credential": credential, "services": COUNTER_SERVICES}
    first = await api.client.post("/v1/verifications", json=body, headers=headers)
    assert first.status_code == 200
    before = await counts(db)
    again = await api.client.post("/v1/verifications", json=body, headers=headers)
    assert again.status_code == 409
    assert again.json()["code"] == "credential_replayed"
    assert await counts(db) == before


BODY_CASES = [
    ("missing credential field", {}, 422, "invalid_request"),
    ("credential of the wrong type", {"credential": 42}, 422, "invalid_request"),
    (
        "unexpected field",
        {"credential": "a.b.c", "nik": "3209081306780001"},
        422,
        "invalid_request",
    ),
    ("body over the size limit", {"credential": "x" * (70 * 1024)}, 413, "payload_too_large"),
]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [pytest.param(body, status, code, id=name) for name, body, status, code in BODY_CASES],
)
async def test_rejected_body_writes_nothing(api, db, body, status, code) -> None:
    response = await api.client.post(
        "/v1/verifications", json=body, headers=api.auth("identity:verify")
    )
    assert response.status_code == status, response.text
    assert response.json()["code"] == code
    assert await counts(db) == NOTHING


def _auth_cases(api: Any) -> dict[str, tuple[dict[str, str], int, str]]:
    other_key = generate_issuer_key("EdDSA")
    foreign = jwt.encode({"sub": "x"}, other_key, algorithm="EdDSA", headers={"kid": "nope"})
    expired = api.token("identity:verify", now=_now() - dt.timedelta(hours=1))
    return {
        "no token": ({}, 401, "missing_token"),
        "not a JWT": ({"Authorization": "Bearer nonsense"}, 401, "malformed_token"),
        "basic scheme": ({"Authorization": "Basic dXNlcjpwYXNz"}, 401, "missing_token"),
        "unknown signing key": ({"Authorization": f"Bearer {foreign}"}, 401, "unknown_key"),
        "expired token": ({"Authorization": f"Bearer {expired}"}, 401, "token_expired"),
        "wrong scope": (api.auth("identity:feed"), 403, "insufficient_scope"),
        "no agency": (api.auth("identity:verify", agency=None), 403, "agency_required"),
        "malformed agency": (
            api.auth("identity:verify", agency="Not An Agency!"),
            403,
            "agency_required",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "no token",
        "not a JWT",
        "basic scheme",
        "unknown signing key",
        "expired token",
        "wrong scope",
        "no agency",
        "malformed agency",
    ],
)
async def test_unauthenticated_or_wrong_scope_caller_writes_nothing(api, issuer, db, case) -> None:
    headers, status, code = _auth_cases(api)[case]
    response = await api.client.post(
        "/v1/verifications", json={"credential": issuer.mint(person(23))}, headers=headers
    )
    assert response.status_code == status, response.text
    assert response.json()["code"] == code
    assert await counts(db) == NOTHING
