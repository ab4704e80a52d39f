"""Group commit of verifications: shared transactions, each answered after its own commit."""

from __future__ import annotations

import asyncio
import dataclasses
from types import TracebackType

import pytest

from ikd_dev.issuer import mint_credential
from ikd_dev.synthetic import citizen
from ikd_identity.domain import commands
from ikd_identity.domain.errors import CitizenInactive, CredentialRejected
from ikd_identity.service_layer import handlers
from ikd_shared.credentials import Purpose
from ikd_shared.events.profile_v1 import ProfileVerified
from ikd_shared.group_commit import GroupCommit
from tests.support.identity_fakes import FakeState, FakeUnitOfWork

COUNTER = "bpjs-kesehatan"


def _mint(key, profile) -> str:
    return mint_credential(
        key, kid="k1", issuer="dukcapil", purpose=Purpose.VERIFICATION, profile=profile
    )


def _grouped(deps: handlers.Deps, **kwargs) -> handlers.Deps:
    group: GroupCommit[handlers.PreparedVerification, handlers.ProfileResult] = GroupCommit(
        lambda items: handlers.verify_batch(items, deps),
        key=lambda item: item.pseudonym,
        **kwargs,
    )
    return dataclasses.replace(deps, verifications=group)


class CommitFails(FakeUnitOfWork):
    """The block runs, then the commit fails: nothing of it is stored."""

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            raise ConnectionError("the commit failed")


async def test_concurrent_verifications_share_commits(deps, state, issuer_key) -> None:
    grouped = _grouped(deps, max_in_flight=1)
    credentials = [_mint(issuer_key, citizen(3, n)) for n in range(20)]
    results = await asyncio.gather(
        *(
            handlers.verify_credential(commands.VerifyCredential(c, COUNTER), grouped)
            for c in credentials
        )
    )
    assert [(r.version, r.changed) for r in results] == [(1, True)] * 20
    assert len(state.profiles) == len(state.outbox) == 20
    # the first goes alone, the other 19 gathered meanwhile and commit together
    assert state.commits == 2
    events = [ProfileVerified.model_validate_json(m.payload or b"") for m in state.outbox]
    assert {e.pseudonym for e in events} == {r.pseudonym for r in results}
    assert all(len(e.relationships) == 1 for e in events)


async def test_a_failed_commit_answers_none_as_verified(deps, state, issuer_key) -> None:
    failing = dataclasses.replace(deps, uow=lambda: CommitFails(state))
    grouped = _grouped(failing, max_in_flight=1)
    credentials = [_mint(issuer_key, citizen(4, n)) for n in range(8)]
    outcomes = await asyncio.gather(
        *(
            handlers.verify_credential(commands.VerifyCredential(c, COUNTER), grouped)
            for c in credentials
        ),
        return_exceptions=True,
    )
    assert all(isinstance(o, ConnectionError) for o in outcomes), outcomes
    assert (state.profiles, state.outbox, state.jtis, state.commits) == ({}, [], set(), 0)
    # none was spent: the same credentials verify once the database works again
    results = await asyncio.gather(
        *(
            handlers.verify_credential(commands.VerifyCredential(c, COUNTER), _grouped(deps))
            for c in credentials
        )
    )
    assert len(results) == len(state.outbox) == 8


async def test_a_rejected_verification_does_not_fail_its_group(
    deps, state: FakeState, issuer_key, clock
) -> None:
    dead, alive = citizen(5, 0), citizen(5, 1)
    used = _mint(issuer_key, citizen(5, 2))
    await handlers.verify_credential(commands.VerifyCredential(used, COUNTER), deps)
    await handlers.verify_credential(
        commands.VerifyCredential(_mint(issuer_key, dead), COUNTER), deps
    )
    await handlers.record_death(commands.RecordDeath(dead.nik, clock.now.date()), deps)
    dead_credential = _mint(issuer_key, dead)
    batch = [
        handlers.prepare_verification(commands.VerifyCredential(c, COUNTER), deps)
        for c in (used, dead_credential, _mint(issuer_key, alive))
    ]
    commits = state.commits
    replayed, inactive, verified = await handlers.verify_batch(batch, deps)
    assert isinstance(replayed, CredentialRejected)
    assert replayed.code == "credential_replayed"
    assert isinstance(inactive, CitizenInactive)
    assert isinstance(verified, handlers.ProfileResult)
    assert verified.version == 1
    assert state.commits == commits + 1
    # the refused credential was not spent
    assert batch[1].credential.jti not in state.jtis


async def test_a_group_of_rejections_commits_nothing(deps, state, issuer_key) -> None:
    used = _mint(issuer_key, citizen(6, 0))
    await handlers.verify_credential(commands.VerifyCredential(used, COUNTER), deps)
    commits = state.commits
    (outcome,) = await handlers.verify_batch(
        [handlers.prepare_verification(commands.VerifyCredential(used, COUNTER), deps)], deps
    )
    assert isinstance(outcome, CredentialRejected)
    assert state.commits == commits


async def test_the_same_citizen_never_shares_a_group(deps, state, issuer_key) -> None:
    profile = citizen(7, 0)
    grouped = _grouped(deps, max_in_flight=1)
    results = await asyncio.gather(
        *(
            handlers.verify_credential(
                commands.VerifyCredential(_mint(issuer_key, profile), COUNTER), grouped
            )
            for _ in range(3)
        )
    )
    assert sorted(r.version for r in results) == [1, 2, 3]
    with pytest.raises(ValueError, match="once"):
        await handlers.verify_batch(
            [
                handlers.prepare_verification(
                    commands.VerifyCredential(_mint(issuer_key, profile), COUNTER), deps
                )
                for _ in range(2)
            ],
            deps,
        )
