"""Throttling failed sign-ins, per (principal, client address) and per client address.

Used by identity's `/oauth/token` and the audit console. The state lives in the service's
PostgreSQL database (table `auth_throttle`), so every replica counts the same failures.

Why these two keys and not the principal alone: a limit on a client id from anywhere would let
anyone lock a legitimate client out by failing with its id. A pair (id, address) only slows the
address that fails; the per-address limit bounds what one address may cost in secret hashing
(argon2) whatever ids it tries. IPv6 addresses count per /64, the block one host usually gets,
so a host cannot rotate through its own addresses to reset the count.

Each key is a GCRA (generic cell rate algorithm) cell: one timestamp, the "theoretical arrival
time" `tat`. `max_failures` per `window` means one failure costs `window / max_failures`; an
attempt is allowed while `max(tat, now) + cost <= now + window`, so a burst of `max_failures` is
allowed and then one attempt per `cost`. No key needs a reset or a cleanup to be correct: a row
whose `tat` lies in the past is the same as no row (`prune` only frees space).

An attempt counts as a failure when it starts (`begin`, before the secret is hashed), so
concurrent attempts cannot slip past the limit while secrets are being hashed. A success
(`succeeded`) clears its own (principal, address) key and takes back only its own count from
the address key: failures that others made from that address still count, so a client that
signs in now and then cannot be used to reset someone else's budget. Unknown principals count
exactly like known ones, so a refusal tells nothing about which ids exist.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

Clock = Callable[[], dt.datetime]

ADDRESS = "address"
PRINCIPAL = "principal"
IPV6_PREFIX = 64
MAX_KEY_LENGTH = 128


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def address_key(host: str | None) -> str:
    """What a client address counts as: the IPv4 address, or the IPv6 /64 it lies in."""
    if not host:
        return "unknown"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host[:MAX_KEY_LENGTH]  # not an IP (a test client, a unix socket): as it is
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, IPV6_PREFIX), strict=False))
    return str(address)


@dataclass(frozen=True, slots=True)
class Limit:
    max_failures: int
    window: dt.timedelta

    def __post_init__(self) -> None:
        if self.max_failures < 1 or self.window <= dt.timedelta(0):
            raise ValueError("a limit needs at least one failure in a positive window")

    @property
    def cost(self) -> dt.timedelta:
        """How far one failure moves the key's theoretical arrival time."""
        return self.window / self.max_failures


@dataclass(frozen=True, slots=True, order=True)
class Key:
    kind: str  # ADDRESS or PRINCIPAL
    address: str
    principal: str  # "" for the address's own key


@dataclass(frozen=True, slots=True)
class Attempt:
    """An attempt counted as a failure; hand it to `succeeded` if the secret was right."""

    charges: tuple[tuple[Key, Limit], ...]


class Throttled(Exception):
    """Too many failures: refuse without checking the secret, and say when to come back."""

    def __init__(self, retry_after: dt.timedelta) -> None:
        super().__init__(f"throttled for {retry_after}")
        self.retry_after = retry_after

    @property
    def retry_after_seconds(self) -> int:
        return max(1, math.ceil(self.retry_after.total_seconds()))


class ThrottleStore(Protocol):
    async def take(
        self, charges: Sequence[tuple[Key, Limit]], now: dt.datetime
    ) -> dt.timedelta | None:
        """Charge every key one failure, all or none; None if done, else the longest wait."""
        ...

    async def forgive(
        self, refunds: Sequence[tuple[Key, Limit]], resets: Sequence[Key], now: dt.datetime
    ) -> None:
        """Undo one charge of each `refunds` key; empty each `resets` key."""
        ...


class FailureThrottle:
    """Failed sign-ins per (principal, address) and per address; state in a `ThrottleStore`."""

    def __init__(
        self,
        store: ThrottleStore,
        *,
        per_principal: Limit,
        per_address: Limit,
        clock: Clock = utc_now,
    ) -> None:
        self.store = store
        self.per_principal = per_principal
        self.per_address = per_address
        self.clock = clock

    async def begin(self, principal: str, address: str) -> Attempt:
        """Count an attempt as failed until `succeeded`; Throttled if a key has no room."""
        where = address_key(address)
        charges = (
            (Key(ADDRESS, where, ""), self.per_address),
            (Key(PRINCIPAL, where, principal[:MAX_KEY_LENGTH]), self.per_principal),
        )
        wait = await self.store.take(charges, self.clock())
        if wait is not None:
            raise Throttled(wait)
        return Attempt(charges)

    async def succeeded(self, attempt: Attempt) -> None:
        """The secret was right: clear the pair, and take this attempt off the address."""
        refunds = [(key, limit) for key, limit in attempt.charges if key.kind == ADDRESS]
        resets = [key for key, _ in attempt.charges if key.kind == PRINCIPAL]
        await self.store.forgive(refunds, resets, self.clock())


def _gcra(tat: dt.datetime | None, now: dt.datetime, limit: Limit) -> tuple[dt.datetime, bool]:
    """The key's next theoretical arrival time, and whether one more failure fits."""
    new_tat = max(tat or now, now) + limit.cost
    return new_tat, new_tat <= now + limit.window


class MemoryThrottleStore:
    """The same rule in one process's memory: for tests and single-process tools only."""

    def __init__(self) -> None:
        self.tats: dict[Key, dt.datetime] = {}

    async def take(
        self, charges: Sequence[tuple[Key, Limit]], now: dt.datetime
    ) -> dt.timedelta | None:
        updates, waits = {}, []
        for key, limit in sorted(charges):
            new_tat, fits = _gcra(self.tats.get(key), now, limit)
            if fits:
                updates[key] = new_tat
            else:
                waits.append(new_tat - limit.window - now)
        if waits:
            return max(waits)
        self.tats.update(updates)
        return None

    async def forgive(
        self, refunds: Sequence[tuple[Key, Limit]], resets: Sequence[Key], now: dt.datetime
    ) -> None:
        for key, limit in refunds:
            if key in self.tats:
                self.tats[key] -= limit.cost
        for key in resets:
            if key in self.tats:
                self.tats[key] = min(self.tats[key], now)


_TAKE = """
INSERT INTO auth_throttle AS t (kind, address, principal, tat)
VALUES ($1, $2, $3, $4::timestamptz + $5::interval)
ON CONFLICT (kind, address, principal) DO UPDATE
    SET tat = greatest(t.tat, $4) + $5
    WHERE greatest(t.tat, $4) + $5 <= $4::timestamptz + $6::interval
RETURNING tat
"""
_TAT = "SELECT tat FROM auth_throttle WHERE kind = $1 AND address = $2 AND principal = $3"
_REFUND = """
UPDATE auth_throttle SET tat = tat - $4::interval
WHERE kind = $1 AND address = $2 AND principal = $3
"""
_RESET = """
UPDATE auth_throttle SET tat = least(tat, $4)
WHERE kind = $1 AND address = $2 AND principal = $3
"""


class _Refused(Exception):
    pass


class PgThrottleStore:
    """The rule in PostgreSQL (table auth_throttle): one row per key, shared by all replicas.

    Each charge is one upsert that checks and moves the key atomically under its row lock;
    the keys of one attempt are charged in one transaction, in a fixed order (no deadlock).
    """

    def __init__(self, pool: Any) -> None:
        self.pool = pool  # an asyncpg pool (or one connection, for `prune` only)

    async def take(
        self, charges: Sequence[tuple[Key, Limit]], now: dt.datetime
    ) -> dt.timedelta | None:
        waits: list[dt.timedelta] = []
        async with self.pool.acquire() as connection:
            try:
                async with connection.transaction():
                    for key, limit in sorted(charges):
                        row = (key.kind, key.address, key.principal)
                        charged = await connection.fetchval(
                            _TAKE, *row, now, limit.cost, limit.window
                        )
                        if charged is None:
                            tat = await connection.fetchval(_TAT, *row)
                            waits.append(max(tat, now) + limit.cost - limit.window - now)
                    if waits:
                        raise _Refused  # roll back the keys that had room
            except _Refused:
                return max(waits)
        return None

    async def forgive(
        self, refunds: Sequence[tuple[Key, Limit]], resets: Sequence[Key], now: dt.datetime
    ) -> None:
        changes: list[tuple[Key, str, dt.timedelta | dt.datetime]] = [
            (key, _REFUND, limit.cost) for key, limit in refunds
        ]
        changes += [(key, _RESET, now) for key in resets]
        async with self.pool.acquire() as connection, connection.transaction():
            for key, statement, value in sorted(changes, key=lambda change: change[0]):
                await connection.execute(statement, key.kind, key.address, key.principal, value)

    async def prune(self) -> int:
        """Delete the rows that hold nothing back any more (their tat has passed)."""
        return int(await self.pool.fetchval("SELECT prune_auth_throttle()"))
