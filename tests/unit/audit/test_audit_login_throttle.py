"""Console sign-in throttling: lockouts per id and per address, growth, reset on success."""

from __future__ import annotations

import datetime as dt

import pytest

from ikd_audit.domain.throttle import Limit, LoginLocked, LoginThrottle

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


def throttle(clock: Clock, per_id: int = 3, per_address: int = 10) -> LoginThrottle:
    window = dt.timedelta(minutes=15)
    return LoginThrottle(
        per_id=Limit(per_id, window),
        per_address=Limit(per_address, window),
        lockout=dt.timedelta(seconds=60),
        max_lockout=dt.timedelta(seconds=600),
        clock=clock,
    )


def fail(t: LoginThrottle, client_id: str, address: str = "10.0.0.1", times: int = 1) -> None:
    for _ in range(times):
        t.begin(client_id, address)  # never `succeeded`: a wrong secret


def test_locks_an_id_after_n_failures_for_a_growing_period() -> None:
    clock = Clock()
    t = throttle(clock)
    fail(t, "alice", times=3)
    with pytest.raises(LoginLocked) as locked:
        t.begin("alice", "10.0.0.1")
    assert locked.value.retry_after_seconds == 60
    t.begin("bob", "10.0.0.1")  # another id from the same address is not locked
    clock.advance(61)
    fail(t, "alice", times=3)
    with pytest.raises(LoginLocked) as locked:
        t.begin("alice", "10.0.0.2")  # the id stays locked from any address
    assert locked.value.retry_after_seconds == 120
    clock.advance(121)
    fail(t, "alice", times=3)
    clock.advance(200)
    with pytest.raises(LoginLocked) as locked:
        t.begin("alice", "10.0.0.1")
    assert locked.value.retry_after_seconds == 40  # 240 s lockout, 200 s gone


def test_a_locked_id_is_refused_even_with_the_right_secret_until_the_lockout_passes() -> None:
    clock = Clock()
    t = throttle(clock)
    fail(t, "alice", times=3)
    clock.advance(59)
    with pytest.raises(LoginLocked):
        t.begin("alice", "10.0.0.1")
    clock.advance(2)
    t.succeeded(t.begin("alice", "10.0.0.1"))


def test_success_resets_the_id() -> None:
    clock = Clock()
    t = throttle(clock)
    fail(t, "alice", times=2)
    t.succeeded(t.begin("alice", "10.0.0.1"))
    fail(t, "alice", times=2)
    t.begin("alice", "10.0.0.1")  # two failures since the success: not locked yet
    with pytest.raises(LoginLocked):
        t.begin("alice", "10.0.0.1")


def test_success_after_an_expired_lockout_restarts_the_growth() -> None:
    clock = Clock()
    t = throttle(clock)
    fail(t, "alice", times=3)
    clock.advance(61)
    t.succeeded(t.begin("alice", "10.0.0.1"))
    fail(t, "alice", times=3)
    with pytest.raises(LoginLocked) as locked:
        t.begin("alice", "10.0.0.1")
    assert locked.value.retry_after_seconds == 60


def test_failures_outside_the_window_do_not_add_up() -> None:
    clock = Clock()
    t = throttle(clock)
    fail(t, "alice", times=2)
    clock.advance(16 * 60)
    fail(t, "alice", times=2)
    t.begin("alice", "10.0.0.1")


def test_locks_an_address_spraying_many_ids_without_telling_ids_apart() -> None:
    clock = Clock()
    t = throttle(clock, per_id=3, per_address=5)
    for i in range(5):
        fail(t, f"id-{i}", "10.9.9.9")
    with pytest.raises(LoginLocked):
        t.begin("someone-else", "10.9.9.9")
    t.begin("someone-else", "10.0.0.1")


def test_a_success_that_reaches_the_address_limit_does_not_lock_the_address() -> None:
    clock = Clock()
    t = throttle(clock, per_id=10, per_address=3)
    fail(t, "alice", "10.9.9.9", times=2)
    t.succeeded(t.begin("alice", "10.9.9.9"))
    t.begin("bob", "10.9.9.9")
    with pytest.raises(LoginLocked):
        t.begin("carol", "10.9.9.9")


def test_the_lockout_is_capped() -> None:
    clock = Clock()
    t = throttle(clock, per_address=1000)
    for _ in range(8):
        fail(t, "alice", times=3)
        with pytest.raises(LoginLocked) as locked:
            t.begin("alice", "10.0.0.1")
        assert locked.value.retry_after_seconds <= 600
        clock.advance(locked.value.retry_after_seconds)
    assert locked.value.retry_after_seconds == 600
