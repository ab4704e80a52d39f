"""The supervised-loop helper: retries with growing, jittered delays; resets; stops; logs."""

from __future__ import annotations

import asyncio
import logging

import pytest
from tenacity import RetryCallState

from ikd_shared import supervise
from ikd_shared.supervise import backoff, in_background, retry


class Outage(Exception):
    pass


def _delay(policy: object, attempt: int) -> float:
    state = RetryCallState(retry_object=None, fn=None, args=(), kwargs={})  # type: ignore[arg-type]
    state.attempt_number = attempt
    return policy(state)  # type: ignore[operator,no-any-return]


def test_backoff_doubles_to_the_cap_with_equal_jitter() -> None:
    policy = backoff(0.2, 10.0)
    for attempt, full in [(1, 0.2), (2, 0.4), (3, 0.8), (6, 6.4), (7, 10.0), (30, 10.0)]:
        delays = [_delay(policy, attempt) for _ in range(200)]
        assert all(full / 2 <= d <= full + 1e-9 for d in delays), (attempt, min(delays))
        assert len(set(delays)) > 1, "jittered"


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the backoff waits instead of sleeping them."""
    waited: list[float] = []

    async def no_sleep(stop: asyncio.Event | None, seconds: float) -> bool:
        waited.append(seconds)
        await asyncio.sleep(0)
        return stop is not None and stop.is_set()

    monkeypatch.setattr(supervise, "sleep_unless", no_sleep)
    return waited


async def test_retry_returns_after_transient_failures(
    sleeps: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 4:
            raise Outage(f"down {calls}")
        return "done"

    with caplog.at_level(logging.WARNING, logger="ikd_shared.supervise"):
        assert await retry(flaky, what="recording", retry_on=Outage, initial=1, maximum=8) == "done"
    assert calls == 4
    assert len(sleeps) == 3
    assert [0.5 <= sleeps[0] <= 1, 1 <= sleeps[1] <= 2, 2 <= sleeps[2] <= 4] == [True] * 3
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 3
    assert all(m.startswith("recording failed; retrying in ") for m in messages)


async def test_retry_lets_other_errors_through_at_once(sleeps: list[float]) -> None:
    async def broken() -> None:
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        await retry(broken, what="x", retry_on=Outage)
    assert sleeps == []


async def test_supervise_resets_the_backoff_after_a_success(sleeps: list[float]) -> None:
    stop = asyncio.Event()
    script = iter(["fail", "fail", "fail", "ok", "fail", "stop"])

    async def body() -> None:
        step = next(script)
        if step == "fail":
            raise Outage
        if step == "stop":
            stop.set()

    await supervise.supervise(body, name="loop", stop=stop, initial=1, maximum=100)
    assert [0.5 <= sleeps[0] <= 1, 1 <= sleeps[1] <= 2, 2 <= sleeps[2] <= 4] == [True] * 3
    assert 0.5 <= sleeps[3] <= 1, "the failure after a success waits the initial delay again"
    assert len(sleeps) == 4


async def test_supervise_resets_after_a_long_healthy_run(
    sleeps: list[float], monkeypatch: pytest.MonkeyPatch
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    now = [0.0]
    monkeypatch.setattr(loop, "time", lambda: now[0])
    script = iter([0.0, 0.0, 0.0, 50.0, None])  # seconds each run lasts before failing

    async def session() -> None:
        lasted = next(script)
        if lasted is None:
            stop.set()
            return
        now[0] += lasted
        raise Outage

    await supervise.supervise(
        session, name="session", stop=stop, initial=1, maximum=100, healthy_after=30
    )
    assert 2 <= sleeps[2] <= 4
    assert 0.5 <= sleeps[3] <= 1, "a session that ran 50 s before failing restarts quickly"


async def test_supervise_propagates_unexpected_errors(sleeps: list[float]) -> None:
    async def body() -> None:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        await supervise.supervise(body, name="loop", stop=asyncio.Event(), retry_on=Outage)


async def test_supervise_ends_quietly_when_stopped_during_a_failure(sleeps: list[float]) -> None:
    stop = asyncio.Event()
    runs = 0

    async def body() -> None:
        nonlocal runs
        runs += 1
        stop.set()
        raise KeyError("connection closed by the shutdown")

    await supervise.supervise(body, name="loop", stop=stop, retry_on=Outage)
    assert runs == 1


async def test_stop_cuts_a_real_backoff_wait_short() -> None:
    async def always_down() -> None:
        raise Outage

    async with asyncio.timeout(2):
        async with in_background(
            lambda stop: supervise.supervise(
                always_down, name="down", stop=stop, initial=60, maximum=60
            ),
            name="down",
        ):
            await asyncio.sleep(0.05)  # now inside a 30-60 s backoff wait
