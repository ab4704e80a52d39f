"""An example agency backend: mirror the agency topic into a local map and print each change.

Run by the agency with its own Kafka credentials (`ikd-gateway agency-consume --help`). It reads
its topic from the start in its own consumer group, keeps citizen -> service -> fields, applies
each record in order (the latest record of a citizen is the agency's whole current view of
them), drops a citizen on a tombstone, skips records it already applied (by CloudEvent id) and
commits offsets only after applying them. A real backend keeps the map and the applied ids in
its own database, written in one transaction with the offsets it commits.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from aiokafka.errors import (
    AuthenticationFailedError,
    GroupAuthorizationFailedError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
)
from pydantic import SecretStr

from ikd_shared.events import decode
from ikd_shared.events.agency_v1 import EVENTS, PURGED_TYPE
from ikd_shared.events.envelope import EnvelopeError, from_kafka
from ikd_shared.kafka import KafkaConnection

Fields = dict[str, dict[str, Any]]
"""Per service code, the fields (name -> value) it may use."""


@dataclass
class AgencyMirror:
    """The agency's local copy of its topic."""

    citizens: dict[str, Fields] = field(default_factory=dict)
    applied: set[str] = field(default_factory=set)
    """CloudEvent ids already applied (delivery is at least once)."""

    def apply(self, key: bytes | None, value: bytes | None, headers: Any) -> str | None:
        """Apply one record; a line saying what changed, None for a duplicate."""
        try:
            event = from_kafka(key, value, headers)
        except EnvelopeError as error:
            return f"skipped a record that is not a CloudEvent: {error}"
        if event.id in self.applied:
            return None
        self.applied.add(event.id)
        pseudonym = event.key or ""
        if event.is_tombstone:
            if event.type != PURGED_TYPE:
                return f"skipped a tombstone of type {event.type}"
            self.citizens.pop(pseudonym, None)
            return f"purged   {pseudonym[:16]}…: nothing may be held any more"
        try:
            record = decode(event, EVENTS)
        except EnvelopeError as error:
            return f"skipped {event.id}: {error}"
        self.citizens[pseudonym] = {grant.service: dict(grant.fields) for grant in record.services}
        services = ", ".join(
            f"{grant.service}={len(grant.fields)} fields" for grant in record.services
        )
        return (
            f"changed  {pseudonym[:16]}… v{record.version}: "
            f"{', '.join(record.changed_fields) or '-'} ({services})"
        )


async def consume(
    kafka: KafkaConnection,
    topic: str,
    *,
    group: str,
    mirror: AgencyMirror | None = None,
    idle_exit: float | None = None,
    out: Callable[[str], None] = print,
) -> AgencyMirror:
    """Mirror `topic` until cancelled, or until no record came for `idle_exit` seconds."""
    mirror = mirror or AgencyMirror()
    consumer = kafka.consumer(topic, group=group, auto_offset_reset="earliest")
    try:
        await consumer.start()
        last = time.monotonic()
        while idle_exit is None or time.monotonic() - last < idle_exit:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    line = mirror.apply(record.key, record.value, record.headers)
                    if line is not None:
                        out(line)
            if batch:
                await consumer.commit()  # only what was applied
                last = time.monotonic()
    finally:
        await consumer.stop()
    return mirror


def connection(
    bootstrap_servers: str,
    *,
    group: str,
    security_protocol: str = "SASL_SSL",
    sasl_mechanism: str = "SCRAM-SHA-512",
    username: str | None = None,
    password: str | None = None,
    password_file: Path | None = None,
    ca_file: Path | None = None,
) -> KafkaConnection:
    """The agency's own principal (`agency-<code>`, from `ikdctl agencies onboard`)."""
    if password is None and password_file is not None:
        password = password_file.read_text().strip()
    if security_protocol.startswith("SASL_") and not (username and password):
        raise ValueError(f"{security_protocol} needs a username and a password (or password file)")
    return KafkaConnection(
        bootstrap_servers,
        client_id=group,
        security_protocol=security_protocol,
        sasl_mechanism=sasl_mechanism,
        username=username,
        password=SecretStr(password) if password else None,
        ca_file=str(ca_file) if ca_file else None,
    )


# The broker's refusals: wrong credentials, or a topic or group not granted to this principal.
REFUSALS = (
    AuthenticationFailedError,
    SaslAuthenticationFailed,
    TopicAuthorizationFailedError,
    GroupAuthorizationFailedError,
)


def run(
    kafka: KafkaConnection,
    topic: str,
    group: str,
    *,
    idle_exit: float | None,
    dump: TextIO | None,
) -> None:
    mirror = asyncio.run(consume(kafka, topic, group=group, idle_exit=idle_exit))
    if dump is not None:
        json.dump(mirror.citizens, dump, indent=2, sort_keys=True, default=str)
        dump.write("\n")
