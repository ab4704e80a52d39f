"""IKD credentials: compact JWS signed by the Dukcapil issuer, carrying the NIK and profile.

`CredentialVerifier` checks everything that needs no storage: format, algorithm allow-list,
key by `kid` from the configured trust anchors (a JWKS), signature, issuer, audience, time
claims with a small skew, required claims, and that the profile agrees with the NIK.

A credential serves one purpose, once. Each relying use (`Purpose`) has its own audience, and a
credential names exactly one: one presented for a counter's verification is refused by the
consent endpoints and the citizen's trail, and the other way round. Each audience is accepted
by one service only, which records the `jti` (replay needs storage) in the same transaction as
whatever the credential causes; so no credential is accepted twice anywhere in the platform.
Issuing credentials is not here: only the development issuer (`ikd_dev.issuer`) and tests do.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import jwt
from pydantic import ValidationError

from ikd_shared.events.profile_v1 import CitizenProfile, nik_contradictions
from ikd_shared.nik import InvalidNik, parse_nik

ALLOWED_ALGORITHMS = ("EdDSA", "ES256")
REQUIRED_CLAIMS = ["iss", "aud", "exp", "iat", "nbf", "jti", "nik", "profile"]
DEFAULT_CLOCK_SKEW = dt.timedelta(seconds=60)
MAX_CREDENTIAL_BYTES = 16 * 1024


class Purpose(StrEnum):
    """What a citizen presents a credential for; each purpose has its own audience."""

    VERIFICATION = "verification"  # at a counter or the MPP's reception (identity)
    CONSENT = "consent"  # granting or revoking a consent (identity)
    TRAIL = "trail"  # reading one's own processing trail (audit)


DEFAULT_AUDIENCES: dict[Purpose, str] = {purpose: f"ikd-mpp/{purpose}" for purpose in Purpose}


class CredentialError(Exception):
    """A credential that is not accepted; `code` is the machine-readable reason."""

    def __init__(self, code: str, message: str) -> None:
        self.code = code
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class VerifiedCredential:
    jti: str
    issuer: str
    kid: str
    issued_at: dt.datetime
    expires_at: dt.datetime
    profile: CitizenProfile

    @property
    def nik(self) -> str:
        return self.profile.nik


class CredentialVerifier:
    def __init__(
        self,
        trust_anchors: dict[str, Any],
        *,
        issuer: str,
        audience: str,
        clock_skew: dt.timedelta = DEFAULT_CLOCK_SKEW,
    ) -> None:
        self._keys: dict[str, jwt.PyJWK] = {}
        for key in jwt.PyJWKSet.from_dict(trust_anchors).keys:
            if key.key_id:
                self._keys[key.key_id] = key
        self.issuer = issuer
        self.audience = audience
        self.clock_skew = clock_skew

    def verify(
        self, token: str, *, now: dt.datetime | None = None, max_age: dt.timedelta | None = None
    ) -> VerifiedCredential:
        """Verify a credential; `max_age` additionally demands a recently issued one.

        Time claims are checked against the wall clock; `now` only anchors `max_age`.
        """
        if len(token) > MAX_CREDENTIAL_BYTES:
            raise CredentialError("credential_too_large", "the credential is too large")
        if token.count(".") != 2:
            raise CredentialError("malformed_credential", "not a compact JWS")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise CredentialError("malformed_credential", "the JWS header is unreadable") from None
        algorithm = header.get("alg")
        if not isinstance(algorithm, str):
            raise CredentialError("malformed_credential", "the JWS header names no algorithm")
        if algorithm not in ALLOWED_ALGORITHMS:
            raise CredentialError("disallowed_algorithm", f"algorithm {algorithm!r} is not allowed")
        key = self._keys.get(str(header.get("kid")))
        if key is None:
            raise CredentialError("unknown_kid", "no trusted issuer key has this kid")
        if key.algorithm_name != algorithm:
            raise CredentialError("disallowed_algorithm", "the algorithm does not match the key")
        claims = self._decode(token, key, algorithm)
        audience = claims["aud"]
        # PyJWT accepts a list naming ours among others; a credential serves one purpose only.
        if isinstance(audience, list) and len(audience) != 1:
            raise CredentialError("wrong_audience", "a credential must name exactly one audience")
        issued_at = dt.datetime.fromtimestamp(claims["iat"], dt.UTC)
        current = now or dt.datetime.now(dt.UTC)
        if max_age is not None and current - issued_at > max_age + self.clock_skew:
            raise CredentialError("credential_not_fresh", f"issued more than {max_age} ago")
        return VerifiedCredential(
            jti=str(claims["jti"]),
            issuer=str(claims["iss"]),
            kid=str(header["kid"]),
            issued_at=issued_at,
            expires_at=dt.datetime.fromtimestamp(claims["exp"], dt.UTC),
            profile=_profile_from(claims),
        )

    def _decode(self, token: str, key: jwt.PyJWK, algorithm: str) -> dict[str, Any]:
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[algorithm],
                issuer=self.issuer,
                audience=self.audience,
                leeway=self.clock_skew,
                options={"require": REQUIRED_CLAIMS},
            )
        except jwt.InvalidSignatureError:
            raise CredentialError("bad_signature", "the signature does not verify") from None
        except jwt.ExpiredSignatureError:
            raise CredentialError("credential_expired", "the credential has expired") from None
        except (jwt.ImmatureSignatureError, jwt.InvalidIssuedAtError):
            raise CredentialError("credential_not_yet_valid", "not valid yet") from None
        except jwt.InvalidIssuerError:
            raise CredentialError("wrong_issuer", "issued by an untrusted issuer") from None
        except jwt.InvalidAudienceError:
            raise CredentialError("wrong_audience", "issued for another audience") from None
        except jwt.MissingRequiredClaimError as error:
            raise CredentialError("missing_claims", str(error)) from None
        except jwt.DecodeError:
            raise CredentialError("malformed_credential", "the JWS is unreadable") from None
        except jwt.InvalidTokenError as error:
            raise CredentialError("invalid_credential", str(error)) from None
        return claims


def _profile_from(claims: dict[str, Any]) -> CitizenProfile:
    nik = claims["nik"]
    if not isinstance(nik, str):
        raise CredentialError("invalid_nik", "the nik claim is not a string")
    try:
        parse_nik(nik)
    except InvalidNik as error:
        raise CredentialError(f"invalid_nik_{error.reason.value}", str(error)) from None
    raw = claims["profile"]
    if not isinstance(raw, dict):
        raise CredentialError("invalid_claims", "the profile claim is not an object")
    if raw.get("nik", nik) != nik:
        raise CredentialError("nik_mismatch", "the profile's NIK differs from the nik claim")
    try:
        birth = dt.date.fromisoformat(str(raw.get("date_of_birth")))
        problems = nik_contradictions(nik, birth, raw.get("sex"))  # type: ignore[arg-type]
    except ValueError:
        problems = []
    if problems:
        raise CredentialError("nik_mismatch", "; ".join(problems))
    try:
        return CitizenProfile.model_validate({**raw, "nik": nik})
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise CredentialError("invalid_claims", f"profile.{where}: {first['msg']}") from None
