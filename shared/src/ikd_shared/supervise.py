"""Supervised loops: retry a call, or keep a loop running, with exponential backoff and jitter.

The policy is tenacity's: the delay doubles from `initial` up to `maximum`, half of it fixed
and half random (so processes that failed together do not retry together), and starts again
from `initial` after a success. Every failure is logged once with the delay before the retry.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_exponential,
    wait_random_exponential,
)
from tenacity.wait import wait_base

T = TypeVar("T")
Errors = type[BaseException] | tuple[type[BaseException], ...]

log = logging.getLogger(__name__)


def backoff(initial: float, maximum: float) -> wait_base:
    """Equal jitter: a delay d = min(initial * 2**(n-1), maximum) is waited as d/2 + U(0, d/2)."""
    half, cap = initial / 2, maximum / 2
    return wait_exponential(multiplier=half, max=cap) + wait_random_exponential(
        multiplier=half, max=cap
    )


async def sleep_unless(stop: asyncio.Event | None, seconds: float) -> bool:
    """Sleep up to `seconds`; True if `stop` was set meanwhile (it cuts the sleep short)."""
    if stop is None:
        await asyncio.sleep(seconds)
        return False
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    return stop.is_set()


def _retrying(
    what: str,
    retry_on: Errors,
    *,
    initial: float,
    maximum: float,
    stop: asyncio.Event | None,
    logger: logging.Logger,
    trace: bool,
) -> AsyncRetrying:
    def before_sleep(state: RetryCallState) -> None:
        error = state.outcome.exception() if state.outcome is not None else None
        logger.warning(
            "%s failed; retrying in %.1fs",
            what,
            state.upcoming_sleep,
            extra={"fields": {"error": repr(error), "attempt": state.attempt_number}},
            exc_info=error if trace else None,
        )

    async def sleep(seconds: float) -> None:
        await sleep_unless(stop, seconds)

    return AsyncRetrying(
        retry=retry_if_exception_type(retry_on),
        wait=backoff(initial, maximum),
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )


async def retry(
    call: Callable[[], Awaitable[T]],
    *,
    what: str,
    retry_on: Errors = Exception,
    initial: float = 0.2,
    maximum: float = 10.0,
    logger: logging.Logger = log,
) -> T:
    """Await `call()` until it returns; failures in `retry_on` are logged and retried.

    Any other exception (and cancellation) propagates at once.
    """
    async for attempt in _retrying(
        what,
        retry_on,
        initial=initial,
        maximum=maximum,
        stop=None,
        logger=logger,
        trace=False,
    ):
        with attempt:
            return await call()
    raise AssertionError("unreachable: tenacity re-raises the last failure")


async def supervise(
    body: Callable[[], Awaitable[object]],
    *,
    name: str,
    stop: asyncio.Event,
    retry_on: Errors = Exception,
    initial: float = 0.2,
    maximum: float = 10.0,
    healthy_after: float | None = None,
    trace: bool = False,
    logger: logging.Logger = log,
) -> None:
    """Run `body` again and again until `stop` is set.

    A failure in `retry_on` is logged (`trace`: with its traceback) and followed by a backoff
    wait that `stop` cuts short; any other exception propagates. The backoff starts again
    from `initial` after `body` returns, or when it failed only after running well for
    `healthy_after` seconds (default `maximum`): a long-lived session that dies after hours is
    retried at once, not after the delay of an outage long ago. A failure while `stop` is set
    ends the loop quietly: it is shutting down.
    """
    healthy = maximum if healthy_after is None else healthy_after
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        try:
            async for attempt in _retrying(
                name,
                retry_on,
                initial=initial,
                maximum=maximum,
                stop=stop,
                logger=logger,
                trace=trace,
            ):
                with attempt:
                    if stop.is_set():
                        return
                    started = loop.time()
                    try:
                        await body()
                    except BaseException:
                        if loop.time() - started >= healthy:
                            attempt.retry_state.attempt_number = 1
                        raise
        except Exception:
            if stop.is_set():
                return
            raise


@contextlib.asynccontextmanager
async def in_background(
    work: Callable[[asyncio.Event], Coroutine[Any, Any, None]], *, name: str
) -> AsyncIterator[asyncio.Event]:
    """Run `work(stop)` as a task during the block; on exit set `stop` and await the task."""
    stop = asyncio.Event()
    task = asyncio.create_task(work(stop), name=name)
    try:
        yield stop
    finally:
        stop.set()
        await task
