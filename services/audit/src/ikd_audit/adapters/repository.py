"""All SQL of the audit service: the append-only log, its tree state, tree heads, auditors.

Every repository works on the one connection and transaction of a PgUnitOfWork.
"""
# ruff: noqa: S608  -- SQL is built from constant column lists and $n placeholders only

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from typing import Any

import asyncpg

from ikd_audit.domain.batch import EntryBatch, NewNodes
from ikd_audit.domain.model import Cosignature
from ikd_audit.domain.search import AgencyCount, SearchFilter
from ikd_shared import db, merkle
from ikd_shared.transparency import Entry, TreeHead

# The database errors of an outage or of contention: retried until they pass. Any other error
# of an append is the record's own (the consumer dead-letters it).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OSError,  # refused or reset connections, timeouts acquiring one
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,  # shutdown, restart, statement timeout
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.exceptions.DeadlockDetectedError,
    asyncpg.exceptions.SerializationError,
    asyncpg.exceptions.LockNotAvailableError,
)

# One writer at a time appends, so positions are gapless and the tree state stays exact.
LOG_LOCK = 0x1CD_A0D1
# The signer process LISTENs here; the service NOTIFYs when it needs a head it cannot sign.
SIGN_CHANNEL = "ikd_audit_sign"
ENTRY_COLUMNS = (
    "position, access_id, occurred_at, recorded_at, agency, service, pseudonym, fields, "
    "purpose, legal_basis, channel, outcome, reason"
)


def _entry(row: asyncpg.Record) -> Entry:
    return Entry(
        position=row["position"],
        access_id=row["access_id"],
        occurred_at=row["occurred_at"],
        recorded_at=row["recorded_at"],
        agency=row["agency"],
        service=row["service"],
        pseudonym=row["pseudonym"],
        fields=tuple(row["fields"]),
        purpose=row["purpose"],
        legal_basis=row["legal_basis"],
        channel=row["channel"],
        outcome=row["outcome"],
        reason=row["reason"],
    )


def _head(row: asyncpg.Record) -> TreeHead:
    return TreeHead(
        tree_size=row["tree_size"],
        root_hash=bytes(row["root_hash"]),
        timestamp=row["signed_at"],
        key_id=row["key_id"],
        signature=bytes(row["signature"]),
        checkpoint=row["checkpoint"],
    )


def _where(search: SearchFilter, params: list[Any]) -> str:
    clauses = []

    def add(sql: str, value: Any) -> None:
        params.append(value)
        clauses.append(sql.format(f"${len(params)}"))

    for column in ("pseudonym", "agency", "service", "channel", "outcome"):
        value = getattr(search, column)
        if value is not None:
            add(f"{column} = {{}}", value)
    if search.since is not None:
        add("occurred_at >= {}", search.since)
    if search.until is not None:
        add("occurred_at <= {}", search.until)
    return " AND ".join(clauses) if clauses else "TRUE"


async def _node_hashes(
    conn: asyncpg.Connection, nodes: Sequence[merkle.NodeId]
) -> dict[merkle.NodeId, bytes]:
    leaves = [idx for level, idx in nodes if level == 0]
    inner = [(level, idx) for level, idx in nodes if level > 0]
    found: dict[merkle.NodeId, bytes] = {}
    if leaves:
        rows = await conn.fetch(
            "SELECT position, leaf_hash FROM log_entry WHERE position = ANY($1::bigint[])", leaves
        )
        found.update({(0, r["position"]): bytes(r["leaf_hash"]) for r in rows})
    if inner:
        rows = await conn.fetch(
            "SELECT n.level, n.idx, n.hash FROM merkle_node n "
            "JOIN unnest($1::smallint[], $2::bigint[]) AS q(level, idx) "
            "ON n.level = q.level AND n.idx = q.idx",
            [level for level, _ in inner],
            [idx for _, idx in inner],
        )
        found.update({(r["level"], r["idx"]): bytes(r["hash"]) for r in rows})
    if len(found) != len(set(leaves)) + len(set(inner)):
        raise LookupError("the stored Merkle tree state is incomplete")
    return found


class PgLog:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def lock(self) -> None:
        await self.conn.execute("SELECT pg_advisory_xact_lock($1)", LOG_LOCK)

    async def known_access_ids(self, access_ids: Sequence[uuid.UUID]) -> set[uuid.UUID]:
        rows = await self.conn.fetch(
            "SELECT access_id FROM log_entry WHERE access_id = ANY($1::uuid[])", list(access_ids)
        )
        return {r["access_id"] for r in rows}

    async def size(self) -> int:
        value = await self.conn.fetchval("SELECT max(position) FROM log_entry")
        return 0 if value is None else int(value) + 1

    async def node_hashes(self, nodes: Iterable[merkle.NodeId]) -> dict[merkle.NodeId, bytes]:
        return await _node_hashes(self.conn, list(nodes))

    async def add(self, batch: EntryBatch, nodes: NewNodes) -> None:
        # The runtime role may not INSERT into the log's tables: append_log() (migration 0003)
        # takes the next positions only and raises on anything already there.
        await self.conn.fetchval(
            "SELECT append_log($1::bigint[], $2::uuid[], $3::timestamptz[], $4::timestamptz[], "
            "$5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], "
            "$11::text[], $12::text[], $13::text[], $14::bytea[], $15::smallint[], "
            "$16::bigint[], $17::bytea[])",
            list(batch.positions),
            batch.access_ids,
            batch.occurred_at,
            [batch.recorded_at] * len(batch),
            batch.agencies,
            batch.services,
            batch.pseudonyms,
            batch.fields_json,
            batch.purposes,
            batch.legal_bases,
            batch.channels,
            batch.outcomes,
            batch.reasons,
            batch.leaves,
            nodes.levels,
            nodes.idxs,
            nodes.hashes,
        )

    async def add_tree_head(self, head: TreeHead) -> None:
        await self.conn.fetchval(
            "SELECT add_tree_head($1, $2, $3, $4, $5, $6)",
            head.tree_size,
            head.root_hash,
            head.timestamp,
            head.key_id,
            head.signature,
            head.checkpoint,
        )

    def entries_between(self, start: int, end: int) -> AsyncIterator[Entry]:
        return self._entries_between(start, end)

    async def _entries_between(self, start: int, end: int) -> AsyncIterator[Entry]:
        sql = (
            f"SELECT {ENTRY_COLUMNS} FROM log_entry WHERE position >= $1 AND position < $2 "
            "ORDER BY position"
        )
        async for row in self.conn.cursor(sql, start, end, prefetch=1000):
            yield _entry(row)

    async def position_of(self, leaf_hash: bytes) -> int | None:
        value = await self.conn.fetchval(
            "SELECT min(position) FROM log_entry WHERE leaf_hash = $1", leaf_hash
        )
        return None if value is None else int(value)

    async def add_cosignature(self, cosignature: Cosignature) -> bool:
        added = await self.conn.fetchval(
            "INSERT INTO cosignature (tree_size, witness, key_id, cosigned_at, line) "
            "VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING true",
            cosignature.tree_size,
            cosignature.witness,
            cosignature.key_id,
            cosignature.cosigned_at,
            cosignature.line,
        )
        return bool(added)

    async def cosignatures(self, tree_size: int) -> list[Cosignature]:
        rows = await self.conn.fetch(
            "SELECT tree_size, witness, key_id, cosigned_at, line FROM cosignature "
            "WHERE tree_size = $1 ORDER BY witness, key_id",
            tree_size,
        )
        return [Cosignature(**dict(r)) for r in rows]

    async def latest_cosigned_size(self, at_least: int = 0) -> int | None:
        value = await self.conn.fetchval(
            "SELECT max(tree_size) FROM cosignature WHERE tree_size >= $1", at_least
        )
        return None if value is None else int(value)

    async def latest_tree_head(self) -> TreeHead | None:
        row = await self.conn.fetchrow("SELECT * FROM tree_head ORDER BY tree_size DESC LIMIT 1")
        return _head(row) if row else None

    async def tree_head(self, size: int) -> TreeHead | None:
        row = await self.conn.fetchrow("SELECT * FROM tree_head WHERE tree_size = $1", size)
        return _head(row) if row else None

    async def tree_heads(self) -> list[TreeHead]:
        rows = await self.conn.fetch("SELECT * FROM tree_head ORDER BY tree_size")
        return [_head(r) for r in rows]

    async def entry(self, position: int) -> tuple[Entry, bytes] | None:
        row = await self.conn.fetchrow(
            f"SELECT {ENTRY_COLUMNS}, leaf_hash FROM log_entry WHERE position = $1", position
        )
        return (_entry(row), bytes(row["leaf_hash"])) if row else None

    async def search(self, search: SearchFilter, before: int | None, limit: int) -> list[Entry]:
        params: list[Any] = []
        where = _where(search, params)
        if before is not None:
            params.append(before)
            where += f" AND position < ${len(params)}"
        params.append(limit)
        sql = (
            f"SELECT {ENTRY_COLUMNS} FROM log_entry WHERE {where} "
            f"ORDER BY position DESC LIMIT ${len(params)}"
        )
        return [_entry(r) for r in await self.conn.fetch(sql, *params)]

    async def stream(
        self, search: SearchFilter | None = None, *, with_hash: bool = False
    ) -> AsyncIterator[tuple[Entry, bytes | None]]:
        """Entries in position order through a server-side cursor (constant memory)."""
        params: list[Any] = []
        where = _where(search or SearchFilter(), params)
        sql = f"SELECT {ENTRY_COLUMNS}, leaf_hash FROM log_entry WHERE {where} ORDER BY position"
        async for row in self.conn.cursor(sql, *params, prefetch=1000):
            yield _entry(row), (bytes(row["leaf_hash"]) if with_hash else None)

    async def agency_counts(self, search: SearchFilter) -> list[AgencyCount]:
        params: list[Any] = []
        where = _where(search, params)
        sql = (
            "SELECT agency, count(*) AS accesses, "
            "count(*) FILTER (WHERE outcome = 'denied') AS denials "
            f"FROM log_entry WHERE {where} GROUP BY agency ORDER BY agency"
        )
        rows = await self.conn.fetch(sql, *params)
        return [AgencyCount(r["agency"], r["accesses"], r["denials"]) for r in rows]

    async def trail(self, pseudonym: str) -> list[tuple[Entry, bytes]]:
        rows = await self.conn.fetch(
            f"SELECT {ENTRY_COLUMNS}, leaf_hash FROM log_entry WHERE pseudonym = $1 "
            "ORDER BY position",
            pseudonym,
        )
        return [(_entry(r), bytes(r["leaf_hash"])) for r in rows]


class PgSeenCredentials:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def remember(self, jti: str, expires_at: dt.datetime) -> bool:
        inserted = await self.conn.fetchval(
            "INSERT INTO seen_credential (jti, expires_at) VALUES ($1, $2) "
            "ON CONFLICT (jti) DO NOTHING RETURNING true",
            jti,
            expires_at,
        )
        return bool(inserted)

    async def prune(self, grace: dt.timedelta) -> int:
        # The runtime role may not DELETE here; the function decides what has expired.
        return int(await self.conn.fetchval("SELECT prune_seen_credential($1)", grace))


class PgAuditors:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def secret_hash(self, client_id: str) -> str | None:
        value = await self.conn.fetchval(
            "SELECT secret_hash FROM auditor WHERE client_id = $1 AND NOT disabled", client_id
        )
        return str(value) if value is not None else None

    async def save(self, client_id: str, secret_hash: str) -> None:
        await self.conn.execute(
            "INSERT INTO auditor (client_id, secret_hash) VALUES ($1, $2) "
            "ON CONFLICT (client_id) DO UPDATE SET secret_hash = EXCLUDED.secret_hash, "
            "disabled = false",
            client_id,
            secret_hash,
        )


class PgUnitOfWork(db.PgUnitOfWork):
    """Audit's repositories on one transaction (see `ikd_shared.db.PgUnitOfWork`)."""

    log: PgLog
    credentials: PgSeenCredentials
    auditors: PgAuditors

    def _bind(self, connection: Any) -> None:
        self.log = PgLog(connection)
        self.credentials = PgSeenCredentials(connection)
        self.auditors = PgAuditors(connection)


class PgUnitOfWorkFactory:
    """Units of work on connections of one pool (the service layer's UnitOfWorkFactory)."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    def __call__(self, *, snapshot: bool = False) -> PgUnitOfWork:
        return PgUnitOfWork(self.pool, snapshot=snapshot)


async def request_tree_head(pool: asyncpg.Pool) -> None:
    """Wake the signer process. Outside any transaction: a NOTIFY is only sent on commit."""
    await pool.execute(f"NOTIFY {SIGN_CHANNEL}")


class SignRequests:
    """The signer's LISTEN for requests, on a connection of its own (session state, so never
    a pooled one); a dropped connection shows in `alive`, and the caller listens again."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self._conn = connection

    @classmethod
    async def listen(cls, dsn: str, wake: Callable[[], None]) -> SignRequests:
        connection = await asyncpg.connect(dsn)
        try:
            await connection.add_listener(SIGN_CHANNEL, lambda *_: wake())
        except BaseException:
            await connection.close()
            raise
        return cls(connection)

    @property
    def alive(self) -> bool:
        return not self._conn.is_closed()

    async def close(self) -> None:
        await self._conn.close()
