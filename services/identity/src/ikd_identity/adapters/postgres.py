"""All of the identity service's SQL: repositories, the unit of work, clients, the outbox."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import asyncpg

from ikd_identity.domain.clients import Client
from ikd_identity.domain.errors import ConcurrentWrite
from ikd_identity.domain.model import OutboxMessage, ProfileRecord, ProfileStatus
from ikd_identity.domain.relationships import RelationshipRecord, consent_relationship
from ikd_shared import codec, db, tracing
from ikd_shared.events.consent_v1 import Consent
from ikd_shared.events.profile_v1 import CitizenProfile, Relationship, RelationshipKind
from ikd_shared.legal import LegalBasis

NOTIFY_CHANNEL = "ikd_identity_outbox"
# Called after a commit that added outbox rows (wakes the relay); see bootstrap.OutboxWakeup.
OutboxWritten = Callable[[], Awaitable[None]]
# One active relay per outbox: a session-level advisory lock (locks are per database).
RELAY_LOCK_KEY = 0x1CD0_0B0C

_SELECT_PROFILE = (
    "SELECT pseudonym, version, status, profile, verified_at, updated_at, revoked_at FROM profiles "
)


def _profile_record(row: asyncpg.Record) -> ProfileRecord:
    return ProfileRecord(
        pseudonym=row["pseudonym"],
        version=row["version"],
        profile=CitizenProfile.model_validate(row["profile"]),
        status=ProfileStatus(row["status"]),
        verified_at=row["verified_at"],
        updated_at=row["updated_at"],
        revoked_at=row["revoked_at"],
    )


def _profile_json(record: ProfileRecord) -> str:
    return record.profile.model_dump_json()


class PgProfiles:
    def __init__(self, connection: asyncpg.Connection, outbox: PgOutbox) -> None:
        self._db = connection
        self._outbox = outbox

    async def get_for_update(self, pseudonym: str) -> ProfileRecord | None:
        row = await self._db.fetchrow(
            _SELECT_PROFILE + "WHERE pseudonym = $1 FOR UPDATE", pseudonym
        )
        return _profile_record(row) if row else None

    async def get_many_for_update(self, pseudonyms: Sequence[str]) -> dict[str, ProfileRecord]:
        rows = await self._db.fetch(
            _SELECT_PROFILE + "WHERE pseudonym = ANY($1::text[]) ORDER BY pseudonym FOR UPDATE",
            list(pseudonyms),
        )
        return {row["pseudonym"]: _profile_record(row) for row in rows}

    async def save(self, record: ProfileRecord, events: Sequence[OutboxMessage] = ()) -> None:
        """Insert or update one profile, and its outbox rows in the same statement."""
        if record.version == 1:
            statement, args = _INSERT_PROFILES, _insert_args([record])
        else:
            statement, args = _UPDATE_PROFILES, _update_args([record])
        outbox = self._outbox.rows(events)
        if outbox:
            statement = statement.replace(
                ") SELECT count(*) FROM rows", _WITH_OUTBOX[len(args) + 1]
            )
        saved = await self._db.fetchval(statement, *args, *_transposed(outbox))
        if saved != 1:
            raise ConcurrentWrite("the profile was created or changed concurrently")

    async def save_many(self, records: Sequence[ProfileRecord]) -> None:
        """Insert new profiles (version 1) and update existing ones, guarded by version."""
        if not records:
            return
        new = [r for r in records if r.version == 1]
        changed = [r for r in records if r.version > 1]
        if new:
            inserted = await self._db.fetchval(_INSERT_PROFILES, *_insert_args(new))
            if inserted != len(new):
                raise ConcurrentWrite("a profile was created concurrently")
        if changed:
            updated = await self._db.fetchval(_UPDATE_PROFILES, *_update_args(changed))
            if updated != len(changed):
                raise ConcurrentWrite("a profile changed concurrently")


_INSERT_PROFILES = """
                WITH rows AS (
                    INSERT INTO profiles (pseudonym, nik, version, status, profile, verified_at,
                                          updated_at, revoked_at)
                    SELECT p, n, 1, s, j::jsonb, v, u, NULL
                    FROM unnest($1::text[], $2::text[], $3::text[], $4::text[],
                                $5::timestamptz[], $6::timestamptz[]) AS t(p, n, s, j, v, u)
                    ON CONFLICT DO NOTHING
                    RETURNING 1
                ) SELECT count(*) FROM rows
                """


def _insert_args(new: Sequence[ProfileRecord]) -> list[list[Any]]:
    return [
        [r.pseudonym for r in new],
        [r.nik for r in new],
        [r.status.value for r in new],
        [_profile_json(r) for r in new],
        [r.verified_at for r in new],
        [r.updated_at for r in new],
    ]


_UPDATE_PROFILES = """
                WITH rows AS (
                    UPDATE profiles SET version = t.version, status = t.status,
                        profile = t.profile::jsonb, verified_at = t.verified_at,
                        updated_at = t.updated_at, revoked_at = t.revoked_at
                    FROM unnest($1::text[], $2::int[], $3::text[], $4::text[],
                                $5::timestamptz[], $6::timestamptz[], $7::timestamptz[])
                         AS t(pseudonym, version, status, profile, verified_at, updated_at,
                              revoked_at)
                    WHERE profiles.pseudonym = t.pseudonym AND profiles.version = t.version - 1
                    RETURNING 1
                ) SELECT count(*) FROM rows
                """


def _update_args(changed: Sequence[ProfileRecord]) -> list[list[Any]]:
    return [
        [r.pseudonym for r in changed],
        [r.version for r in changed],
        [r.status.value for r in changed],
        [_profile_json(r) for r in changed],
        [r.verified_at for r in changed],
        [r.updated_at for r in changed],
        [r.revoked_at for r in changed],
    ]


# The outbox rows as a second data-modifying CTE of the profile statement: one round trip
# instead of two. Parameters follow the profile statement's own ($7.. or $8..).
_OUTBOX_CTE = """), events AS (
                    INSERT INTO outbox (event_id, topic, key, ce_type, ce_source, dataschema,
                                        payload, traceparent, tracestate)
                    SELECT * FROM unnest(${0}::uuid[], ${1}::text[], ${2}::text[], ${3}::text[],
                                         ${4}::text[], ${5}::text[], ${6}::bytea[], ${7}::text[],
                                         ${8}::text[])
                ) SELECT count(*) FROM rows"""
_WITH_OUTBOX = {
    first: _OUTBOX_CTE.format(*range(first, first + 9)) for first in (7, 8)
}  # after the insert's 6 or the update's 7 parameters


_OUTBOX_COLUMNS = (
    "event_id",
    "topic",
    "key",
    "ce_type",
    "ce_source",
    "dataschema",
    "payload",
    "traceparent",
    "tracestate",
)


def _transposed(rows: Sequence[tuple[Any, ...]]) -> list[list[Any]]:
    return [list(column) for column in zip(*rows, strict=True)] if rows else []


class PgSeenCredentials:
    def __init__(self, connection: asyncpg.Connection) -> None:
        self._db = connection

    async def record(self, jti: str, pseudonym: str, expires_at: dt.datetime) -> bool:
        inserted = await self._db.fetchval(
            "INSERT INTO seen_credentials (jti, pseudonym, expires_at) VALUES ($1, $2, $3) "
            "ON CONFLICT (jti) DO NOTHING RETURNING true",
            jti,
            pseudonym,
            expires_at,
        )
        return bool(inserted)

    async def record_many(self, entries: Sequence[tuple[str, str, dt.datetime]]) -> set[str]:
        if not entries:
            return set()
        # Sorted: two transactions inserting the same ids take them in the same order.
        jtis, pseudonyms, expiries = zip(*sorted(entries), strict=True)
        rows = await self._db.fetch(
            "INSERT INTO seen_credentials (jti, pseudonym, expires_at) "
            "SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[]) "
            "ON CONFLICT (jti) DO NOTHING RETURNING jti",
            list(jtis),
            list(pseudonyms),
            list(expiries),
        )
        return {row[0] for row in rows}

    async def seen(self, jtis: Sequence[str]) -> set[str]:
        rows = await self._db.fetch(
            "SELECT jti FROM seen_credentials WHERE jti = ANY($1::text[])", list(jtis)
        )
        return {row[0] for row in rows}


class PgConsents:
    def __init__(self, connection: asyncpg.Connection) -> None:
        self._db = connection

    async def get_for_update(self, consent_id: uuid.UUID) -> Consent | None:
        raw = await self._db.fetchval(
            "SELECT consent FROM consents WHERE consent_id = $1 FOR UPDATE", consent_id
        )
        return Consent.model_validate(raw) if raw is not None else None

    async def for_citizen(self, pseudonym: str) -> list[Consent]:
        rows = await self._db.fetch(
            "SELECT consent FROM consents WHERE pseudonym = $1 AND status = 'active'", pseudonym
        )
        return [Consent.model_validate(row["consent"]) for row in rows]

    async def save(self, consent: Consent, *, recorded_by: str) -> None:
        await self._db.execute(
            """
            INSERT INTO consents (consent_id, pseudonym, agency, service, status, starts_at,
                                  expires_at, consent, recorded_by)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8::text::jsonb, $9)
            ON CONFLICT (consent_id) DO UPDATE SET status = EXCLUDED.status,
                consent = EXCLUDED.consent, updated_at = now(),
                revoked_by = CASE WHEN EXCLUDED.status = 'revoked' THEN EXCLUDED.recorded_by END
            """,
            consent.consent_id,
            consent.pseudonym,
            consent.agency,
            consent.service,
            consent.status.value,
            consent.starts_at,
            consent.expires_at,
            consent.model_dump_json(),
            recorded_by,
        )

    async def next_version(self, pseudonym: str) -> int:
        version: int = await self._db.fetchval(
            "INSERT INTO consent_versions (pseudonym, version) VALUES ($1, 1) "
            "ON CONFLICT (pseudonym) DO UPDATE SET version = consent_versions.version + 1 "
            "RETURNING version",
            pseudonym,
        )
        return version


_SELECT_RELATIONSHIP = (
    "SELECT relationship_id, pseudonym, kind, agency, service, legal_basis, legal_reference, "
    "starts_at, expires_at, ended_at, recorded_by FROM relationships "
)
# The stored requests and registrations, and the active consents in the same shape: what a
# published record needs, for one citizen or a whole bulk batch, in one round trip.
_CURRENT_RELATIONSHIPS = """
    SELECT relationship_id, pseudonym, kind, agency, service, legal_basis, legal_reference,
           starts_at, expires_at, ended_at, recorded_by
    FROM relationships
    WHERE pseudonym = ANY($1::text[]) AND ended_at IS NULL AND expires_at > $2
    UNION ALL
    SELECT consent_id, pseudonym, 'consent', agency, service, NULL, NULL, starts_at,
           expires_at, NULL, recorded_by
    FROM consents
    WHERE pseudonym = ANY($1::text[]) AND status = 'active' AND expires_at > $2
    """


def _relationship_record(row: asyncpg.Record) -> RelationshipRecord:
    if row["kind"] == RelationshipKind.CONSENT.value:
        relationship = consent_relationship(
            row["relationship_id"],
            row["agency"],
            row["service"],
            row["starts_at"],
            row["expires_at"],
        )
    else:
        relationship = Relationship(
            relationship_id=row["relationship_id"],
            kind=RelationshipKind(row["kind"]),
            agency=row["agency"],
            service=row["service"],
            legal_basis=LegalBasis(row["legal_basis"]),
            legal_reference=row["legal_reference"],
            starts_at=row["starts_at"],
            expires_at=row["expires_at"],
        )
    return RelationshipRecord(
        pseudonym=row["pseudonym"],
        relationship=relationship,
        recorded_by=row["recorded_by"],
        ended_at=row["ended_at"],
    )


class PgRelationships:
    def __init__(self, connection: asyncpg.Connection) -> None:
        self._db = connection

    async def current(
        self, pseudonyms: Sequence[str], at: dt.datetime
    ) -> dict[str, list[RelationshipRecord]]:
        found: dict[str, list[RelationshipRecord]] = {}
        if not pseudonyms:
            return found
        for row in await self._db.fetch(_CURRENT_RELATIONSHIPS, list(pseudonyms), at):
            found.setdefault(row["pseudonym"], []).append(_relationship_record(row))
        return found

    async def get(self, relationship_id: uuid.UUID) -> RelationshipRecord | None:
        row = await self._db.fetchrow(
            _SELECT_RELATIONSHIP + "WHERE relationship_id = $1",
            relationship_id,
        )
        return _relationship_record(row) if row else None

    async def save(self, records: Sequence[RelationshipRecord]) -> None:
        if not records:
            return
        columns = [
            (
                r.relationship_id,
                r.pseudonym,
                r.relationship.kind.value,
                r.relationship.agency,
                r.relationship.service,
                r.relationship.legal_basis.value,
                r.relationship.legal_reference,
                r.relationship.starts_at,
                r.relationship.expires_at,
                r.ended_at,
                r.recorded_by,
            )
            for r in records
        ]
        await self._db.execute(
            """
            INSERT INTO relationships (relationship_id, pseudonym, kind, agency, service,
                legal_basis, legal_reference, starts_at, expires_at, ended_at, recorded_by)
            SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[],
                                 $6::text[], $7::text[], $8::timestamptz[], $9::timestamptz[],
                                 $10::timestamptz[], $11::text[])
            ON CONFLICT (relationship_id) DO UPDATE SET expires_at = EXCLUDED.expires_at,
                legal_reference = EXCLUDED.legal_reference, ended_at = EXCLUDED.ended_at,
                updated_at = now()
            """,
            *_transposed(columns),
        )

    async def end_all(self, pseudonym: str, at: dt.datetime) -> None:
        await self._db.execute(
            "UPDATE relationships SET ended_at = $2, updated_at = now() "
            "WHERE pseudonym = $1 AND ended_at IS NULL AND expires_at > $2",
            pseudonym,
            at,
        )


class PgOutbox:
    def __init__(self, connection: asyncpg.Connection) -> None:
        self._db = connection
        self.added = False

    def rows(self, messages: Sequence[OutboxMessage]) -> list[tuple[Any, ...]]:
        """Outbox rows of the messages (in _OUTBOX_COLUMNS order); they will be committed."""
        if not messages:
            return []
        self.added = True
        # The W3C trace context of the request that caused the events: the relay puts it on
        # each record as the CloudEvents distributed-tracing extension (ce_traceparent).
        # A message may carry its own (a verification committed in a group of several).
        current = tracing.current_trace()
        rows = []
        for m in messages:
            trace = m.trace or current
            rows.append(
                (
                    m.event_id,
                    m.topic,
                    m.key,
                    m.ce_type,
                    m.ce_source,
                    m.dataschema,
                    m.payload,
                    trace.traceparent if trace is not None else None,
                    trace.tracestate if trace is not None else None,
                )
            )
        return rows

    async def add(self, messages: Sequence[OutboxMessage]) -> None:
        records = self.rows(messages)
        if not records:
            return
        if len(records) < 50:  # one statement, one round trip (executemany sends one per row)
            await self._db.execute(
                "INSERT INTO outbox (event_id, topic, key, ce_type, ce_source, dataschema, "
                "payload, traceparent, tracestate) SELECT * FROM unnest($1::uuid[], $2::text[], "
                "$3::text[], $4::text[], $5::text[], $6::text[], $7::bytea[], $8::text[], "
                "$9::text[])",
                *_transposed(records),
            )
        else:
            await self._db.copy_records_to_table(
                "outbox", records=records, columns=list(_OUTBOX_COLUMNS)
            )


class PgUnitOfWork(db.PgUnitOfWork):
    """Identity's repositories on one transaction (see `ikd_shared.db.PgUnitOfWork`).

    Implements the service layer's UnitOfWork protocol structurally (adapters do not import
    the service layer). `on_outbox` runs after a commit that added outbox rows, once.
    """

    profiles: PgProfiles
    credentials: PgSeenCredentials
    consents: PgConsents
    relationships: PgRelationships
    outbox: PgOutbox

    def __init__(self, pool: asyncpg.Pool, *, on_outbox: OutboxWritten | None = None) -> None:
        super().__init__(pool)
        self._on_outbox = on_outbox

    def _bind(self, connection: Any) -> None:
        self.outbox = PgOutbox(connection)
        self.profiles = PgProfiles(connection, self.outbox)
        self.credentials = PgSeenCredentials(connection)
        self.consents = PgConsents(connection)
        self.relationships = PgRelationships(connection)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await super().__aexit__(exc_type, exc, tb)
        # Two commands on one citizen may take its rows in different orders (a consent
        # revocation locks the consent before the profile, a grant the profile first); the
        # one PostgreSQL picks as the deadlock's victim is rolled back here and retried.
        if isinstance(exc, asyncpg.DeadlockDetectedError):
            raise ConcurrentWrite("deadlock with a concurrent command on the same citizen") from exc

    async def _committed(self) -> None:
        if self.outbox.added and self._on_outbox is not None:
            await self._on_outbox()


class PgClients:
    def __init__(self, pool_or_connection: asyncpg.Pool | asyncpg.Connection) -> None:
        self._db = pool_or_connection

    _COLUMNS = (
        "client_id, secret_hash, scopes, agency, disabled, serves, previous_secret_hash, "
        "previous_secret_expires_at"
    )

    async def get(self, client_id: str) -> Client | None:
        row = await self._db.fetchrow(
            f"SELECT {self._COLUMNS} FROM clients WHERE client_id = $1",  # noqa: S608 - constant
            client_id,
        )
        return None if row is None else self._client(row)

    async def all(self) -> list[Client]:
        rows = await self._db.fetch(
            f"SELECT {self._COLUMNS} FROM clients ORDER BY client_id"  # noqa: S608 - constant
        )
        return [self._client(row) for row in rows]

    @staticmethod
    def _client(row: asyncpg.Record) -> Client:
        return Client(
            client_id=row["client_id"],
            secret_hash=row["secret_hash"],
            scopes=frozenset(row["scopes"]),
            agency=row["agency"],
            disabled=row["disabled"],
            serves=frozenset(row["serves"]),
            previous_secret_hash=row["previous_secret_hash"],
            previous_secret_expires=row["previous_secret_expires_at"],
        )

    async def put(self, client: Client) -> None:
        await self._db.execute(
            """
            INSERT INTO clients (client_id, secret_hash, scopes, agency, disabled, serves,
                                 previous_secret_hash, previous_secret_expires_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
            ON CONFLICT (client_id) DO UPDATE SET secret_hash = EXCLUDED.secret_hash,
                scopes = EXCLUDED.scopes, agency = EXCLUDED.agency,
                disabled = EXCLUDED.disabled, serves = EXCLUDED.serves,
                previous_secret_hash = EXCLUDED.previous_secret_hash,
                previous_secret_expires_at = EXCLUDED.previous_secret_expires_at,
                updated_at = now()
            """,
            client.client_id,
            client.secret_hash,
            sorted(client.scopes),
            client.agency,
            client.disabled,
            sorted(client.serves),
            client.previous_secret_hash,
            client.previous_secret_expires,
        )


@dataclass(frozen=True, slots=True)
class OutboxRow:
    position: int
    event_id: uuid.UUID
    topic: str
    key: str
    ce_type: str
    ce_source: str
    dataschema: str | None
    payload: bytes | None
    created_at: dt.datetime
    traceparent: str | None = None  # W3C trace context of the request that caused the event
    tracestate: str | None = None

    def extensions(self) -> dict[str, str]:
        """CloudEvents distributed-tracing extension attributes (ce_traceparent on Kafka)."""
        found = {"traceparent": self.traceparent, "tracestate": self.tracestate}
        return {name: value for name, value in found.items() if value}


class OutboxStore:
    """The ordered relay's session (ikd_shared.outbox.OrderedSession) on a dedicated connection.

    The relay's advisory lock and LISTEN are session state, so they live on this connection
    and never on the pool; closing it releases both.
    """

    def __init__(self, connection: asyncpg.Connection) -> None:
        self._db = connection

    @classmethod
    async def connect(cls, dsn: str) -> OutboxStore:
        return cls(await asyncpg.connect(dsn))

    async def try_lock(self) -> bool:
        return bool(await self._db.fetchval("SELECT pg_try_advisory_lock($1)", RELAY_LOCK_KEY))

    async def listen(self, wake: Callable[[], None]) -> None:
        await self._db.add_listener(NOTIFY_CHANNEL, lambda *_: wake())

    async def unsent(self, limit: int) -> list[OutboxRow]:
        rows = await self._db.fetch(
            "SELECT position, event_id, topic, key, ce_type, ce_source, dataschema, payload, "
            "created_at, traceparent, tracestate FROM outbox WHERE sent_at IS NULL "
            "ORDER BY position LIMIT $1",
            limit,
        )
        return [OutboxRow(**dict(row)) for row in rows]

    async def mark_sent(self, rows: Sequence[OutboxRow]) -> None:
        await self._db.execute(
            "UPDATE outbox SET sent_at = now() WHERE position = ANY($1::bigint[])",
            [row.position for row in rows],
        )

    async def backlog(self) -> int:
        count: int = await self._db.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
        return count

    async def close(self) -> None:
        await self._db.close()


async def notify_outbox(pool: asyncpg.Pool) -> None:
    """Wake a relay in another process (it LISTENs on NOTIFY_CHANNEL)."""
    await pool.execute(f"NOTIFY {NOTIFY_CHANNEL}")


async def outbox_backlog(pool: asyncpg.Pool) -> int:
    """Outbox rows not yet published (served by the partial index on unsent rows)."""
    count: int = await pool.fetchval("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
    return count


async def ping(pool: asyncpg.Pool) -> bool:
    return bool(await pool.fetchval("SELECT true"))


def json_text(value: Any) -> str:
    return codec.dumps(value).decode()
