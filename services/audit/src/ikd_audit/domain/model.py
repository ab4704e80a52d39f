"""Log entries, their canonical leaf encoding, and signed tree heads."""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import uuid
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ikd_audit.domain import merkle
from ikd_shared import codec
from ikd_shared.events.access_v1 import AccessRecorded

LEAF_VERSION = 1
STH_VERSION = 1


def format_time(value: dt.datetime) -> str:
    """RFC 3339 UTC with microseconds: the one textual form of a time inside a leaf."""
    if value.tzinfo is None:
        raise ValueError("times in the log are timezone-aware")
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str) -> dt.datetime:
    return dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)


@dataclass(frozen=True, slots=True)
class NewEntry:
    """An access to be appended; the log gives it a position."""

    access_id: uuid.UUID
    occurred_at: dt.datetime
    agency: str
    service: str | None
    pseudonym: str | None
    fields: tuple[str, ...]
    purpose: str | None
    legal_basis: str | None
    channel: str
    outcome: str
    reason: str | None

    @classmethod
    def from_event(cls, event: AccessRecorded) -> NewEntry:
        return cls(
            access_id=event.access_id,
            occurred_at=event.occurred_at,
            agency=event.agency,
            service=event.service,
            pseudonym=event.pseudonym,
            fields=tuple(event.fields),
            purpose=event.purpose,
            legal_basis=event.legal_basis.value if event.legal_basis else None,
            channel=event.channel.value,
            outcome=event.outcome.value,
            reason=event.reason,
        )

    def at(self, position: int, recorded_at: dt.datetime) -> Entry:
        values = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return Entry(position=position, recorded_at=recorded_at, **values)


@dataclass(frozen=True, slots=True)
class Entry:
    """One leaf of the log. Field *names* only: the log never holds a citizen's data."""

    position: int
    access_id: uuid.UUID
    occurred_at: dt.datetime
    recorded_at: dt.datetime
    agency: str
    service: str | None
    pseudonym: str | None
    fields: tuple[str, ...]
    purpose: str | None
    legal_basis: str | None
    channel: str
    outcome: str
    reason: str | None

    def document(self) -> dict[str, Any]:
        """The entry as a JSON object; its canonical bytes are the Merkle leaf."""
        return {
            "v": LEAF_VERSION,
            "position": self.position,
            "access_id": str(self.access_id),
            "occurred_at": format_time(self.occurred_at),
            "recorded_at": format_time(self.recorded_at),
            "agency": self.agency,
            "service": self.service,
            "pseudonym": self.pseudonym,
            "fields": list(self.fields),
            "purpose": self.purpose,
            "legal_basis": self.legal_basis,
            "channel": self.channel,
            "outcome": self.outcome,
            "reason": self.reason,
        }

    def leaf_data(self) -> bytes:
        return codec.dumps(self.document(), sort_keys=True)

    def leaf_hash(self) -> bytes:
        return merkle.leaf_hash(self.leaf_data())

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> Entry:
        if doc.get("v") != LEAF_VERSION:
            raise ValueError(f"unknown leaf version {doc.get('v')!r}")
        return cls(
            position=int(doc["position"]),
            access_id=uuid.UUID(doc["access_id"]),
            occurred_at=parse_time(doc["occurred_at"]),
            recorded_at=parse_time(doc["recorded_at"]),
            agency=doc["agency"],
            service=doc["service"],
            pseudonym=doc["pseudonym"],
            fields=tuple(doc["fields"]),
            purpose=doc["purpose"],
            legal_basis=doc["legal_basis"],
            channel=doc["channel"],
            outcome=doc["outcome"],
            reason=doc["reason"],
        )


def key_id(public_key: Ed25519PublicKey) -> str:
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def public_key_pem(public_key: Ed25519PublicKey) -> str:
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def load_public_key(pem: str | bytes) -> Ed25519PublicKey:
    key = serialization.load_pem_public_key(pem.encode() if isinstance(pem, str) else pem)
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError("not an Ed25519 public key")
    return key


@dataclass(frozen=True, slots=True)
class TreeHead:
    """A signed tree head: the log's size and root at a time, signed by the log's key."""

    tree_size: int
    root_hash: bytes
    timestamp: dt.datetime
    key_id: str
    signature: bytes

    @staticmethod
    def signed_bytes(tree_size: int, root_hash: bytes, timestamp: dt.datetime, kid: str) -> bytes:
        return codec.dumps(
            {
                "v": STH_VERSION,
                "tree_size": tree_size,
                "root_hash": root_hash.hex(),
                "timestamp": format_time(timestamp),
                "key_id": kid,
            },
            sort_keys=True,
        )

    @classmethod
    def sign(
        cls, key: Ed25519PrivateKey, tree_size: int, root_hash: bytes, timestamp: dt.datetime
    ) -> TreeHead:
        # Microseconds are what PostgreSQL keeps; sign exactly what will be stored.
        timestamp = timestamp.astimezone(dt.UTC)
        kid = key_id(key.public_key())
        signature = key.sign(cls.signed_bytes(tree_size, root_hash, timestamp, kid))
        return cls(tree_size, root_hash, timestamp, kid, signature)

    def check_signature(self, public_key: Ed25519PublicKey) -> bool:
        if key_id(public_key) != self.key_id:
            return False
        data = self.signed_bytes(self.tree_size, self.root_hash, self.timestamp, self.key_id)
        try:
            public_key.verify(self.signature, data)
        except InvalidSignature:
            return False
        return True

    def document(self) -> dict[str, Any]:
        return {
            "v": STH_VERSION,
            "tree_size": self.tree_size,
            "root_hash": self.root_hash.hex(),
            "timestamp": format_time(self.timestamp),
            "key_id": self.key_id,
            "signature": self.signature.hex(),
        }

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> TreeHead:
        return cls(
            tree_size=int(doc["tree_size"]),
            root_hash=bytes.fromhex(doc["root_hash"]),
            timestamp=parse_time(doc["timestamp"]),
            key_id=str(doc["key_id"]),
            signature=bytes.fromhex(doc["signature"]),
        )
