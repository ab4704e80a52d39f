"""Backups of every service database and of the bus's topic configuration, and their restore.

A backup is a folder: one `pg_dump --format=custom` file per database and `manifest.json` with
each file's SHA-256, each database's owner and the roles allowed to connect (pg_dump keeps the
grants inside a database, not the database's own), and the topics (partitions, replication,
non-default configs) with the ACLs on them and their principals' group and cluster ACLs.

A restore checks every checksum first, then creates each database fresh (it never writes into
an existing one) with its owner and CONNECT grants, the roles first if missing (without a
password: `deploy/scripts/postgres.sh ensure-db` or the operator sets it), and `pg_restore`s it
in one transaction as the superuser, so table owners and grants are the dumped ones. Topics
missing on the bus are created as recorded and the ACLs applied (both idempotent).

The client binaries must be the server's major version: $PG_BIN, `pg_config --bindir`, or the
newest /usr/lib/postgresql/*/bin, as deploy/scripts/postgres.sh finds them.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import quote

import asyncpg
from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported, not in __all__
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    ConfigResource,
    ConfigSource,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from ikd_shared.kafka import KafkaConnection

MANIFEST = "manifest.json"
FORMAT = 1


class BackupError(Exception):
    pass


def pg_bin() -> Path:
    """The directory of pg_dump and pg_restore (the lookup of deploy/scripts/postgres.sh)."""
    if explicit := os.environ.get("PG_BIN"):
        return Path(explicit)
    pg_config = shutil.which("pg_config")
    if pg_config:
        found = subprocess.run(  # noqa: S603  # fixed arguments
            [pg_config, "--bindir"], capture_output=True, text=True
        )
        bindir = Path(found.stdout.strip())
        if found.returncode == 0 and (bindir / "pg_restore").exists():
            return bindir
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/pg_restore"),
        key=lambda p: int(p.parts[-3]) if p.parts[-3].isdigit() else 0,
    )
    if not candidates:
        raise BackupError("pg_dump/pg_restore not found: set PG_BIN")
    return candidates[-1].parent


@dataclass(frozen=True)
class PgServer:
    """Where the databases are, and the superuser the operator backs up and restores as."""

    host: str
    port: int
    user: str
    password: str

    @classmethod
    def from_env(cls) -> PgServer:
        return cls(
            os.environ.get("IKD_PG_HOST", "127.0.0.1"),
            int(os.environ.get("PG_PORT", "15432")),
            os.environ.get("IKD_PG_SUPERUSER", "postgres"),
            os.environ.get("IKD_PG_SUPERUSER_PASSWORD", ""),
        )

    def dsn(self, database: str = "postgres") -> str:
        return (
            f"postgresql://{quote(self.user, safe='')}:{quote(self.password, safe='')}"
            f"@{self.host}:{self.port}/{database}"
        )

    def run(self, program: str, *args: str) -> None:
        """A PostgreSQL client program; the password in its environment, never on the line."""
        env = {**os.environ, "PGHOST": self.host, "PGPORT": str(self.port)}
        env |= {"PGUSER": self.user, "PGPASSWORD": self.password}
        done = subprocess.run(  # noqa: S603  # the PostgreSQL client programs, fixed arguments
            [str(pg_bin() / program), "--no-password", *args],
            env=env,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise BackupError(f"{program} failed: {done.stderr.strip()}")


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for chunk in iter(lambda: file.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def default_databases(agencies: Iterable[str]) -> list[str]:
    """identity, audit and one gateway database per agency (named as postgres.sh names them)."""
    gateways = [f"ikd_gateway_{code.replace('-', '_')}" for code in agencies]
    return ["ikd_identity", "ikd_audit", *gateways]


# --- databases ----------------------------------------------------------------------------


async def _describe(admin: asyncpg.Connection, name: str) -> dict[str, Any]:
    row = await admin.fetchrow(
        "SELECT pg_get_userbyid(datdba) AS owner, datacl FROM pg_database WHERE datname = $1",
        name,
    )
    if row is None:
        raise BackupError(f"no database {name}")
    grantees = await admin.fetch(
        """SELECT DISTINCT pg_get_userbyid(a.grantee) AS role
           FROM pg_database d, aclexplode(d.datacl) a
           WHERE d.datname = $1 AND a.privilege_type = 'CONNECT' AND a.grantee <> 0
             AND a.grantee <> d.datdba
           ORDER BY 1""",
        name,
    )
    return {"owner": row["owner"], "connect": [r["role"] for r in grantees]}


async def backup_databases(
    server: PgServer, names: Iterable[str], out: Path, say: Callable[[str], None] = print
) -> list[dict[str, Any]]:
    admin = await asyncpg.connect(server.dsn())
    try:
        entries = []
        for name in names:
            entry: dict[str, Any] = {"name": name, **await _describe(admin, name)}
            file = out / f"{name}.dump"
            started = time.perf_counter()
            await asyncio.to_thread(
                server.run, "pg_dump", "--format=custom", f"--file={file}", f"--dbname={name}"
            )
            file.chmod(0o600)
            entry |= {"file": file.name, "sha256": sha256(file), "bytes": file.stat().st_size}
            say(f"{name}: {entry['bytes']} bytes in {time.perf_counter() - started:.1f} s")
            entries.append(entry)
        return entries
    finally:
        await admin.close()


async def restore_database(
    server: PgServer, entry: dict[str, Any], folder: Path, target: str
) -> None:
    """Create `target` fresh with the dumped owner and grants, and restore the dump into it."""
    admin = await asyncpg.connect(server.dsn())
    try:
        if await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", target):
            raise BackupError(f"database {target} exists: restore only into a fresh database")
        owner = _ident(entry["owner"])
        for role in [entry["owner"], *entry["connect"]]:
            if not await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role):
                await admin.execute(f"CREATE ROLE {_ident(role)} LOGIN")
        await admin.execute(f"CREATE DATABASE {_ident(target)} OWNER {owner}")
        await admin.execute(f"REVOKE CONNECT, TEMPORARY ON DATABASE {_ident(target)} FROM PUBLIC")
        for role in entry["connect"]:
            await admin.execute(f"GRANT CONNECT ON DATABASE {_ident(target)} TO {_ident(role)}")
    finally:
        await admin.close()
    await asyncio.to_thread(
        server.run,
        "pg_restore",
        f"--dbname={target}",
        "--exit-on-error",
        "--single-transaction",
        str(folder / entry["file"]),
    )


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


# --- topics and ACLs ----------------------------------------------------------------------


def _every_acl() -> AclBindingFilter:
    # None matches any name, principal and host (the stubs say str).
    return AclBindingFilter(
        ResourceType.ANY,
        None,  # type: ignore[arg-type]
        ResourcePatternType.ANY,
        None,  # type: ignore[arg-type]
        None,  # type: ignore[arg-type]
        AclOperation.ANY,
        AclPermissionType.ANY,
    )


def _topic_manifest(conn: KafkaConnection, prefix: str) -> dict[str, Any]:
    admin = conn.confluent_admin()
    metadata = admin.list_topics(timeout=30)
    names = sorted(n for n in metadata.topics if n.startswith(f"{prefix}ikd."))
    topics = []
    resources = [ConfigResource(ResourceType.TOPIC, name) for name in names]
    described = {r.name: f for r, f in admin.describe_configs(resources).items()} if names else {}
    for name in names:
        partitions = metadata.topics[name].partitions
        configs = described[name].result()
        topics.append(
            {
                "name": name,
                "partitions": len(partitions),
                "replication_factor": max(len(p.replicas) for p in partitions.values()),
                "config": {
                    key: entry.value
                    for key, entry in sorted(configs.items())
                    if entry.source == ConfigSource.DYNAMIC_TOPIC_CONFIG.value
                },
            }
        )
    every = admin.describe_acls(_every_acl()).result()
    chosen = set(names)
    on_topics = [b for b in every if b.restype == ResourceType.TOPIC and b.name in chosen]
    principals = {b.principal for b in on_topics}
    others = [b for b in every if b.restype != ResourceType.TOPIC and b.principal in principals]
    acls = sorted((_acl_document(b) for b in on_topics + others), key=json.dumps)
    return {"prefix": prefix, "topics": topics, "acls": acls}


def _acl_document(binding: AclBinding) -> dict[str, str]:
    return {
        "resource_type": _enum_name(binding.restype),
        "name": binding.name,
        "pattern_type": _enum_name(binding.resource_pattern_type),
        "principal": binding.principal,
        "host": binding.host,
        "operation": _enum_name(binding.operation),
        "permission": _enum_name(binding.permission_type),
    }


def _enum_name(value: Enum | str | int) -> str:
    # Described bindings hold the enums; the constructor's types also allow names and numbers.
    return value.name if isinstance(value, Enum) else str(value)


def _acl_binding(document: dict[str, str]) -> AclBinding:
    return AclBinding(
        ResourceType[document["resource_type"]],
        document["name"],
        ResourcePatternType[document["pattern_type"]],
        document["principal"],
        document["host"],
        AclOperation[document["operation"]],
        AclPermissionType[document["permission"]],
    )


def _restore_topics(
    conn: KafkaConnection, manifest: dict[str, Any], replication_factor: int | None
) -> tuple[list[str], list[str]]:
    """Create the recorded topics that are missing and apply the ACLs: (created, differing)."""
    admin = conn.confluent_admin()
    existing = admin.list_topics(timeout=30).topics
    missing = [t for t in manifest["topics"] if t["name"] not in existing]
    differing = [
        t["name"]
        for t in manifest["topics"]
        if t["name"] in existing and len(existing[t["name"]].partitions) != t["partitions"]
    ]
    if missing:
        new = [
            NewTopic(
                t["name"],
                num_partitions=t["partitions"],
                replication_factor=replication_factor or t["replication_factor"],
                config=t["config"],
            )
            for t in missing
        ]
        for future in admin.create_topics(new).values():
            future.result()
    bindings = [_acl_binding(document) for document in manifest["acls"]]
    if bindings:
        for future in admin.create_acls(bindings).values():  # an existing ACL is kept
            future.result()
    return [t["name"] for t in missing], differing


def rewind_group(conn: KafkaConnection, group: str, since: dt.datetime) -> int:
    """Move a consumer group's committed offsets back to the first record at or after `since`,
    never forward; returns how many partitions moved. The group's consumers must be stopped.

    After a database is restored, its consumers read again what they had consumed since the
    backup began; their idempotence (the log's access ids, the views' versions) absorbs the rest.
    """
    admin = conn.confluent_admin()
    [listed] = admin.list_consumer_group_offsets([ConsumerGroupTopicPartitions(group)]).values()
    committed = [tp for tp in listed.result().topic_partitions if tp.offset >= 0]
    if not committed:
        return 0
    since_ms = int(since.timestamp() * 1000)
    lookup = Consumer({**conn.confluent_config(), "group.id": "ikdctl-rewind"})
    try:
        found = lookup.offsets_for_times(
            [TopicPartition(tp.topic, tp.partition, since_ms) for tp in committed], timeout=30
        )
    finally:
        lookup.close()
    at = {(tp.topic, tp.partition): tp.offset for tp in found}
    moved = [
        TopicPartition(tp.topic, tp.partition, at[(tp.topic, tp.partition)])
        for tp in committed
        # -1: no record since then, nothing to read again.
        if 0 <= at[(tp.topic, tp.partition)] < tp.offset
    ]
    if moved:
        request = [ConsumerGroupTopicPartitions(group, moved)]
        try:
            for future in admin.alter_consumer_group_offsets(request).values():
                future.result()
        except KafkaException as error:
            raise BackupError(f"group {group}: {error} (stop its consumers first)") from None
    return len(moved)


# --- the whole backup ---------------------------------------------------------------------


async def backup(
    out: Path,
    *,
    server: PgServer,
    databases: Iterable[str],
    kafka: KafkaConnection | None,
    topic_prefix: str = "",
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Write a backup into `out` (created; must be empty) and return its manifest."""
    await asyncio.to_thread(_empty_folder, out)
    started = dt.datetime.now(dt.UTC)
    manifest: dict[str, Any] = {"format": FORMAT, "started_at": started.isoformat()}
    if kafka is not None:
        # Topics first: a restored database never refers to a topic the manifest lacks.
        manifest["kafka"] = await asyncio.to_thread(
            _topic_manifest, conn=kafka, prefix=topic_prefix
        )
        say(f"topics: {len(manifest['kafka']['topics'])}, acls: {len(manifest['kafka']['acls'])}")
    manifest["databases"] = await backup_databases(server, databases, out, say)
    manifest["finished_at"] = dt.datetime.now(dt.UTC).isoformat()
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _empty_folder(out: Path) -> None:
    # The dumps hold personal data: readable by the operator only.
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise BackupError(f"{out} is not empty")
    out.chmod(0o700)


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest, once every file it names has the recorded checksum."""
    manifest: dict[str, Any] = json.loads((folder / MANIFEST).read_text())
    if manifest.get("format") != FORMAT:
        raise BackupError(f"unknown backup format {manifest.get('format')!r}")
    for entry in manifest["databases"]:
        file = folder / entry["file"]
        if not file.exists() or sha256(file) != entry["sha256"]:
            raise BackupError(f"{entry['file']} is missing or does not match its checksum")
    return manifest


async def restore(
    folder: Path,
    *,
    server: PgServer,
    kafka: KafkaConnection | None,
    rename: dict[str, str] | None = None,
    only: Iterable[str] | None = None,
    replication_factor: int | None = None,
    rewind_groups: Iterable[str] = (),
    rewind_margin: dt.timedelta = dt.timedelta(minutes=5),
    say: Callable[[str], None] = print,
) -> dict[str, float]:
    """Restore a backup; returns the seconds each part took (the recovery time's parts)."""
    manifest = read_manifest(folder)
    rename = rename or {}
    wanted = set(only) if only is not None else None
    timings: dict[str, float] = {}
    if kafka is not None and "kafka" in manifest:
        started = time.perf_counter()
        created, differing = await asyncio.to_thread(
            _restore_topics, kafka, manifest["kafka"], replication_factor
        )
        timings["kafka"] = time.perf_counter() - started
        say(f"topics: {len(created)} created, acls: {len(manifest['kafka']['acls'])} applied")
        for name in differing:
            say(f"warning: topic {name} exists with another partition count than recorded")
    for entry in manifest["databases"]:
        if wanted is not None and entry["name"] not in wanted:
            continue
        target = rename.get(entry["name"], entry["name"])
        started = time.perf_counter()
        await restore_database(server, entry, folder, target)
        timings[target] = time.perf_counter() - started
        say(f"{entry['name']} -> {target}: restored in {timings[target]:.1f} s")
    groups = list(rewind_groups)
    if groups:
        if kafka is None:
            raise BackupError("rewinding consumer groups needs the bus")
        # From a little before the backup began: clocks of brokers and this host may differ.
        since = dt.datetime.fromisoformat(manifest["started_at"]) - rewind_margin
        for group in groups:
            moved = await asyncio.to_thread(rewind_group, kafka, group, since)
            say(f"group {group}: {moved} partitions rewound to {since.isoformat()}")
    return timings
