"""Group commit of prefill access events (service_layer/group_commit.py), on fakes."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence

import httpx
import pytest

from ikd_gateway.service_layer.group_commit import AccessCommitter, AccessNotRecorded, Traced
from ikd_shared import tracing
from ikd_shared.events.access_v1 import AccessRecorded, Channel, Outcome
from ikd_shared.tracing import TraceContext
from tests.support.gateway_factories import NOW, Tokens, profile
from tests.support.gateway_fakes import FakeOutbox
from tests.unit.gateway.test_gateway_prefill_api import bearer, lookup, seeded

MakeClient = Callable[..., Awaitable[httpx.AsyncClient]]


def event(n: int) -> AccessRecorded:
    return AccessRecorded(
        access_id=uuid.UUID(int=n),
        occurred_at=NOW,
        agency="polres-cirebon",
        service="skck",
        pseudonym=f"{n:064x}",
        fields=["full_name"],
        channel=Channel.PREFILL,
        outcome=Outcome.SERVED,
    )


class Batches:
    """A store that keeps every batch; `gate` holds each commit until it is set."""

    def __init__(self, *, fail_first: int = 0) -> None:
        self.batches: list[list[Traced]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.fail_first = fail_first

    async def __call__(self, events: Sequence[Traced]) -> None:
        await self.gate.wait()
        if self.fail_first > 0:
            self.fail_first -= 1
            raise ConnectionError("the database went away")
        self.batches.append(list(events))

    def ids(self) -> list[list[int]]:
        return [[e.access_id.int for e, _ in batch] for batch in self.batches]


async def test_concurrent_requests_share_one_commit() -> None:
    store = Batches()
    committer = AccessCommitter(store)
    await asyncio.gather(*(committer.commit(event(n)) for n in range(10)))
    assert store.ids() == [list(range(10))]
    assert committer.commits == 1


async def test_batches_never_exceed_max_batch() -> None:
    store = Batches()
    committer = AccessCommitter(store, max_batch=3)
    await asyncio.gather(*(committer.commit(event(n)) for n in range(7)))
    assert store.ids() == [[0, 1, 2], [3, 4, 5], [6]]


async def test_no_request_returns_before_its_commit_and_later_ones_join_the_next() -> None:
    store = Batches()
    store.gate.clear()
    committer = AccessCommitter(store)
    first = [asyncio.create_task(committer.commit(event(n))) for n in range(3)]
    await asyncio.sleep(0.01)
    # Queued while the first commit is still running: they wait for the next one.
    later = [asyncio.create_task(committer.commit(event(n))) for n in range(3, 5)]
    await asyncio.sleep(0.01)
    assert not any(task.done() for task in first + later)
    assert store.batches == []
    store.gate.set()
    await asyncio.gather(*first, *later)
    assert store.ids() == [[0, 1, 2], [3, 4]]


async def test_a_failed_commit_fails_every_request_in_it_and_the_next_commit_works() -> None:
    store = Batches(fail_first=1)
    committer = AccessCommitter(store)
    results = await asyncio.gather(
        *(committer.commit(event(n)) for n in range(4)), return_exceptions=True
    )
    assert all(isinstance(r, AccessNotRecorded) for r in results)
    assert isinstance(results[0], AccessNotRecorded)
    assert isinstance(results[0].__cause__, ConnectionError)
    assert results[0] is not results[1]  # each request raises its own error
    assert store.batches == []
    await committer.commit(event(9))
    assert store.ids() == [[9]]


async def test_a_request_cancelled_while_queued_leaves_no_event() -> None:
    store = Batches()
    store.gate.clear()
    committer = AccessCommitter(store)
    running = asyncio.create_task(committer.commit(event(0)))
    await asyncio.sleep(0.01)
    gone = asyncio.create_task(committer.commit(event(1)))
    kept = asyncio.create_task(committer.commit(event(2)))
    await asyncio.sleep(0.01)
    gone.cancel()
    store.gate.set()
    await asyncio.gather(running, kept)
    assert store.ids() == [[0], [2]]


async def test_each_event_keeps_the_trace_context_of_its_request() -> None:
    store = Batches()
    committer = AccessCommitter(store)
    traces = [TraceContext.new() for _ in range(2)]

    async def traced(n: int) -> None:
        with tracing.bound(trace_context=traces[n]):
            await committer.commit(event(n))

    await asyncio.gather(traced(0), traced(1))
    assert [trace for _, trace in store.batches[0]] == traces


async def test_prefill_is_answered_only_once_its_access_event_is_committed(
    make_client: MakeClient, tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await seeded("polres-cirebon", 7)
    client = await make_client("polres-cirebon", store)
    headers = bearer(tokens.for_agency("polres-cirebon"))

    async def refuse(self: FakeOutbox, events: Sequence[Traced]) -> None:
        raise ConnectionError("commit failed")

    with monkeypatch.context() as patched:
        patched.setattr(FakeOutbox, "add_many", refuse)
        failed = await asyncio.gather(
            *(lookup(client, "skck", profile(7).nik, headers) for _ in range(3))
        )
    assert [r.status_code for r in failed] == [503] * 3
    assert {r.json()["code"] for r in failed} == {"access_not_recorded"}
    assert all("fields" not in r.json() for r in failed)
    assert store.outbox == []

    served = await asyncio.gather(
        *(lookup(client, "skck", profile(7).nik, headers) for _ in range(3))
    )
    assert [r.status_code for r in served] == [200] * 3
    assert [e.outcome for e in store.outbox] == [Outcome.SERVED] * 3
    assert len({e.access_id for e in store.outbox}) == 3
