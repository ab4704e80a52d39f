"""The worker's agents acknowledge a batch (its offsets may then be committed) only once the
batch was handled: a batch cut short by a cancellation (shutdown, rebalance) stays unacked and
is consumed again, never skipped. Runs the real faust stream through faust's agent test context.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import faust

from ikd_gateway.entrypoints.worker import apply_batches

Handle = Callable[[Sequence[Any]], Awaitable[None]]


async def run_agent(handle: Handle, handled: asyncio.Event, count: int = 3) -> list[Any]:
    """Put `count` events through an agent using `apply_batches`; stop it once `handled` is set
    (stopping cancels the agent); return the events."""
    app = faust.App(f"acks-{uuid.uuid4().hex}", store="memory://")

    @app.agent()  # type: ignore[untyped-decorator]
    async def agent(stream: Any) -> None:
        await apply_batches(stream, handle, size=count, within=0.05)

    async with agent.test_context() as context:
        events = [await context.put(b"v", key=b"k", wait=False) for _ in range(count)]
        await asyncio.wait_for(handled.wait(), timeout=20)
    return events


async def test_a_batch_cancelled_while_being_applied_is_not_acknowledged() -> None:
    applying = asyncio.Event()

    async def handle(events: Sequence[Any]) -> None:
        applying.set()
        await asyncio.Event().wait()  # the transaction never finishes: cancelled here

    events = await run_agent(handle, applying)
    assert [event.message.acked for event in events] == [False, False, False]


async def test_a_handled_batch_is_acknowledged() -> None:
    handled = asyncio.Event()
    batches: list[int] = []

    async def handle(events: Sequence[Any]) -> None:
        batches.append(len(events))
        handled.set()

    events = await run_agent(handle, handled)
    await asyncio.sleep(0.1)  # the acks follow the handler's return
    assert batches == [3]
    assert [event.message.acked for event in events] == [True, True, True]
