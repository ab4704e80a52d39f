"""The bus's principals and their least-privilege ACLs, applied idempotently by the operator.

One SCRAM principal per component: `identity`, `audit`, `gateway-<agency>` per gateway,
`agency-<agency>` per agency backend; `admin` is a super user (topics, ACLs, users) and needs
no ACL. Topic ACLs name whole topics (LITERAL), so one agency's name can never cover another's
(a PREFIXED `ikd.agency.bank` would match `ikd.agency.bank-bjb`); the set is built for a topic
prefix, which is how each test run gets the ACLs of its own topics.

No service may create, alter or delete topics: the operator creates them (`ikdctl topics
ensure`, an agency's topic when it is onboarded). Consumers need nothing beyond READ on their
topics and group (READ implies DESCRIBE, which the offset and lag queries use); the faust worker
declares no topics of its own (topic_allow_declare=False, in-memory tables) and produces without
transactions (at_least_once), so it needs neither CREATE nor a transactional id.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import (  # type: ignore[attr-defined]  # re-exported, not in __all__
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialAlteration,
    UserScramCredentialDeletion,
    UserScramCredentialUpsertion,
)

from ikd_shared.events import topics
from ikd_shared.kafka import KafkaConnection

SCRAM_ITERATIONS = 8192
CLUSTER = "kafka-cluster"
AUDIT_GROUP = "ikd-audit"


def gateway_principal(agency: str) -> str:
    return f"gateway-{agency}"


def agency_principal(agency: str) -> str:
    return f"agency-{agency}"


def gateway_group(agency: str) -> str:
    # The gateway's settings derive the same name (GatewaySettings.consumer_group).
    return f"ikd-gateway-{agency}"


def agency_group(agency: str) -> str:
    return f"ikd-agency-{agency}"


@dataclass(frozen=True, slots=True)
class Grant:
    principal: str
    resource: ResourceType
    name: str
    operation: AclOperation

    def binding(self) -> AclBinding:
        return AclBinding(
            self.resource,
            self.name,
            ResourcePatternType.LITERAL,
            f"User:{self.principal}",
            "*",
            self.operation,
            AclPermissionType.ALLOW,
        )


def _writes(principal: str, *names: str) -> list[Grant]:
    # IDEMPOTENT_WRITE: every producer of the project is idempotent (acks=all).
    cluster = Grant(principal, ResourceType.BROKER, CLUSTER, AclOperation.IDEMPOTENT_WRITE)
    return [cluster, *(Grant(principal, ResourceType.TOPIC, n, AclOperation.WRITE) for n in names)]


def _reads(principal: str, group: str, *names: str) -> list[Grant]:
    grants = [Grant(principal, ResourceType.GROUP, group, AclOperation.READ)]
    return grants + [Grant(principal, ResourceType.TOPIC, n, AclOperation.READ) for n in names]


def grants(
    agencies: Iterable[str], *, prefix: str = "", audit_group: str = AUDIT_GROUP
) -> list[Grant]:
    """Everything each component may do on the bus; nothing else is allowed."""
    profile, consent, access = (
        t.full_name(prefix) for t in (topics.PROFILE, topics.CONSENT, topics.ACCESS)
    )
    result = _writes("identity", profile, consent)
    result += _reads("audit", audit_group, access)
    result += _writes("audit", topics.AUDIT_DEAD_LETTER.full_name(prefix))
    for agency in agencies:
        result += agency_grants(agency, prefix=prefix)
    return list(dict.fromkeys(result))


def agency_grants(agency: str, *, prefix: str = "") -> list[Grant]:
    """One agency's share of `grants`: its gateway's and its backend's."""
    profile, consent, access = (
        t.full_name(prefix) for t in (topics.PROFILE, topics.CONSENT, topics.ACCESS)
    )
    gateway, own_topic = gateway_principal(agency), topics.agency_topic(agency).full_name(prefix)
    result = _reads(gateway, gateway_group(agency), profile, consent)
    result += _writes(
        gateway,
        access,
        topics.GATEWAY_DEAD_LETTER.full_name(prefix),
        topics.WEBHOOK_DEAD_LETTER.full_name(prefix),
        own_topic,
    )
    result += _reads(agency_principal(agency), agency_group(agency), own_topic)
    return result


def _wait(futures: Mapping[Any, Future[Any]]) -> None:
    for future in futures.values():
        future.result()


def _apply_acls(conn: KafkaConnection, wanted: list[Grant], prune: bool) -> tuple[int, int]:
    admin = conn.confluent_admin()
    bindings = [grant.binding() for grant in wanted]
    if bindings:
        _wait(admin.create_acls(bindings))  # the broker ignores an ACL it already has
    removed = 0
    if prune:
        keep = set(bindings)
        for principal in sorted({grant.principal for grant in wanted}):
            every = _every_acl_of(principal)
            stale = [b for b in admin.describe_acls(every).result() if b not in keep]
            if stale:
                _wait(admin.delete_acls([_exact(b) for b in stale]))
                removed += len(stale)
    return len(bindings), removed


def _every_acl_of(principal: str) -> AclBindingFilter:
    # None matches any name and host (the stubs say str).
    return AclBindingFilter(
        ResourceType.ANY,
        None,  # type: ignore[arg-type]
        ResourcePatternType.ANY,
        f"User:{principal}",
        None,  # type: ignore[arg-type]
        AclOperation.ANY,
        AclPermissionType.ANY,
    )


def _exact(binding: AclBinding) -> AclBindingFilter:
    return AclBindingFilter(
        binding.restype,
        binding.name,
        binding.resource_pattern_type,
        binding.principal,
        binding.host,
        binding.operation,
        binding.permission_type,
    )


async def apply_acls(
    conn: KafkaConnection, wanted: list[Grant], *, prune: bool = False
) -> tuple[int, int]:
    """Create the grants (idempotent); with `prune`, delete the listed principals' others.

    Returns (grants applied, stale ACLs deleted). `conn` must be the admin principal's.
    """
    return await asyncio.to_thread(_apply_acls, conn, wanted, prune)


async def delete_acls(conn: KafkaConnection, wanted: list[Grant]) -> None:
    """Remove exactly these grants (a test's, at its end)."""
    admin = conn.confluent_admin()
    filters = [_exact(grant.binding()) for grant in wanted]
    await asyncio.to_thread(lambda: _wait(admin.delete_acls(filters)))


def _upsert_users(conn: KafkaConnection, passwords: Mapping[str, str]) -> None:
    admin = conn.confluent_admin()
    info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
    upserts: list[UserScramCredentialAlteration] = [
        UserScramCredentialUpsertion(user, info, password.encode())
        for user, password in sorted(passwords.items())
    ]
    if upserts:
        _wait(admin.alter_user_scram_credentials(upserts))


async def upsert_users(conn: KafkaConnection, passwords: Mapping[str, str]) -> None:
    """Create or update each principal's SCRAM-SHA-512 credential (idempotent)."""
    await asyncio.to_thread(_upsert_users, conn, passwords)


async def revoke_principal(conn: KafkaConnection, principal: str) -> int:
    """Delete every ACL of `principal` (idempotent); returns how many there were."""

    def run() -> int:
        admin = conn.confluent_admin()  # held until the answer: dropping it cancels the call
        deleted = admin.delete_acls([_every_acl_of(principal)])
        return sum(len(future.result()) for future in deleted.values())

    return await asyncio.to_thread(run)


def _delete_users(conn: KafkaConnection, users: Iterable[str]) -> list[str]:
    admin = conn.confluent_admin()
    deletions: list[UserScramCredentialAlteration] = [
        UserScramCredentialDeletion(user, ScramMechanism.SCRAM_SHA_512) for user in sorted(users)
    ]
    if not deletions:
        return []
    deleted = []
    for user, future in admin.alter_user_scram_credentials(deletions).items():
        try:
            future.result()
        except KafkaException as error:
            # Already gone: deleting is idempotent.
            if error.args[0].code() != KafkaError.RESOURCE_NOT_FOUND:
                raise
        else:
            deleted.append(user)
    return deleted


async def delete_users(conn: KafkaConnection, users: Iterable[str]) -> list[str]:
    """Delete the principals' SCRAM-SHA-512 credentials; returns those that had one."""
    return await asyncio.to_thread(_delete_users, conn, list(users))
