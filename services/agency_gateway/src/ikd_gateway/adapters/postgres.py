"""PostgreSQL adapters: all of the gateway's SQL lives here (asyncpg)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import asyncpg

from ikd_gateway.domain.model import CitizenView, ConsentSet, Fingerprint, SourcePosition
from ikd_gateway.service_layer import unit_of_work as uow_types
from ikd_gateway.service_layer.unit_of_work import (
    Attempt,
    Delivery,
    Endpoint,
    UnitOfWork,
    WebhookMessage,
)
from ikd_shared import codec, db, tracing
from ikd_shared.events.access_v1 import AccessRecorded
from ikd_shared.events.agency_v1 import PURGED_TYPE
from ikd_shared.events.consent_v1 import Consent
from ikd_shared.events.profile_v1 import Relationship
from ikd_shared.tracing import TraceContext

_SELECT_VIEW = """SELECT pseudonym, version, data, expires, next_expiry, verified_at, erased,
    source_partition, source_offset, relationships FROM citizen_view WHERE pseudonym = $1"""
_SELECT_VIEW_FOR_UPDATE = _SELECT_VIEW + " FOR UPDATE"
_SELECT_VIEWS = """SELECT pseudonym, version, data, expires, next_expiry, verified_at, erased,
    source_partition, source_offset, relationships FROM citizen_view
    WHERE pseudonym = ANY($1::text[])"""
# The batch forms: one statement for all rows of a batch (arrays unnested server-side), JSON
# passed as text so that it is encoded exactly as the single-row codec does.
_UPSERT_NEWER_MANY = """INSERT INTO citizen_view (pseudonym, version, data, expires,
      next_expiry, verified_at, erased, source_partition, source_offset, relationships)
    SELECT pseudonym, version, data::jsonb, expires::jsonb, next_expiry, verified_at, erased,
      source_partition, source_offset, relationships::jsonb
    FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::timestamptz[],
      $6::timestamptz[], $7::boolean[], $8::integer[], $9::bigint[], $10::text[])
    AS v(pseudonym, version, data, expires, next_expiry, verified_at, erased, source_partition,
      source_offset, relationships)
    ON CONFLICT (pseudonym) DO UPDATE SET
      version = EXCLUDED.version, data = EXCLUDED.data, expires = EXCLUDED.expires,
      next_expiry = EXCLUDED.next_expiry, verified_at = EXCLUDED.verified_at,
      erased = EXCLUDED.erased, source_partition = EXCLUDED.source_partition,
      source_offset = EXCLUDED.source_offset, relationships = EXCLUDED.relationships,
      updated_at = now()
    WHERE citizen_view.version < EXCLUDED.version"""
_REPLACE_SAME_VERSION_MANY = """UPDATE citizen_view AS c SET data = v.data::jsonb,
      expires = v.expires::jsonb, next_expiry = v.next_expiry, verified_at = v.verified_at,
      erased = v.erased, source_partition = v.source_partition, source_offset = v.source_offset,
      relationships = v.relationships::jsonb, updated_at = now()
    FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::timestamptz[],
      $6::timestamptz[], $7::boolean[], $8::integer[], $9::bigint[], $10::text[])
    AS v(pseudonym, version, data, expires, next_expiry, verified_at, erased, source_partition,
      source_offset, relationships)
    WHERE c.pseudonym = v.pseudonym AND c.version = v.version"""
_REPLACE_SAME_VERSION = """UPDATE citizen_view SET data = $3, expires = $4, next_expiry = $5,
     verified_at = $6, erased = $7, source_partition = $8, source_offset = $9,
     relationships = $10, updated_at = now()
   WHERE pseudonym = $1 AND version = $2"""
_REPLACE_NEWER_CONSENTS = """INSERT INTO citizen_consents (pseudonym, consents_version, consents)
   VALUES ($1, $2, $3)
   ON CONFLICT (pseudonym) DO UPDATE SET consents_version = EXCLUDED.consents_version,
     consents = EXCLUDED.consents, updated_at = now()
   WHERE citizen_consents.consents_version < EXCLUDED.consents_version"""
_INSERT_OUTBOX = """INSERT INTO access_outbox (access_id, record_key, payload, traceparent,
    tracestate) VALUES ($1, $2, $3, $4, $5)"""
# Held while a webhook endpoint is registered (the cap counts one registration at a time).
ENDPOINTS_LOCK = "ikd-gateway webhook endpoints"
_INSERT_MESSAGE = """INSERT INTO webhook_messages (id, endpoint_id, pseudonym, version, event_type,
   changed_fields) VALUES ($1, $2, $3, $4, $5, $6)"""


def _view_args(view: CitizenView) -> tuple[Any, ...]:
    return (
        view.pseudonym,
        view.version,
        dict(view.data),
        {name: until.isoformat() for name, until in view.expires.items()},
        view.next_expiry,
        view.verified_at,
        view.erased,
        view.source.partition if view.source else None,
        view.source.offset if view.source else None,
        [r.model_dump(mode="json") for r in view.relationships],
    )


def _view_columns(views: Sequence[CitizenView]) -> tuple[list[Any], ...]:
    """`_view_args` of each row, as one array per column (JSON columns as text)."""
    columns: tuple[list[Any], ...] = tuple([] for _ in range(10))
    for view in views:
        args = _view_args(view)
        for index, value in enumerate(args):
            columns[index].append(_json_text(value) if index in _JSON_COLUMNS else value)
    return columns


_JSON_COLUMNS = frozenset((2, 3, 9))


def _json_text(value: Any) -> str:
    return codec.dumps(value).decode()


def _view_from(row: asyncpg.Record | Mapping[str, Any]) -> CitizenView:
    source = None
    if row["source_partition"] is not None:
        source = SourcePosition(row["source_partition"], row["source_offset"])
    # A version floor is the one row that is neither verified nor erased (migration 0008
    # checks it holds nothing and has an end); its end is the row's next_expiry.
    floor = row["verified_at"] is None and not row["erased"]
    return CitizenView(
        pseudonym=row["pseudonym"],
        version=row["version"],
        data=row["data"],
        expires={name: dt.datetime.fromisoformat(until) for name, until in row["expires"].items()},
        verified_at=row["verified_at"],
        erased=row["erased"],
        source=source,
        relationships=tuple(Relationship.model_validate(r) for r in row["relationships"]),
        floor_until=row["next_expiry"] if floor else None,
    )


class PgViews(uow_types.ViewRepository):
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def get(self, pseudonym: str, *, for_update: bool = False) -> CitizenView | None:
        row = await self.conn.fetchrow(
            _SELECT_VIEW_FOR_UPDATE if for_update else _SELECT_VIEW, pseudonym
        )
        return _view_from(row) if row else None

    async def replace_same_version(self, view: CitizenView) -> bool:
        status = await self.conn.execute(_REPLACE_SAME_VERSION, *_view_args(view))
        return bool(status == "UPDATE 1")

    async def get_many(
        self, pseudonyms: Iterable[str], *, for_update: bool = False
    ) -> dict[str, CitizenView]:
        query = _SELECT_VIEWS + (" ORDER BY pseudonym FOR UPDATE" if for_update else "")
        rows = await self.conn.fetch(query, list(pseudonyms))
        return {row["pseudonym"]: _view_from(row) for row in rows}

    async def upsert_newer_many(self, views: Sequence[CitizenView]) -> None:
        # One row per citizen (the callers fold a batch per citizen): a multi-row upsert may
        # not touch a row twice.
        if views:
            await self.conn.execute(_UPSERT_NEWER_MANY, *_view_columns(views))

    async def replace_same_version_many(self, views: Sequence[CitizenView]) -> None:
        if views:
            await self.conn.execute(_REPLACE_SAME_VERSION_MANY, *_view_columns(views))

    async def due_for_expiry(self, now: dt.datetime, limit: int) -> Sequence[CitizenView]:
        rows = await self.conn.fetch(
            """SELECT pseudonym, version, data, expires, next_expiry, verified_at, erased,
                  source_partition, source_offset, relationships FROM citizen_view
                WHERE next_expiry <= $1 ORDER BY next_expiry LIMIT $2""",
            now,
            limit,
        )
        return [_view_from(row) for row in rows]

    async def delete_many(self, pseudonyms: Sequence[str]) -> None:
        if pseudonyms:
            await self.conn.execute(
                "DELETE FROM citizen_view WHERE pseudonym = ANY($1::text[])", list(pseudonyms)
            )

    async def holding_relationship(
        self, relationship_id: uuid.UUID
    ) -> tuple[str, Relationship] | None:
        row = await self.conn.fetchrow(
            """SELECT pseudonym, version, data, expires, next_expiry, verified_at, erased,
                  source_partition, source_offset, relationships FROM citizen_view
                WHERE relationships @> $1 LIMIT 1""",
            [{"relationship_id": str(relationship_id)}],
        )
        if row is None:
            return None
        view = _view_from(row)
        found = next(r for r in view.relationships if r.relationship_id == relationship_id)
        return view.pseudonym, found


class PgConsents(uow_types.ConsentRepository):
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def get(self, pseudonym: str) -> ConsentSet | None:
        row = await self.conn.fetchrow(
            "SELECT consents_version, consents FROM citizen_consents WHERE pseudonym = $1",
            pseudonym,
        )
        if row is None:
            return None
        consents = tuple(Consent.model_validate(c) for c in row["consents"])
        return ConsentSet(pseudonym, row["consents_version"], consents)

    async def replace_newer(self, consents: ConsentSet) -> bool:
        row = await self.conn.fetchrow(
            _REPLACE_NEWER_CONSENTS + " RETURNING consents_version", *_consent_args(consents)
        )
        return row is not None

    async def delete(self, pseudonym: str) -> None:
        await self.conn.execute("DELETE FROM citizen_consents WHERE pseudonym = $1", pseudonym)

    async def get_many(self, pseudonyms: Iterable[str]) -> dict[str, ConsentSet]:
        rows = await self.conn.fetch(
            """SELECT pseudonym, consents_version, consents FROM citizen_consents
               WHERE pseudonym = ANY($1::text[])""",
            list(pseudonyms),
        )
        return {
            row["pseudonym"]: ConsentSet(
                row["pseudonym"],
                row["consents_version"],
                tuple(Consent.model_validate(c) for c in row["consents"]),
            )
            for row in rows
        }

    async def replace_newer_many(self, sets: Sequence[ConsentSet]) -> None:
        if sets:
            await self.conn.executemany(
                _REPLACE_NEWER_CONSENTS, [_consent_args(consents) for consents in sets]
            )

    async def delete_many(self, pseudonyms: Sequence[str]) -> None:
        if pseudonyms:
            await self.conn.execute(
                "DELETE FROM citizen_consents WHERE pseudonym = ANY($1::text[])", list(pseudonyms)
            )


def _consent_args(consents: ConsentSet) -> tuple[Any, ...]:
    return (
        consents.pseudonym,
        consents.version,
        [c.model_dump(mode="json") for c in consents.consents],
    )


class PgProcessed(uow_types.ProcessedEvents):
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def add(self, consumer: str, event_id: str) -> bool:
        status = await self.conn.execute(
            """INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2)
               ON CONFLICT DO NOTHING""",
            consumer,
            event_id,
        )
        return bool(status == "INSERT 0 1")

    async def add_many(self, consumer: str, event_ids: Sequence[str]) -> set[str]:
        if not event_ids:
            return set()
        rows = await self.conn.fetch(
            """INSERT INTO processed_events (consumer, event_id)
               SELECT $1, event_id FROM unnest($2::text[]) AS event_id
               ON CONFLICT DO NOTHING RETURNING event_id""",
            consumer,
            list(dict.fromkeys(event_ids)),
        )
        return {row["event_id"] for row in rows}


class PgOutbox(uow_types.AccessOutbox):
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def add(self, event: AccessRecorded) -> None:
        # The current W3C trace context (a consumed record's or a request's) rides along and
        # the relay sends it as ce_traceparent.
        await self.conn.execute(_INSERT_OUTBOX, *_outbox_args(event, tracing.current_trace()))

    async def add_many(self, events: Sequence[tuple[AccessRecorded, TraceContext | None]]) -> None:
        if events:
            await self.conn.executemany(
                _INSERT_OUTBOX, [_outbox_args(event, trace) for event, trace in events]
            )


def _outbox_args(event: AccessRecorded, trace: TraceContext | None) -> tuple[Any, ...]:
    return (
        event.access_id,
        event.pseudonym or f"agency:{event.agency}",
        event.model_dump(mode="json"),
        trace.traceparent if trace is not None else None,
        trace.tracestate if trace is not None else None,
    )


class PgAgencyTopic(uow_types.AgencyTopicOutbox):
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def published(self, pseudonyms: Iterable[str]) -> dict[str, Fingerprint]:
        rows = await self.conn.fetch(
            """SELECT pseudonym, fingerprint FROM agency_disclosed
               WHERE pseudonym = ANY($1::text[])""",
            list(pseudonyms),
        )
        return {row["pseudonym"]: row["fingerprint"] for row in rows}

    async def add_many(self, publications: Sequence[uow_types.AgencyPublication]) -> None:
        if not publications:
            return
        # One statement per table for the whole batch; positions in the order given (the
        # relay publishes by position).
        await self.conn.execute(
            """INSERT INTO agency_outbox (event_id, record_key, ce_type, data, traceparent,
               tracestate)
               SELECT event_id, record_key, ce_type, data, traceparent, tracestate
               FROM unnest($1::uuid[], $2::text[], $3::text[], $4::bytea[], $5::text[],
                 $6::text[]) WITH ORDINALITY
                 AS p(event_id, record_key, ce_type, data, traceparent, tracestate, n)
               ORDER BY n""",
            [p.event_id for p in publications],
            [p.pseudonym for p in publications],
            [p.event.event_type if p.event is not None else PURGED_TYPE for p in publications],
            [
                codec.dumps(p.event.model_dump(mode="json")) if p.event is not None else None
                for p in publications
            ],
            [p.trace.traceparent if p.trace is not None else None for p in publications],
            [p.trace.tracestate if p.trace is not None else None for p in publications],
        )
        kept = [p for p in publications if p.fingerprint]
        if kept:  # one publication per citizen: the upsert touches each row once
            await self.conn.execute(
                """INSERT INTO agency_disclosed (pseudonym, fingerprint)
                   SELECT pseudonym, fingerprint::jsonb
                   FROM unnest($1::text[], $2::text[]) AS d(pseudonym, fingerprint)
                   ON CONFLICT (pseudonym) DO UPDATE SET fingerprint = EXCLUDED.fingerprint,
                     updated_at = now()""",
                [p.pseudonym for p in kept],
                [_json_text(p.fingerprint) for p in kept],
            )
        purged = [p.pseudonym for p in publications if not p.fingerprint]
        if purged:
            await self.conn.execute(
                "DELETE FROM agency_disclosed WHERE pseudonym = ANY($1::text[])", purged
            )


def _endpoint_from(row: asyncpg.Record | Mapping[str, Any]) -> Endpoint:
    return Endpoint(
        id=row["id"],
        url=row["url"],
        service=row["service"],
        secret=row["secret"],
        enabled=row["enabled"],
        description=row["description"],
        disabled_reason=row["disabled_reason"],
        created_at=row["created_at"],
        failing_since=row["failing_since"],
        previous_secret=row["previous_secret"],
        previous_secret_expires_at=row["previous_secret_expires_at"],
    )


def _message_from(row: asyncpg.Record | Mapping[str, Any]) -> WebhookMessage:
    return WebhookMessage(
        id=row["id"],
        endpoint_id=row["endpoint_id"],
        pseudonym=row["pseudonym"],
        version=row["version"],
        event_type=row["event_type"],
        changed_fields=tuple(row["changed_fields"]),
        attempts=row["attempts"],
        status=row["status"],
    )


class PgWebhooks(uow_types.WebhookRepository):
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def add_endpoint(self, endpoint: Endpoint, created_by: str) -> None:
        await self.conn.execute(
            """INSERT INTO webhook_endpoints (id, url, service, description, secret, created_by)
               VALUES ($1, $2, $3, $4, $5, $6)""",
            endpoint.id,
            endpoint.url,
            endpoint.service,
            endpoint.description,
            endpoint.secret,
            created_by,
        )

    async def lock_endpoints(self) -> None:
        await self.conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", ENDPOINTS_LOCK
        )

    async def endpoints(self, *, enabled_only: bool = False) -> Sequence[Endpoint]:
        rows = await self.conn.fetch(
            "SELECT * FROM webhook_endpoints WHERE enabled OR NOT $1 ORDER BY created_at",
            enabled_only,
        )
        return [_endpoint_from(row) for row in rows]

    async def endpoint(self, endpoint_id: uuid.UUID) -> Endpoint | None:
        row = await self.conn.fetchrow("SELECT * FROM webhook_endpoints WHERE id = $1", endpoint_id)
        return _endpoint_from(row) if row else None

    async def disable_endpoint(self, endpoint_id: uuid.UUID, reason: str) -> None:
        await self.conn.execute(
            """UPDATE webhook_endpoints SET enabled = false, disabled_reason = $2,
               updated_at = now() WHERE id = $1""",
            endpoint_id,
            reason,
        )
        await self.conn.execute(
            """UPDATE webhook_messages SET status = 'cancelled', updated_at = now()
               WHERE endpoint_id = $1 AND status = 'pending'""",
            endpoint_id,
        )

    async def rotate_secret(
        self, endpoint_id: uuid.UUID, secret: str, previous_expires_at: dt.datetime | None
    ) -> None:
        # One statement: a concurrent rotation waits on the row lock and then replaces this
        # one's secret, so no answered secret is lost.
        await self.conn.execute(
            """UPDATE webhook_endpoints SET secret = $2,
                 previous_secret = CASE WHEN $3::timestamptz IS NULL THEN NULL ELSE secret END,
                 previous_secret_expires_at = $3, updated_at = now()
               WHERE id = $1""",
            endpoint_id,
            secret,
            previous_expires_at,
        )

    async def endpoint_failed(self, endpoint_id: uuid.UUID, now: dt.datetime) -> dt.datetime:
        since: dt.datetime = await self.conn.fetchval(
            """UPDATE webhook_endpoints SET failing_since = COALESCE(failing_since, $2)
               WHERE id = $1 RETURNING failing_since""",
            endpoint_id,
            now,
        )
        return since

    async def endpoint_succeeded(self, endpoint_id: uuid.UUID) -> None:
        await self.conn.execute(
            """UPDATE webhook_endpoints SET failing_since = NULL
               WHERE id = $1 AND failing_since IS NOT NULL""",
            endpoint_id,
        )

    async def enqueue(self, message: WebhookMessage) -> None:
        await self.conn.execute(_INSERT_MESSAGE, *_message_args(message))

    async def enqueue_many(self, messages: Sequence[WebhookMessage]) -> None:
        if messages:
            await self.conn.executemany(_INSERT_MESSAGE, [_message_args(m) for m in messages])

    async def claim_due(
        self, now: dt.datetime, limit: int, lease: dt.timedelta
    ) -> Sequence[WebhookMessage]:
        rows = await self.conn.fetch(
            """UPDATE webhook_messages SET next_attempt_at = $1 + $3::interval, updated_at = now()
               WHERE id IN (SELECT id FROM webhook_messages
                            WHERE status = 'pending' AND next_attempt_at <= $1
                            ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED)
               RETURNING *""",
            now,
            limit,
            lease,
        )
        return [_message_from(row) for row in rows]

    async def message(self, message_id: uuid.UUID) -> WebhookMessage | None:
        row = await self.conn.fetchrow("SELECT * FROM webhook_messages WHERE id = $1", message_id)
        return _message_from(row) if row else None

    async def record_attempt(self, attempt: Attempt) -> None:
        await self.conn.execute(
            """INSERT INTO webhook_attempts (message_id, endpoint_id, attempt, status_code, error,
               duration_ms, outcome, next_retry_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)""",
            attempt.message_id,
            attempt.endpoint_id,
            attempt.attempt,
            attempt.status_code,
            attempt.error,
            attempt.duration_ms,
            attempt.outcome,
            attempt.next_retry_at,
        )

    async def deliveries(self, endpoint_id: uuid.UUID, limit: int) -> Sequence[Delivery]:
        rows = await self.conn.fetch(
            """SELECT a.*, m.event_type FROM webhook_attempts a
               JOIN webhook_messages m ON m.id = a.message_id
               WHERE a.endpoint_id = $1 ORDER BY a.id DESC LIMIT $2""",
            endpoint_id,
            limit,
        )
        return [
            Delivery(
                attempt=Attempt(
                    message_id=row["message_id"],
                    endpoint_id=row["endpoint_id"],
                    attempt=row["attempt"],
                    status_code=row["status_code"],
                    error=row["error"],
                    duration_ms=row["duration_ms"],
                    outcome=row["outcome"],
                    next_retry_at=row["next_retry_at"],
                ),
                attempted_at=row["attempted_at"],
                event_type=row["event_type"],
            )
            for row in rows
        ]

    async def set_status(
        self,
        message_id: uuid.UUID,
        status: str,
        *,
        attempts: int,
        next_attempt_at: dt.datetime | None = None,
    ) -> None:
        await self.conn.execute(
            """UPDATE webhook_messages SET status = $2, attempts = $3,
                 next_attempt_at = COALESCE($4, next_attempt_at), updated_at = now()
               WHERE id = $1""",
            message_id,
            status,
            attempts,
            next_attempt_at,
        )

    async def cancel_pending(self, pseudonym: str) -> int:
        status = await self.conn.execute(
            """UPDATE webhook_messages SET status = 'cancelled', updated_at = now()
               WHERE pseudonym = $1 AND status = 'pending'""",
            pseudonym,
        )
        return int(status.split()[-1])

    async def cancel_pending_many(self, pseudonyms: Sequence[str]) -> int:
        if not pseudonyms:
            return 0
        status = await self.conn.execute(
            """UPDATE webhook_messages SET status = 'cancelled', updated_at = now()
               WHERE pseudonym = ANY($1::text[]) AND status = 'pending'""",
            list(pseudonyms),
        )
        return int(status.split()[-1])


def _message_args(message: WebhookMessage) -> tuple[Any, ...]:
    return (
        message.id,
        message.endpoint_id,
        message.pseudonym,
        message.version,
        message.event_type,
        list(message.changed_fields),
    )


class PgUnitOfWork(db.PgUnitOfWork, UnitOfWork):
    """The gateway's repositories on one transaction (see `ikd_shared.db.PgUnitOfWork`)."""

    def _bind(self, connection: Any) -> None:
        self.views = PgViews(connection)
        self.consents = PgConsents(connection)
        self.processed = PgProcessed(connection)
        self.outbox = PgOutbox(connection)
        self.webhooks = PgWebhooks(connection)
        self.agency_topic = PgAgencyTopic(connection)

    async def lock_citizen(self, pseudonym: str) -> None:
        await self.connection.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", pseudonym
        )

    async def lock_citizens(self, pseudonyms: Iterable[str]) -> None:
        # One statement, the locks taken in the order of their keys: two transactions locking
        # overlapping sets cannot each hold a lock the other waits for.
        await self.connection.execute(
            """SELECT pg_advisory_xact_lock(key) FROM (
                 SELECT DISTINCT hashtextextended(pseudonym, 0) AS key
                 FROM unnest($1::text[]) AS pseudonym ORDER BY key) AS keys""",
            list(set(pseudonyms)),
        )


class PgReadOnlyWork(PgUnitOfWork):
    """The repositories on a pooled connection outside a transaction, for reads only (a
    prefill's, whose access event is group-committed elsewhere): each statement sees what is
    committed when it runs, as in a READ COMMITTED transaction, without the BEGIN and COMMIT
    round trips. Nothing written through it would be atomic: do not write."""

    async def __aenter__(self) -> PgReadOnlyWork:
        connection: Any = await self._pool.acquire()
        self._bind(connection)
        self._connection = connection
        return self

    async def __aexit__(self, *_: object) -> None:
        connection, self._connection = self._connection, None
        await self._pool.release(connection)
