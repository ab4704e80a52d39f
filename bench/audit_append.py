"""Audit append alone: access events decoded and appended to the Merkle log, without Kafka.

Two parts, timed separately:
- `cpu`: the audit consumer's per-entry Python work for N Kafka records of AccessRecorded
  (check the record and validate the event, the entries' canonical leaves and hashes, the
  tree's new nodes, a batch of BATCH at a time), in
  this process without a database; reported as entries per CPU second of this process, which a
  busy machine disturbs little (it is the figure to compare before/after a change).
- `append`: the same entries through `AuditLog.record` into an audit database (the bench's
  own), in transactions of BATCH entries one after the other, as the consumer does; wall time,
  the appender's CPU and, where /proc shows it (same machine), its PostgreSQL backend's CPU:
  `per_cpu_second_with_database` is entries per CPU second of both together.

Run alone: `.venv/bin/python -m bench.audit_append [--dsn postgresql://...] [-n 50000]`.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import time
import uuid
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ikd_audit.adapters.repository import PgUnitOfWorkFactory
from ikd_audit.domain.batch import EntryBatch, extend_tree
from ikd_audit.entrypoints.consumer import parse_record
from ikd_audit.service_layer.checkpoints import DEFAULT_ORIGIN, CheckpointSigner
from ikd_audit.service_layer.services import AuditLog, utc_now
from ikd_shared import merkle
from ikd_shared.consumer import SourceRecord
from ikd_shared.events import to_cloudevent
from ikd_shared.events.access_v1 import AccessRecorded, Channel, Outcome
from ikd_shared.events.envelope import to_kafka
from ikd_shared.legal import LegalBasis

BATCH = 500  # the audit consumer's batch size


def records(n: int) -> list[SourceRecord]:
    """N access events as the gateways put them on the access topic."""
    out = []
    now = dt.datetime.now(dt.UTC)
    for i in range(n):
        event = AccessRecorded(
            access_id=uuid.uuid4(),
            occurred_at=now,
            agency="bench-polres-cirebon",
            service="skck",
            pseudonym=f"{i:064x}",
            fields=["full_name", "address.street", "birth_date", "occupation"],
            purpose="skck",
            legal_basis=LegalBasis.PUBLIC_TASK,
            channel=Channel.VIEW,
            outcome=Outcome.SERVED,
        )
        cloud = to_cloudevent(
            event, source="/bench", key=event.pseudonym or "", event_id=str(event.access_id)
        )
        kafka = to_kafka(cloud)
        out.append(SourceRecord("access", 0, i, kafka.key, kafka.value, tuple(kafka.headers)))
    return out


def cpu_rate(batch: list[SourceRecord], repeats: int = 3) -> dict[str, Any]:
    """Entries per CPU second of the per-entry work (median of `repeats`), by step."""
    decode, build = [], []
    for _ in range(repeats):
        started = time.process_time()
        events = [parse_record(r) for r in batch]
        decoded = time.process_time()
        tree = merkle.CompactRange.at(0, {})
        for i in range(0, len(events), BATCH):  # as the log appends: a batch at a time
            extend_tree(
                tree, EntryBatch.of_entries(events[i : i + BATCH], tree.size, utc_now()).leaves
            )
            tree.root()
        built = time.process_time()
        decode.append(decoded - started)
        build.append(built - decoded)
    decode.sort()
    build.sort()
    n = len(batch)
    d, b = decode[len(decode) // 2], build[len(build) // 2]
    return {
        "entries": n,
        "decode_per_cpu_second": n / d,
        "leaf_and_tree_per_cpu_second": n / b,
        "per_cpu_second": n / (d + b),
        "microseconds_per_entry": (d + b) / n * 1e6,
    }


async def append_rate(dsn: str, batch: list[SourceRecord]) -> dict[str, Any]:
    """Entries/s through AuditLog.append into the database at `dsn`, BATCH per transaction."""
    import asyncpg

    events = [parse_record(r) for r in batch]
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=1)  # one backend, measured
    try:
        backend = await pool.fetchval("SELECT pg_backend_pid()")
        uow = PgUnitOfWorkFactory(pool)
        signer = CheckpointSigner(uow, Ed25519PrivateKey.generate(), DEFAULT_ORIGIN, utc_now)
        log = AuditLog(uow, signer, pseudonym_key=b"b" * 32, cursor_key=b"c" * 32)
        db_cpu_started = _process_cpu(backend)
        started = time.perf_counter()
        cpu_started = time.process_time()
        appended = 0
        for i in range(0, len(events), BATCH):
            result = await log.record(events[i : i + BATCH])
            appended += result.appended
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu_started
        db_cpu_ended = _process_cpu(backend)
    finally:
        await pool.close()
    out = {
        "entries": appended,
        "batch": BATCH,
        "seconds": seconds,
        "per_second": appended / seconds,
        "appender_cpu_percent": 100 * cpu / seconds,
        "appender_per_cpu_second": appended / cpu,
    }
    if db_cpu_started is not None and db_cpu_ended is not None:
        db_cpu = db_cpu_ended - db_cpu_started
        out["database_cpu_percent"] = 100 * db_cpu / seconds
        # appender and its PostgreSQL backend together: what two cores would give if only
        # this ran (the wall rate on a shared machine says more about the others' load)
        out["per_cpu_second_with_database"] = appended / (cpu + db_cpu)
    return out


def _process_cpu(pid: int) -> float | None:
    """CPU seconds (user + system) of a process on this machine, None if it is not readable."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=20_000)
    parser.add_argument("--dsn", help="an audit database to append to (else CPU part only)")
    args = parser.parse_args()
    batch = records(args.n)
    out: dict[str, Any] = {"cpu": cpu_rate(batch)}
    if args.dsn:
        out["append"] = asyncio.run(append_rate(args.dsn, batch))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
