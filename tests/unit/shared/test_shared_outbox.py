"""The outbox relay skeleton over in-memory fakes: order, single leader, crash seams, claims."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field

import pytest

from ikd_shared.outbox import ConcurrentRelay, OrderedRelay, RelayHooks


class Outage(Exception):
    pass


class Crash(Exception):
    pass


@dataclass
class FakeOutbox:
    """An outbox table with a session-level lock and LISTEN/NOTIFY."""

    rows: list[int] = field(default_factory=list)
    sent: list[int] = field(default_factory=list)
    holder: object | None = None
    listeners: list[Callable[[], None]] = field(default_factory=list)
    sessions: int = 0
    fail_connects: int = 0

    def insert(self, *rows: int, notify: bool = True) -> None:
        self.rows.extend(rows)
        if notify:
            for wake in self.listeners:
                wake()

    async def connect(self) -> FakeSession:
        if self.fail_connects:
            self.fail_connects -= 1
            raise Outage("database down")
        self.sessions += 1
        return FakeSession(self)


class FakeSession:
    def __init__(self, outbox: FakeOutbox) -> None:
        self.outbox = outbox
        self.listening: Callable[[], None] | None = None

    async def try_lock(self) -> bool:
        if self.outbox.holder in (None, self):
            self.outbox.holder = self
            return True
        return False

    async def listen(self, wake: Callable[[], None]) -> None:
        self.listening = wake
        self.outbox.listeners.append(wake)

    async def unsent(self, limit: int) -> Sequence[int]:
        return [r for r in self.outbox.rows if r not in self.outbox.sent][:limit]

    async def mark_sent(self, rows: Sequence[int]) -> None:
        self.outbox.sent.extend(rows)

    async def close(self) -> None:
        if self.outbox.holder is self:
            self.outbox.holder = None
        if self.listening in self.outbox.listeners:
            self.outbox.listeners.remove(self.listening)


@dataclass
class FakeBroker:
    published: list[int] = field(default_factory=list)
    fail_next: int = 0
    opened: int = 0
    closed: int = 0

    def publisher(self) -> contextlib.AbstractAsyncContextManager[Callable[..., object]]:
        @contextlib.asynccontextmanager
        async def open_() -> AsyncIterator[Callable[..., object]]:
            self.opened += 1
            try:
                yield self.publish
            finally:
                self.closed += 1

        return open_()

    async def publish(self, rows: Sequence[int]) -> None:
        if self.fail_next:
            self.fail_next -= 1
            raise Outage("broker down")
        self.published.extend(rows)


def ordered(
    outbox: FakeOutbox, broker: FakeBroker, *, name: str = "r", **kwargs: object
) -> OrderedRelay[int]:
    options: dict[str, object] = {
        "batch_size": 2,
        "poll_interval": 30.0,  # only wake-ups can publish in a test's time
        "standby_interval": 0.01,
        "retry_interval": 0.01,
        "retry_max": 0.02,
        **kwargs,
    }
    return OrderedRelay(outbox.connect, broker.publisher, outages=Outage, name=name, **options)  # type: ignore[arg-type]


async def until(condition: Callable[[], bool], seconds: float = 2.0) -> None:
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 (the fakes have no event to wait on)
            await asyncio.sleep(0.005)


@contextlib.asynccontextmanager
async def running(relay: OrderedRelay[int]) -> AsyncIterator[asyncio.Event]:
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        yield stop
    finally:
        stop.set()
        await task


async def test_ordered_publishes_in_position_order_then_marks_sent() -> None:
    outbox, broker = FakeOutbox(rows=[1, 2, 3, 4, 5]), FakeBroker()
    published: list[int] = []
    relay = ordered(outbox, broker, on_published=lambda n: published.append(n))
    async with running(relay):
        await until(lambda: len(outbox.sent) == 5)
    assert broker.published == outbox.sent == [1, 2, 3, 4, 5]
    assert published == [2, 2, 1]  # batches of at most batch_size
    assert relay.published == 5
    assert broker.opened == broker.closed == 1
    assert outbox.holder is None, "stopping closed the session and released the lock"


async def test_ordered_wakes_on_notify_and_in_process() -> None:
    outbox, broker = FakeOutbox(), FakeBroker()
    relay = ordered(outbox, broker)
    async with running(relay):
        await until(relay.active.is_set)
        outbox.insert(1)  # another process committed and NOTIFYed
        await until(lambda: outbox.sent == [1])
        outbox.insert(2, notify=False)
        relay.wake()  # this process committed
        await until(lambda: outbox.sent == [1, 2])


async def test_only_one_of_two_relays_is_active() -> None:
    outbox, broker = FakeOutbox(), FakeBroker()
    a, b = ordered(outbox, broker, name="a"), ordered(outbox, broker, name="b")
    async with running(a), running(b):
        await until(lambda: a.active.is_set() or b.active.is_set())
        await asyncio.sleep(0.05)  # the standby keeps trying the lock meanwhile
        assert a.active.is_set() != b.active.is_set()
        outbox.insert(1, 2, 3)
        await until(lambda: len(outbox.sent) == 3)
    assert broker.published == [1, 2, 3]
    assert sorted([a.published, b.published]) == [0, 3]


async def test_standby_takes_over_when_the_leader_stops() -> None:
    outbox, broker = FakeOutbox(rows=[1]), FakeBroker()
    leader = ordered(outbox, broker, name="leader")
    async with running(leader) as stop_leader:
        await until(leader.active.is_set)
        standby = ordered(outbox, broker, name="standby")
        async with running(standby):
            await asyncio.sleep(0.05)
            assert not standby.active.is_set()
            stop_leader.set()
            await until(standby.active.is_set)
            outbox.insert(2, notify=False)
            standby.wake()
            await until(lambda: outbox.sent == [1, 2])
    assert broker.published == [1, 2], "each row once, in order, across the hand-over"
    assert leader.published == 1
    assert standby.published == 1


@pytest.mark.parametrize("seam", ["before_publish", "after_publish"])
async def test_a_crash_at_either_seam_leaves_the_batch_unsent(seam: str) -> None:
    outbox, broker = FakeOutbox(rows=[1, 2]), FakeBroker()

    async def crash(_: Sequence[int]) -> None:
        raise Crash

    relay = ordered(outbox, broker, hooks=RelayHooks(**{seam: crash}))
    with pytest.raises(Crash):
        await relay.run(asyncio.Event())
    assert outbox.sent == []
    assert broker.published == ([] if seam == "before_publish" else [1, 2])
    assert outbox.holder is None
    assert not relay.active.is_set()

    async with running(ordered(outbox, broker)):
        await until(lambda: outbox.sent == [1, 2])
    # After a crash between ack and mark the batch goes out again (at least once).
    assert broker.published == ([1, 2] if seam == "before_publish" else [1, 2, 1, 2])


async def test_outages_are_retried_with_a_new_session() -> None:
    outbox, broker = FakeOutbox(rows=[1, 2, 3], fail_connects=2), FakeBroker(fail_next=1)
    relay = ordered(outbox, broker)
    async with running(relay):
        await until(lambda: outbox.sent == [1, 2, 3])
    assert broker.published == [1, 2, 3]
    assert outbox.sessions == 2, "the broker outage ended the first session; a new one resumed"


async def test_supervise_restarts_the_relay_after_an_unexpected_crash() -> None:
    outbox, broker = FakeOutbox(rows=[1]), FakeBroker()
    crashes = 1

    async def crash_once(_: Sequence[int]) -> None:
        nonlocal crashes
        if crashes:
            crashes -= 1
            raise Crash

    relay = ordered(outbox, broker, hooks=RelayHooks(before_publish=crash_once))
    stop = asyncio.Event()
    task = asyncio.create_task(relay.supervise(stop))
    try:
        await until(lambda: outbox.sent == [1])
    finally:
        stop.set()
        await task


@dataclass
class FakeClaimTable:
    """A table whose rows are claimed (locked) by a transaction and skipped by others."""

    rows: list[int] = field(default_factory=list)
    locked: set[int] = field(default_factory=set)
    deleted: list[int] = field(default_factory=list)

    @contextlib.asynccontextmanager
    async def claim(self, limit: int) -> AsyncIterator[Claimed]:
        mine = [r for r in self.rows if r not in self.locked][:limit]
        self.locked.update(mine)
        batch = Claimed(mine, self)
        try:
            yield batch
            if batch.marked:  # commit
                self.rows = [r for r in self.rows if r not in mine]
                self.deleted.extend(mine)
        finally:  # commit or rollback: the locks go
            self.locked.difference_update(mine)


@dataclass
class Claimed:
    rows: Sequence[int]
    table: FakeClaimTable
    marked: bool = False

    async def mark_sent(self) -> None:
        self.marked = True


async def test_concurrent_publishes_then_deletes_and_drains_full_batches() -> None:
    table, broker = FakeClaimTable(rows=list(range(7))), FakeBroker()
    relay = ConcurrentRelay(table.claim, broker.publish, batch_size=3, interval=30.0)
    await relay.drain()
    assert broker.published == table.deleted == list(range(7))
    assert relay.published == 7
    assert await relay.publish_batch() == 0


async def test_concurrent_failed_publish_leaves_rows_for_the_next_try() -> None:
    table, broker = FakeClaimTable(rows=[1, 2]), FakeBroker(fail_next=1)
    relay = ConcurrentRelay(table.claim, broker.publish, batch_size=10)
    with pytest.raises(Outage):
        await relay.publish_batch()
    assert table.rows == [1, 2]
    assert table.locked == set()
    assert await relay.publish_batch() == 2
    assert table.rows == []


async def test_two_concurrent_relays_never_publish_the_same_row() -> None:
    table = FakeClaimTable(rows=list(range(10)))
    broker = FakeBroker()
    gate = asyncio.Event()

    async def slow_publish(rows: Sequence[int]) -> None:
        await gate.wait()
        await broker.publish(rows)

    a = ConcurrentRelay(table.claim, slow_publish, batch_size=4)
    b = ConcurrentRelay(table.claim, slow_publish, batch_size=4)
    first = asyncio.create_task(a.publish_batch())
    second = asyncio.create_task(b.publish_batch())
    await asyncio.sleep(0.01)
    gate.set()
    assert sorted([await first, await second]) == [4, 4]
    assert sorted(broker.published) == list(range(8))


async def test_concurrent_run_wakes_retries_and_stops() -> None:
    table, broker = FakeClaimTable(), FakeBroker(fail_next=1)
    relay = ConcurrentRelay(table.claim, broker.publish, batch_size=10, interval=30.0)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        await asyncio.sleep(0.01)
        table.rows.extend([1, 2])
        relay.wake()
        # The publish failed; its retry waits a backoff of 15-30 s (from `interval`).
        await asyncio.sleep(0.01)
        assert broker.published == []
        assert table.rows == [1, 2]
    finally:
        stop.set()
        async with asyncio.timeout(2):
            await task  # the stop cuts the 30 s wait short

    relay = ConcurrentRelay(table.claim, broker.publish, batch_size=10, interval=0.01)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        await until(lambda: table.rows == [])
    finally:
        stop.set()
        await task
    assert broker.published == [1, 2]
