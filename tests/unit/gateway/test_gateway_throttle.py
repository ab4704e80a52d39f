"""The throttle of clients the gateway keeps denying: its rules over random histories, replicas
sharing one store, and the API's 429 (fakes; the database version is in the integration tier)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
from hypothesis import given, settings
from hypothesis import strategies as st

from ikd_gateway.domain.throttle import DenialCounter, ThrottleRules
from ikd_gateway.service_layer.throttle import ClientThrottle
from ikd_shared.events.access_v1 import Outcome
from tests.support.gateway_factories import Tokens, profile, pseudonym_of
from tests.support.gateway_fakes import FakeDenialCounters, Store
from tests.unit.gateway.test_gateway_prefill_api import bearer, lookup, seeded

START = dt.datetime(2026, 3, 1, 8, 0, tzinfo=dt.UTC)
MakeClient = Callable[..., Awaitable[httpx.AsyncClient]]


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += dt.timedelta(seconds=seconds)


def replicas(
    rules: ThrottleRules, count: int, recheck: float = 0.0
) -> tuple[Clock, list[ClientThrottle]]:
    """`count` API replicas over one shared store of counters."""
    clock, counters = Clock(), FakeDenialCounters()
    return clock, [
        ClientThrottle(counters, rules, clock, recheck=dt.timedelta(seconds=recheck))
        for _ in range(count)
    ]


async def test_the_limit_th_denial_blocks_for_the_block_then_a_new_window_starts() -> None:
    rules = ThrottleRules(limit=3, window=dt.timedelta(seconds=60), block=dt.timedelta(minutes=5))
    clock, (throttle,) = replicas(rules, 1)
    for _ in range(2):
        await throttle.denied("c")
    clock.advance(61)  # the window passed: its two denials no longer count
    for _ in range(2):
        assert await throttle.refusal("c") is None
        await throttle.denied("c")
    assert await throttle.refusal("c") is None
    await throttle.denied("c")
    first = await throttle.refusal("c")
    assert first is not None
    assert (first.first, first.retry_after(clock.now)) == (True, 300)
    assert await throttle.refusal("other") is None  # per client
    clock.advance(299.5)
    later = await throttle.refusal("c")
    assert later is not None
    assert (later.first, later.retry_after(clock.now)) == (False, 1)
    clock.advance(0.5)
    assert await throttle.refusal("c") is None
    for _ in range(2):
        await throttle.denied("c")
    assert await throttle.refusal("c") is None


async def test_replicas_share_the_block_and_audit_its_first_refusal_once() -> None:
    rules = ThrottleRules(limit=2, window=dt.timedelta(seconds=60), block=dt.timedelta(seconds=60))
    _, (a, b) = replicas(rules, 2, recheck=1.0)
    assert await b.refusal("c") is None  # b now trusts this for a second
    await a.denied("c")
    await b.denied("c")  # the second denial, counted by b: b knows at once
    on_b = await b.refusal("c")
    assert on_b is not None
    assert on_b.first
    on_a = await a.refusal("c")  # a had not looked yet: it reads the shared counter
    assert on_a is not None
    assert not on_a.first


async def test_a_replica_trusts_a_clear_answer_for_the_recheck_time_only() -> None:
    rules = ThrottleRules(limit=1, window=dt.timedelta(seconds=60), block=dt.timedelta(seconds=60))
    clock, (a, b) = replicas(rules, 2, recheck=1.0)
    assert await a.refusal("c") is None
    await b.denied("c")
    assert await a.refusal("c") is None  # within a's second: not yet
    clock.advance(1)
    refusal = await a.refusal("c")
    assert refusal is not None
    assert refusal.first


@dataclass
class History:
    denials: list[dt.datetime] = field(default_factory=list)
    blocks: list[tuple[int, dt.datetime, dt.datetime]] = field(default_factory=list)
    """(step, start, until), read from the shared store after each denial"""
    refusals: list[tuple[int, dt.datetime, dt.datetime, bool]] = field(default_factory=list)
    """(step, when, blocked until, first)"""
    passed: list[tuple[int, dt.datetime]] = field(default_factory=list)


@settings(max_examples=300, deadline=None)
@given(
    limit=st.integers(1, 5),
    window=st.integers(5, 90),
    block=st.integers(5, 200),
    steps=st.lists(
        st.tuples(st.sampled_from(["deny", "ask"]), st.integers(0, 2), st.integers(0, 40)),
        max_size=80,
    ),
)
def test_throttle_properties_over_random_histories(
    limit: int, window: int, block: int, steps: list[tuple[str, int, int]]
) -> None:
    """Whatever the order of requests over three replicas, checked against the definition
    rather than the algorithm:
    - a block starts only at a denial that is at least the `limit`-th within `window` since
      the last block, and lasts exactly `block`;
    - every request during a block is refused, every refusal falls in one, and each block's
      refusals are audited once: its first;
    - a client is not left unthrottled: no `window` holds more than 2·(limit - 1) denials
      without a block (fixed windows: one window's end and the next one's start).
    """
    rules = ThrottleRules(
        limit=limit, window=dt.timedelta(seconds=window), block=dt.timedelta(seconds=block)
    )
    history = asyncio.run(_replay(rules, steps))
    span = dt.timedelta(seconds=window)

    def counted(until: dt.datetime, since: dt.datetime | None) -> list[dt.datetime]:
        """The denials in the window up to `until`, after the block started at `since`."""
        return [
            t for t in history.denials if until - span < t <= until and (since is None or t > since)
        ]

    starts: list[dt.datetime] = []
    for step, started, until in history.blocks:
        assert until - started == rules.block
        assert len(counted(started, starts[-1] if starts else None)) >= limit
        starts.append(started)
        ends_at = next((s for s, _, _ in history.blocks if s > step), len(steps))
        refused = [(s, w, first) for s, w, u, first in history.refusals if u == until]
        if refused:
            assert [first for *_, first in refused] == [True] + [False] * (len(refused) - 1)
        assert all(step < s < ends_at and started <= w < until for s, w, _ in refused)
        assert not [s for s, w in history.passed if step < s and started <= w < until]
    assert {u for _, _, u, _ in history.refusals} <= {u for *_, u in history.blocks}
    for t in history.denials:
        if t in starts:
            continue
        since = max((s for s in starts if s <= t), default=None)
        assert len(counted(t, since)) <= 2 * (limit - 1)


async def _replay(rules: ThrottleRules, steps: list[tuple[str, int, int]]) -> History:
    clock, throttles = replicas(rules, 3)
    counters = throttles[0].counters
    assert isinstance(counters, FakeDenialCounters)
    history = History()
    for step, (kind, replica, seconds) in enumerate(steps):
        clock.advance(seconds)
        refusal = await throttles[replica].refusal("c")
        if refusal is not None:
            history.refusals.append((step, clock.now, refusal.until, refusal.first))
            continue
        history.passed.append((step, clock.now))
        if kind == "deny":
            before = counters.counters.get("c")
            await throttles[replica].denied("c")
            history.denials.append(clock.now)
            after = counters.counters["c"].blocked_until
            if after is not None and (before is None or before.blocked_until != after):
                history.blocks.append((step, clock.now, after))
    return history


async def test_the_api_answers_429_after_the_limit_and_audits_only_the_first(
    make_client: MakeClient, tokens: Tokens
) -> None:
    agency = "polres-cirebon"
    store: Store = await seeded(agency, 41)
    client = await make_client(agency, store, denial_limit=3, denial_block_seconds=120)
    citizen = profile(41)
    good = bearer(tokens.for_agency(agency))
    # Unauthenticated requests count for nothing: no audit, no throttle.
    for _ in range(10):
        response = await lookup(client, "skck", citizen.nik, {})
        assert response.status_code == 401
    assert (await lookup(client, "skck", citizen.nik, good)).status_code == 200
    denied = [
        await client.get("/v1/prefill/skck", params={"pseudonym": "0" * 64}, headers=good),
        await lookup(client, "skck", "12345", good),
        # the same client with a token lacking the scope: refused, audited and counted too
        await lookup(
            client, "skck", citizen.nik, bearer(tokens.for_agency(agency, {"gateway:webhooks"}))
        ),
    ]
    assert [r.status_code for r in denied] == [404, 400, 403]
    throttled = [await lookup(client, "skck", citizen.nik, good) for _ in range(3)]
    throttled.append(
        await client.get(
            "/v1/prefill/skck", params={"pseudonym": pseudonym_of(citizen)}, headers=good
        )
    )
    for response in throttled:
        assert (response.status_code, response.json()["code"]) == (429, "too_many_denials")
        assert response.headers["retry-after"] == "120"
        assert response.json()["retry_after"] == 120
    # Another client of the agency is not affected.
    other = bearer(
        tokens.issuer.issue("backend-2", {"gateway:prefill"}, ["ikd-gateway"], agency=agency)
    )
    assert (await lookup(client, "skck", citizen.nik, other)).status_code == 200
    assert [(e.outcome, e.reason) for e in store.outbox] == [
        (Outcome.SERVED, None),
        (Outcome.DENIED, "citizen_not_found"),
        (Outcome.DENIED, "invalid_nik_length"),
        (Outcome.DENIED, "insufficient_scope"),
        (Outcome.DENIED, "too_many_denials"),
        (Outcome.SERVED, None),
    ]


async def test_concurrent_requests_after_the_recheck_time_share_one_read() -> None:
    clock, counters = Clock(), FakeDenialCounters()
    reads = 0
    release = asyncio.Event()
    get = counters.get

    async def slow_get(client_id: str) -> DenialCounter | None:
        nonlocal reads
        reads += 1
        await release.wait()
        return await get(client_id)

    counters.get = slow_get  # type: ignore[method-assign]
    throttle = ClientThrottle(
        counters,
        ThrottleRules(limit=2, window=dt.timedelta(seconds=60), block=dt.timedelta(seconds=60)),
        clock,
    )
    asking = [asyncio.create_task(throttle.refusal("c")) for _ in range(20)]
    await asyncio.sleep(0)
    release.set()
    assert await asyncio.gather(*asking) == [None] * 20
    assert reads == 1
    # Blocked meanwhile: one read again, and only one of the requests audits the refusal.
    for _ in range(2):
        await throttle.denied("c")
    clock.advance(2)
    release.clear()
    asking = [asyncio.create_task(throttle.refusal("c")) for _ in range(5)]
    await asyncio.sleep(0)
    release.set()
    refusals = await asyncio.gather(*asking)
    assert all(r is not None for r in refusals)
    assert sum(r.first for r in refusals if r is not None) == 1
