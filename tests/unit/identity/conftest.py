"""Identity unit fixtures: handlers wired to in-memory fakes, a development issuer."""

from __future__ import annotations

import datetime as dt

import pytest

from ikd_dev.issuer import generate_issuer_key, public_jwk
from ikd_identity.service_layer.handlers import Deps
from ikd_shared.credentials import DEFAULT_AUDIENCES, CredentialVerifier, Purpose
from ikd_shared.policy import DEFAULT_POLICY, load_policy
from tests.support.identity_fakes import FakeState, FakeUnitOfWork


class Clock:
    def __init__(self) -> None:
        self.now = dt.datetime.now(dt.UTC)

    def __call__(self) -> dt.datetime:
        return self.now


@pytest.fixture(scope="session")
def issuer_key():
    return generate_issuer_key("EdDSA")


@pytest.fixture
def state() -> FakeState:
    return FakeState()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def deps(state: FakeState, issuer_key, clock: Clock) -> Deps:
    anchors = {"keys": [public_jwk(issuer_key, "k1")]}

    def verifier(purpose: Purpose) -> CredentialVerifier:
        return CredentialVerifier(anchors, issuer="dukcapil", audience=DEFAULT_AUDIENCES[purpose])

    return Deps(
        uow=lambda: FakeUnitOfWork(state),
        verifier=verifier(Purpose.VERIFICATION),
        consent_verifier=verifier(Purpose.CONSENT),
        pseudonym_key=b"unit-test-pseudonym-key",
        credential_max_age=dt.timedelta(minutes=5),
        policy=load_policy(DEFAULT_POLICY),
        clock=clock,
    )
