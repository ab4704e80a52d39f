"""The token cache answers as TokenVerifier does, without verifying an accepted token again."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ikd_shared.auth import AuthError, Principal, TokenIssuer, TokenVerifier
from ikd_shared.token_cache import CachedTokenVerifier

AUDIENCE = "ikd-gateway"


class CountingVerifier(TokenVerifier):
    calls = 0

    def verify(self, token: str) -> Principal:
        self.calls += 1
        return super().verify(token)


@pytest.fixture
def issuer() -> TokenIssuer:
    return TokenIssuer(
        Ed25519PrivateKey.generate(), kid="k1", issuer="ikd-identity", ttl=dt.timedelta(minutes=5)
    )


def _cache(issuer: TokenIssuer, **kwargs: object) -> tuple[CachedTokenVerifier, CountingVerifier]:
    verifier = CountingVerifier(issuer.jwks(), issuer="ikd-identity", audience=AUDIENCE)
    return CachedTokenVerifier(verifier, **kwargs), verifier  # type: ignore[arg-type]


def test_an_accepted_token_is_verified_once(issuer: TokenIssuer) -> None:
    cache, verifier = _cache(issuer)
    token = issuer.issue("backend", {"gateway:prefill"}, [AUDIENCE], agency="polres-cirebon")
    first = cache.verify(token)
    assert cache.verify(token) == first
    assert first.agency == "polres-cirebon"
    assert verifier.calls == 1


def test_an_expired_token_is_verified_again_and_refused(issuer: TokenIssuer) -> None:
    now = [dt.datetime.now(dt.UTC).timestamp()]
    cache, verifier = _cache(issuer, clock=lambda: now[0])
    issued = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=4)
    token = issuer.issue("backend", {"gateway:prefill"}, [AUDIENCE], now=issued)
    cache.verify(token)
    now[0] = (issued + issuer.ttl).timestamp()  # exp reached: the cache no longer answers
    cache.verify(token)  # the verifier still accepts it within its clock-skew leeway
    assert verifier.calls == 2


def test_refused_tokens_are_not_remembered(issuer: TokenIssuer) -> None:
    cache, verifier = _cache(issuer)
    token = issuer.issue("backend", {"gateway:prefill"}, ["another-audience"])
    for _ in range(2):
        with pytest.raises(AuthError) as refused:
            cache.verify(token)
        assert refused.value.code == "invalid_token"
    assert verifier.calls == 2


def test_the_cache_stays_bounded(issuer: TokenIssuer) -> None:
    cache, verifier = _cache(issuer, max_entries=3)
    tokens = [issuer.issue(f"client-{i}", set(), [AUDIENCE]) for i in range(5)]
    for token in tokens:
        cache.verify(token)
    assert len(cache._accepted) <= 3
    cache.verify(tokens[0])  # evicted (the oldest): verified again
    assert verifier.calls == 6
